"""Face detection / alignment on the shipped sample photos (real dlib, no mocks)."""
from __future__ import annotations

import threading
import time

import cv2
import dlib
import face_recognition_models as frm
import numpy as np
import pytest
from PIL import Image

from famegui.data.faces import (
    ARCFACE_TEMPLATE_112,
    AlignedFace,
    Face,
    FaceNotFoundError,
    align_face,
    center_crop,
    chip_footprint_polygon,
    chip_map_to_original,
    detect_faces,
    dlib_template_points,
)
from famegui.paths import resource_path


def load(*parts: str) -> np.ndarray:
    with Image.open(resource_path("faces", *parts)) as im:
        return np.asarray(im.convert("RGB"))


def apply(m: np.ndarray, pts) -> np.ndarray:
    pts = np.asarray(pts, dtype=np.float64).reshape(-1, 2)
    return pts @ np.asarray(m)[:, :2].T + np.asarray(m)[:, 2]


def invert(m: np.ndarray) -> np.ndarray:
    m3 = np.vstack([m, [0, 0, 1]])
    return np.linalg.inv(m3)[:2]


def fit_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Independent least-squares similarity src -> dst (x' = a x - b y + tx, y' = b x + a y + ty)."""
    rows, rhs = [], []
    for (x, y), (u, v) in zip(src, dst):
        rows.append([x, -y, 1, 0])
        rhs.append(u)
        rows.append([y, x, 0, 1])
        rhs.append(v)
    a, b, tx, ty = np.linalg.lstsq(np.array(rows, float), np.array(rhs, float), rcond=None)[0]
    return np.array([[a, -b, tx], [b, a, ty]])


def rotate(img: np.ndarray, deg: float) -> np.ndarray:
    h, w = img.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), deg, 1.0)
    return cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def sample(img: np.ndarray, to_original: np.ndarray, size: int) -> np.ndarray:
    """Plain bilinear sampling of the photo at the chip grid given by to_original."""
    return cv2.warpAffine(
        img, np.asarray(to_original, np.float64), (size, size),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT,
    ).astype(np.float64)


def shifted(m: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """to_original for a chip grid moved by (dx, dy) chip pixels."""
    return np.hstack([m[:, :2], (m[:, 2] + m[:, :2] @ np.array([dx, dy]))[:, None]])


@pytest.fixture(scope="module")
def neutral() -> np.ndarray:
    return load("london_001", "neutral.jpg")


@pytest.fixture(scope="module")
def two_faces() -> np.ndarray:
    return load("hard_cases", "obama_biden_two_faces.jpg")


# ----------------------------------------------------------------- detection


def test_single_face_photo(neutral):
    faces = detect_faces(neutral)
    assert len(faces) == 1
    f = faces[0]
    assert isinstance(f, Face)
    x0, y0, x1, y1 = f.box
    h, w = neutral.shape[:2]
    assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
    assert f.area == pytest.approx((x1 - x0) * (y1 - y0))
    assert f.area > 0.05 * h * w  # a portrait: the face is a good part of the photo
    lm = f.landmarks
    assert lm.shape == (5, 2)
    # dlib 5-point order: 0,1 = eye on the image's right, 2,3 = eye on the left, 4 = nose base
    assert lm[0, 0] > lm[1, 0] > lm[3, 0] > lm[2, 0]
    assert lm[4, 1] > lm[:4, 1].max()
    assert (lm[:, 0] > x0).all() and (lm[:, 0] < x1).all()


def test_two_faces_sorted_and_selectable(two_faces):
    faces = detect_faces(two_faces)
    assert len(faces) == 2
    assert faces[0].area >= faces[1].area
    # two different people: the boxes do not overlap
    a, b = faces[0].box, faces[1].box
    assert a[2] < b[0] or b[2] < a[0] or a[3] < b[1] or b[3] < a[1]

    c0 = align_face(two_faces, "dlib150", face_index=0, source_name="two.jpg")
    c1 = align_face(two_faces, "dlib150", face_index=1, source_name="two.jpg")
    assert (c0.n_faces, c1.n_faces) == (2, 2)
    assert (c0.face_index, c1.face_index) == (0, 1)
    assert c0.face.box == faces[0].box and c1.face.box == faces[1].box
    assert np.abs(c0.chip - c1.chip).mean() > 0.05
    # each chip maps back onto its own face
    for al, f in ((c0, faces[0]), (c1, faces[1])):
        cx, cy = apply(al.to_original, [(74.5, 74.5)])[0]
        assert f.box[0] < cx < f.box[2] and f.box[1] < cy < f.box[3]

    with pytest.raises(ValueError, match="2 faces") as err:
        align_face(two_faces, face_index=5, source_name="two.jpg")
    assert not isinstance(err.value, FaceNotFoundError)
    with pytest.raises(ValueError):
        align_face(two_faces, face_index=-1)


def test_faces_sorted_by_area_largest_first():
    # a small face on the left, a big one on the right: order must follow size, not position
    big = load("london_005", "neutral.jpg")  # 600 x 600
    small = cv2.resize(load("london_024", "neutral.jpg"), (300, 300), interpolation=cv2.INTER_AREA)
    canvas = np.full((600, 900, 3), 200, np.uint8)
    canvas[150:450, 0:300] = small
    canvas[:, 300:900] = big
    faces = detect_faces(canvas)
    assert len(faces) == 2
    assert faces[0].area > 2 * faces[1].area
    assert faces[0].box[0] >= 300 and faces[1].box[2] < 300
    al = align_face(canvas, "arcface112", face_index=1)
    assert al.face.box == faces[1].box and al.n_faces == 2


def test_detection_is_thread_safe(two_faces):
    ref = [f.box for f in detect_faces(two_faces)]
    results, errors = [], []

    def work():
        try:
            results.append([f.box for f in detect_faces(two_faces)])
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert results == [ref] * 4


# ----------------------------------------------------------------- dlib150


def test_dlib150_chip_is_dlib_get_face_chip(neutral):
    al = align_face(neutral, "dlib150")
    assert isinstance(al, AlignedFace)
    assert al.method == "dlib150"
    assert al.chip.shape == (150, 150, 3) and al.chip.dtype == np.float32
    assert 0.0 <= al.chip.min() and al.chip.max() <= 1.0
    assert al.original_shape == neutral.shape[:2]
    assert al.to_original.shape == (2, 3)

    # the oracle, straight from dlib
    det = dlib.get_frontal_face_detector()
    sp = dlib.shape_predictor(frm.pose_predictor_five_point_model_location())
    rects = det(neutral, 0)
    assert len(rects) == 1
    shape = sp(neutral, rects[0])
    ref = dlib.get_face_chip(neutral, shape, size=150, padding=0.25)
    ours = np.rint(al.chip * 255).astype(np.uint8)
    np.testing.assert_array_equal(ours, ref)
    np.testing.assert_array_equal(
        al.face.landmarks, np.array([(p.x, p.y) for p in shape.parts()], float)
    )


CASES = {
    "plain": lambda img: img,
    "rotated": lambda img: rotate(img, 25.0),
    # face ~4x the chip: dlib extracts from its image pyramid
    "upscaled": lambda img: cv2.resize(img, None, fx=2.5, fy=2.5, interpolation=cv2.INTER_CUBIC),
}


@pytest.mark.parametrize("case", list(CASES))
def test_dlib150_mapping_to_original(neutral, case):
    img = CASES[case](neutral)
    al = align_face(img, "dlib150")
    lm = al.face.landmarks
    tpl = dlib_template_points(150, 0.25)
    from_orig = invert(al.to_original)

    # 1. dlib's own least-squares fit (template -> landmarks), seen in chip pixels,
    #    puts every template point where to_original says: to < 1 chip pixel.
    fit = fit_similarity(tpl, lm)
    err_chip = np.linalg.norm(apply(from_orig, apply(fit, tpl)) - tpl, axis=1)
    assert err_chip.max() < 1.0, err_chip
    #    the landmarks themselves land near the template (eyes, nose: a few px of
    #    natural shape difference; a transposed / inverted / rotated-the-wrong-way
    #    mapping puts them tens of pixels away)
    lm_chip = apply(from_orig, lm)
    assert np.linalg.norm(lm_chip.mean(0) - tpl.mean(0)) < 1.0
    eyes_chip = np.array([lm_chip[2:4].mean(0), lm_chip[0:2].mean(0), lm_chip[4]])
    eyes_tpl = np.array([tpl[2:4].mean(0), tpl[0:2].mean(0), tpl[4]])
    assert np.linalg.norm(eyes_chip - eyes_tpl, axis=1).max() < 5.0
    #    in photo pixels, the eye centres mapped from the template are close to the detected ones
    eyes_photo = apply(al.to_original, eyes_tpl[:2])
    scale = np.sqrt(abs(np.linalg.det(al.to_original[:, :2])))
    assert np.linalg.norm(eyes_photo - np.array([lm[2:4].mean(0), lm[0:2].mean(0)]), axis=1).max() < 2.0 * scale

    # 2. re-sampling the photo through to_original reproduces dlib's chip, and it
    #    does so better than the same grid moved by half a chip pixel either way.
    ref = np.rint(al.chip * 255).astype(np.float64)
    inner = (slice(8, -8), slice(8, -8))

    def err(m):
        return np.abs(sample(img, m, 150) - ref)[inner].mean()

    e0 = err(al.to_original)
    others = {d: round(float(err(shifted(al.to_original, *d))), 2) for d in [(0.5, 0), (-0.5, 0), (0, 0.5), (0, -0.5)]}
    print(f"\n[{case}] scale {scale:.2f} px/chip-px, resample error {e0:.2f} vs shifted {others}")
    assert e0 < 6.0
    assert all(e0 < e for e in others.values()), (e0, others)


# ----------------------------------------------------------------- arcface112


def test_arcface112(neutral):
    for img in (neutral, rotate(neutral, -20.0)):
        al = align_face(img, "arcface112")
        assert al.method == "arcface112"
        assert al.chip.shape == (112, 112, 3) and al.chip.dtype == np.float32
        assert al.n_faces == 1 and al.face_index == 0
        from_orig = invert(al.to_original)
        # eye centres from the 5-point model (independent of the points the crop was fitted to)
        lm = al.face.landmarks
        eyes = np.array([lm[2:4].mean(0), lm[0:2].mean(0)])  # image-left eye, image-right eye
        d = np.linalg.norm(apply(from_orig, eyes) - ARCFACE_TEMPLATE_112[:2], axis=1)
        assert d.max() < 3.0, d
        # the five fitted points (ArcFace order) land on the template
        pts_chip = apply(from_orig, al.align_points)
        assert np.linalg.norm(pts_chip - ARCFACE_TEMPLATE_112, axis=1).max() < 4.0
        # the chip is the photo seen through to_original
        ref = np.rint(al.chip * 255)
        inner = (slice(6, -6), slice(6, -6))
        e0 = np.abs(sample(img, al.to_original, 112) - ref)[inner].mean()
        e_shift = np.abs(sample(img, shifted(al.to_original, 1.0, 0.0), 112) - ref)[inner].mean()
        assert e0 < 6.0 and e0 < e_shift


def test_arcface112_and_dlib150_see_the_same_face(two_faces):
    for i in (0, 1):
        a = align_face(two_faces, "arcface112", face_index=i)
        d = align_face(two_faces, "dlib150", face_index=i)
        ca = apply(a.to_original, [(55.5, 55.5)])[0]
        cd = apply(d.to_original, [(74.5, 74.5)])[0]
        assert np.linalg.norm(ca - cd) < 0.25 * d.face.box[2] - 0.25 * d.face.box[0]


# ----------------------------------------------------------------- no face


NON_FACES = {
    "gray": np.full((240, 320, 3), 128, np.uint8),
    "noise": np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8),
    "gradient": np.dstack(
        [*np.meshgrid(np.linspace(0, 255, 400), np.linspace(0, 255, 300)), np.full((300, 400), 90.0)]
    ).astype(np.uint8),
}


@pytest.mark.parametrize("name", list(NON_FACES))
def test_no_face(name):
    img = NON_FACES[name]
    assert detect_faces(img) == []
    with pytest.raises(FaceNotFoundError) as err:
        align_face(img, source_name=f"{name}.png")
    msg = str(err.value)
    assert isinstance(err.value, ValueError)
    assert "\n" not in msg and f"{name}.png" in msg and "no face" in msg

    for method, size in (("dlib150", 150), ("arcface112", 112)):
        al = align_face(img, method, allow_no_face=True)
        assert al.method == "center-crop"
        assert al.chip.shape == (size, size, 3)
        assert al.face is None and al.face_index is None and al.n_faces == 0
        assert al.original_shape == img.shape[:2]


def test_center_crop_mapping():
    h, w = 300, 500
    ramp_x = np.tile(np.linspace(0, 255, w), (h, 1))
    ramp_y = np.tile(np.linspace(0, 255, h)[:, None], (1, w))
    img = np.dstack([ramp_x, ramp_y, np.full((h, w), 50.0)]).round().astype(np.uint8)
    for size in (100, 112, 450):  # shrink and enlarge
        al = center_crop(img, size)
        assert al.chip.shape == (size, size, 3) and al.method == "center-crop"
        poly = chip_footprint_polygon(al)
        np.testing.assert_allclose(poly, [(99.5, -0.5), (399.5, -0.5), (399.5, 299.5), (99.5, 299.5)], atol=1e-9)
        # every chip pixel shows the photo where to_original says (ramps are linear)
        ys, xs = np.mgrid[2 : size - 2 : 7, 2 : size - 2 : 7]
        pts = apply(al.to_original, np.c_[xs.ravel(), ys.ravel()])
        want_r = pts[:, 0] * 255 / (w - 1)
        want_g = pts[:, 1] * 255 / (h - 1)
        got = al.chip[ys.ravel(), xs.ravel()] * 255
        assert np.abs(got[:, 0] - want_r).max() < 1.5
        assert np.abs(got[:, 1] - want_g).max() < 1.5


# ----------------------------------------------------------------- back to the photo


def test_chip_map_to_original(neutral):
    img = rotate(neutral, 25.0)
    for method in ("dlib150", "arcface112"):
        al = align_face(img, method)
        s = al.chip.shape[0]
        h, w = img.shape[:2]

        ones = chip_map_to_original(np.ones((s, s), np.float32), al)
        assert ones.shape == (h, w) and ones.dtype == np.float32
        assert ones.min() >= 0 and ones.max() <= 1.0 + 1e-5
        poly = chip_footprint_polygon(al)
        assert poly.shape == (4, 2)
        inside = np.zeros((h, w), np.uint8)
        cv2.fillPoly(inside, [np.round(poly * 16).astype(np.int32)], 1, shift=4)
        inside = cv2.dilate(inside, np.ones((3, 3), np.uint8)).astype(bool)
        assert ones[~inside].sum() < 1e-3 * ones.sum()
        assert ones.sum() == pytest.approx(cv2.contourArea(poly.astype(np.float32)), rel=0.02)
        # the polygon is a rotated square of side S * scale
        scale = np.sqrt(abs(np.linalg.det(al.to_original[:, :2])))
        sides = np.linalg.norm(np.roll(poly, -1, 0) - poly, axis=1)
        np.testing.assert_allclose(sides, s * scale, rtol=1e-6)

        # one hot pixel lands where to_original says (asymmetric spot: catches x/y swaps)
        for cx, cy in ((40, 100), (s - 30, 20)):
            hot = np.zeros((s, s), np.float32)
            hot[cy, cx] = 1.0
            out = chip_map_to_original(hot, al)
            want = apply(al.to_original, [(cx, cy)])[0]
            yy, xx = np.mgrid[0:h, 0:w]
            com = np.array([(out * xx).sum(), (out * yy).sum()]) / out.sum()
            assert np.linalg.norm(com - want) < 0.75, (com, want)
            iy, ix = np.unravel_index(np.argmax(out), out.shape)
            assert np.hypot(ix - want[0], iy - want[1]) < 1.5

    # a map at another resolution covers the same chip; out_shape renders on a smaller grid
    al = align_face(neutral, "dlib150")
    full = chip_map_to_original(np.ones((150, 150), np.float32), al)
    low = chip_map_to_original(np.ones((7, 7), np.float32), al)
    assert np.abs(full - low).max() < 1e-4
    small = chip_map_to_original(np.ones((150, 150), np.float32), al, out_shape=(150, 150))
    assert small.shape == (150, 150)
    assert small.sum() == pytest.approx(full.sum() / 16, rel=0.03)


# ----------------------------------------------------------------- big photos


def test_large_photo():
    small = load("barack_obama", "portrait_2012.jpg")  # 480 x 600
    f = 6000 / max(small.shape[:2])
    big = cv2.resize(small, None, fx=f, fy=f, interpolation=cv2.INTER_LINEAR)
    assert max(big.shape[:2]) == 6000

    ref = align_face(small, "dlib150")
    t = time.perf_counter()
    al = align_face(big, "dlib150")
    t_dlib = time.perf_counter() - t
    t = time.perf_counter()
    arc = align_face(big, "arcface112")
    t_arc = time.perf_counter() - t
    print(f"\n{big.shape[1]}x{big.shape[0]} photo: align dlib150 {t_dlib:.2f} s, arcface112 {t_arc:.2f} s")

    assert al.n_faces == 1 and arc.n_faces == 1
    assert al.original_shape == big.shape[:2]
    # same face, found at the same place (scaled), landmarks within a few small-photo pixels
    iod = np.linalg.norm(ref.face.landmarks[0:2].mean(0) - ref.face.landmarks[2:4].mean(0))
    lm_small = (al.face.landmarks + 0.5) / f - 0.5
    assert np.linalg.norm(lm_small - ref.face.landmarks, axis=1).max() < 0.1 * iod
    box_small = (np.array(al.face.box) + 0.5) / f - 0.5
    # HOG boxes are quantised by its scale pyramid
    assert np.abs(box_small - np.array(ref.face.box)).max() < 0.25 * (ref.face.box[2] - ref.face.box[0])
    # the chip of the big photo looks like the chip of the small one
    assert np.abs(al.chip - ref.chip).mean() < 0.06
    # and its footprint is the small one's, scaled
    np.testing.assert_allclose(
        (chip_footprint_polygon(al) + 0.5) / f - 0.5, chip_footprint_polygon(ref), atol=0.1 * iod
    )
