"""Face detection and alignment, and the way back from a face chip to the photo.

Everything here works on numpy ``uint8`` RGB photos shaped ``(H, W, 3)``.

* :func:`detect_faces` (from :mod:`.face_detect`) finds frontal faces with dlib's
  HOG detector and puts the five dlib landmarks on each.
* :func:`align_face` cuts the aligned square crop ("chip") a face network wants:
  ``"dlib150"`` (exactly ``dlib.get_face_chip(img, shape, 150, 0.25)``, for
  dlib's ResNet) or ``"arcface112"`` (the 112x112 ArcFace five-point template,
  for IResNet / ArcFace / AdaFace models). With no face it raises
  :class:`FaceNotFoundError`, or falls back to :func:`center_crop`.
* Every :class:`AlignedFace` carries ``to_original``, a 2x3 affine matrix taking a
  chip pixel ``(x, y, 1)`` to the photo pixel ``(x, y)``, so that a saliency map
  computed on the chip can be laid over the photo (:func:`chip_map_to_original`)
  and the chip's outline drawn on it (:func:`chip_footprint_polygon`).

Coordinates follow the OpenCV / dlib convention: pixel ``(i, j)`` has its centre
at ``x = j, y = i``; a pixel covers ``[x - 0.5, x + 0.5]``.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .face_detect import Face, as_rgb_uint8, detect_faces, dlib_rect, landmarks, run_lock

__all__ = [
    "FaceNotFoundError",
    "Face",
    "AlignedFace",
    "ALIGN_METHODS",
    "CHIP_SIZES",
    "ARCFACE_TEMPLATE_112",
    "DLIB_TEMPLATE_UNIT",
    "dlib_template_points",
    "face_box",
    "detect_faces",
    "align_face",
    "center_crop",
    "chip_map_to_original",
    "chip_footprint_polygon",
]

#: Output side of each alignment method (the centre crop fallback uses the same size).
CHIP_SIZES = {"dlib150": 150, "arcface112": 112}
ALIGN_METHODS = tuple(CHIP_SIZES) + ("center-crop",)

#: dlib's mean face for the 5-point model, in dlib's part order, as fractions of
#: an unpadded chip: parts 0, 1 = outer / inner corner of the eye on the image's
#: right (the subject's left eye); 2, 3 = outer / inner corner of the eye on the
#: image's left; 4 = base of the nose.
DLIB_TEMPLATE_UNIT = np.array(
    [
        (0.8595674595992, 0.2134981538014),
        (0.6460604764104, 0.2289674387677),
        (0.1205750620789, 0.2137274526848),
        (0.3340850613712, 0.2290642403242),
        (0.4901123135679, 0.6277975316475),
    ],
    dtype=np.float64,
)

#: The standard ArcFace (insightface ``arcface_dst``) five-point template for a
#: 112x112 crop, in ArcFace order: eye on the image's left, eye on the image's
#: right, nose tip, mouth corner on the image's left, mouth corner on the right.
ARCFACE_TEMPLATE_112 = np.array(
    [
        (38.2946, 51.6963),
        (73.5318, 51.5014),
        (56.0252, 71.7366),
        (41.5493, 92.3655),
        (70.7299, 92.2041),
    ],
    dtype=np.float64,
)

#: Photos whose longer side exceeds this are searched for faces on a shrunken
#: copy (HOG cost grows with the pixel count; dlib's detector finds faces of
#: roughly 80 px and up, 40 px and up after one upsampling).

_DLIB_PADDING = 0.25


def dlib_template_points(size: int = 150, padding: float = _DLIB_PADDING) -> np.ndarray:
    """dlib's five template points in chip pixels for ``get_face_chip(size, padding)``."""
    return (padding + DLIB_TEMPLATE_UNIT) / (1.0 + 2.0 * padding) * size


def face_box(alignment: str | None, size: tuple[int, int]) -> tuple[int, int, int, int] | None:
    """The face's own square in an aligned chip as (top, bottom, left, right) pixel bounds, or None.

    dlib's chips put the face's unit square in the middle and pad it by 25 % on each
    side (150 px: rows and columns 25..125). ArcFace chips have no such padding: the
    face fills the chip, so the whole chip is the face region (None).
    """
    if alignment != "dlib150":
        return None
    h, w = size
    lo, hi = _DLIB_PADDING / (1.0 + 2.0 * _DLIB_PADDING), (1.0 + _DLIB_PADDING) / (1.0 + 2.0 * _DLIB_PADDING)
    return round(lo * h), round(hi * h), round(lo * w), round(hi * w)


# ---------------------------------------------------------------------------
# errors and results


class FaceNotFoundError(ValueError):
    """No face was found in a photo. The message is one line, meant for the user."""


@dataclass
class AlignedFace:
    """An aligned square crop of a photo and its geometric link to the photo.

    ``chip``: ``(S, S, 3)`` float32 RGB in [0, 1]. ``to_original``: 2x3 affine,
    chip pixel ``(x, y, 1)`` -> photo pixel ``(x, y)``. ``method``: ``"dlib150"``,
    ``"arcface112"`` or ``"center-crop"``. ``face`` / ``face_index``: the face
    used (None for a centre crop). ``n_faces``: faces found in the photo (0 for a
    centre crop fallback; for a plain :func:`center_crop` no detection ran and it
    is 0 too). ``original_shape``: ``(H, W)`` of the photo. ``align_points``: the
    five points the crop was fitted to, in photo pixels (dlib order for dlib150,
    ArcFace order for arcface112), or None.
    """

    chip: np.ndarray
    to_original: np.ndarray
    method: str
    face: Face | None
    face_index: int | None
    n_faces: int
    original_shape: tuple[int, int]
    align_points: np.ndarray | None = None

    @property
    def size(self) -> int:
        return int(self.chip.shape[0])

    @property
    def from_original(self) -> np.ndarray:
        """2x3 affine, photo pixel ``(x, y, 1)`` -> chip pixel ``(x, y)``."""
        return cv2.invertAffineTransform(np.asarray(self.to_original, dtype=np.float64))

    @property
    def scale(self) -> float:
        """Photo pixels per chip pixel (the similarity transform's scale)."""
        return float(np.sqrt(abs(np.linalg.det(np.asarray(self.to_original)[:, :2]))))

    def chip_uint8(self) -> np.ndarray:
        return np.clip(np.rint(self.chip * 255.0), 0, 255).astype(np.uint8)

    def to_original_points(self, pts: np.ndarray) -> np.ndarray:
        """Map ``(N, 2)`` chip points to photo points."""
        return _apply_affine(self.to_original, pts)

    def to_chip_points(self, pts: np.ndarray) -> np.ndarray:
        """Map ``(N, 2)`` photo points to chip points."""
        return _apply_affine(self.from_original, pts)


# ---------------------------------------------------------------------------
# small geometry helpers
def _apply_affine(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    pts = np.asarray(pts, dtype=np.float64).reshape(-1, 2)
    m = np.asarray(m, dtype=np.float64)
    return pts @ m[:, :2].T + m[:, 2]


def _compose(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The 2x3 affine ``a o b`` (apply ``b`` first)."""
    a3 = np.vstack([a, [0.0, 0.0, 1.0]])
    b3 = np.vstack([b, [0.0, 0.0, 1.0]])
    return (a3 @ b3)[:2]


def _similarity_lstsq(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) src -> dst.

    Umeyama's closed form (no reflection). Returns a 2x3 matrix.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s0, d0 = src - mu_s, dst - mu_d
    var_s = (s0**2).sum() / len(src)
    cov = d0.T @ s0 / len(src)
    u, sig, vt = np.linalg.svd(cov)
    fix = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        fix[1, 1] = -1.0
    rot = u @ fix @ vt
    scale = float((sig * np.diag(fix)).sum() / var_s) if var_s > 0 else 1.0
    t = mu_d - scale * rot @ mu_s
    return np.hstack([scale * rot, t[:, None]])


def _dlib_details_to_original(details) -> np.ndarray:
    """Chip pixel -> photo pixel for a ``dlib.chip_details`` (what extract_image_chip samples).

    dlib maps the chip's corner pixels ``(0, 0)``, ``(cols-1, 0)``,
    ``(cols-1, rows-1)`` onto the corners of ``details.rect`` rotated by
    ``details.angle`` about the rectangle's centre. (dlib's plain-copy shortcut,
    taken only when the angle is exactly 0 and the box is exactly chip-sized,
    cannot happen for the fitted float boxes of ``get_face_chip_details``.)
    """
    r = details.rect
    left, top, right, bottom = r.left(), r.top(), r.right(), r.bottom()
    cx, cy = 0.5 * (left + right), 0.5 * (top + bottom)
    sx = (right - left) / max(details.cols - 1, 1)
    sy = (bottom - top) / max(details.rows - 1, 1)
    ca, sa = np.cos(details.angle), np.sin(details.angle)
    rot = np.array([[ca, -sa], [sa, ca]])
    lin = rot @ np.diag([sx, sy])
    t = np.array([cx, cy]) + rot @ np.array([left - cx, top - cy])
    t = t + _dlib_pyramid_offset(details)
    return np.hstack([lin, t[:, None]])


def _dlib_pyramid_levels(details) -> int:
    """How many times dlib halves the photo (pyramid_down<2>) before sampling this chip."""
    w, h = float(details.rect.width()), float(details.rect.height())
    target = float(details.rows * details.cols)
    levels = 0
    while True:
        w, h = (w - 1.0) / 2.0 + 1.0, (h - 1.0) / 2.0 + 1.0
        if w * h <= target:
            return levels
        levels += 1


def _dlib_pyramid_offset(details) -> np.ndarray:
    """Correction, in photo pixels, for dlib's image pyramid.

    When the chip is much smaller than its box, dlib samples it from a level of
    a ``pyramid_down<2>`` pyramid and maps the box into that level with
    ``point_down(p) = p / 2 - (1.25, 0.75)``, but the 5-tap filter it applies
    actually centres output pixel ``c`` on input pixel ``2c + 2`` (``p / 2 - 1``).
    So after ``L`` halvings the chip's content sits at the nominal position plus
    ``(2^L - 1) * (-0.5, +0.5)`` photo pixels (measured here: with this
    correction a plain bilinear re-sampling of the photo lines up with dlib's
    chip best at zero shift).
    """
    levels = _dlib_pyramid_levels(details)
    k = (2.0**levels - 1.0) * 0.5
    return np.array([-k, k])


def _full_object_detection(face: Face):
    import dlib

    pts = dlib.points()
    for x, y in np.rint(face.landmarks).astype(int):
        pts.append(dlib.point(int(x), int(y)))
    return dlib.full_object_detection(dlib_rect(face.box), pts)


def _align_dlib150(rgb: np.ndarray, face: Face, size: int = 150):
    import dlib

    shape = _full_object_detection(face)
    with run_lock:
        chip = dlib.get_face_chip(rgb, shape, size=size, padding=_DLIB_PADDING)
    details = dlib.get_face_chip_details(shape, size, _DLIB_PADDING)
    return np.asarray(chip), _dlib_details_to_original(details), face.landmarks.copy()


def _arcface_points(rgb: np.ndarray, face: Face) -> np.ndarray:
    """ArcFace-order five points from dlib's 68-point model on the face's box."""
    p = landmarks(rgb, face.box, "sp68")
    eye_img_left = 0.5 * (p[36] + p[39])  # corners of the eye on the image's left
    eye_img_right = 0.5 * (p[42] + p[45])
    nose_tip = p[30]
    return np.array([eye_img_left, eye_img_right, nose_tip, p[48], p[54]], dtype=np.float64)


def _warp_to_chip(rgb: np.ndarray, to_original: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Bilinear chip sampling with area pre-shrinking when the chip is much smaller.

    Returns the uint8 chip and the (unchanged) ``to_original`` mapping. When a chip
    pixel covers more than 1.5 photo pixels, the chip's neighbourhood is cut out
    and shrunk with area averaging first, so the bilinear sampling does not alias.
    """
    lin = to_original[:, :2]
    scale = float(np.sqrt(abs(np.linalg.det(lin))))
    src = rgb
    m = to_original
    if scale > 1.5:
        corners = _apply_affine(to_original, _chip_corners(size))
        h, w = rgb.shape[:2]
        margin = 2.0 * scale
        x0 = int(max(0, np.floor(corners[:, 0].min() - margin)))
        y0 = int(max(0, np.floor(corners[:, 1].min() - margin)))
        x1 = int(min(w, np.ceil(corners[:, 0].max() + margin) + 1))
        y1 = int(min(h, np.ceil(corners[:, 1].max() + margin) + 1))
        if x1 > x0 and y1 > y0:
            crop = rgb[y0:y1, x0:x1]
            f = 1.0 / scale
            nw, nh = max(1, round(crop.shape[1] * f)), max(1, round(crop.shape[0] * f))
            src = cv2.resize(crop, (nw, nh), interpolation=cv2.INTER_AREA)
            fx, fy = nw / crop.shape[1], nh / crop.shape[0]
            # photo pixel -> shrunken-crop pixel (pixel-centre convention)
            to_small = np.array(
                [[fx, 0.0, (0.5 - x0) * fx - 0.5], [0.0, fy, (0.5 - y0) * fy - 0.5]]
            )
            m = _compose(to_small, to_original)
    chip = cv2.warpAffine(
        src,
        m.astype(np.float64),
        (size, size),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=(0, 0, 0),
    )
    return chip, to_original


def _align_arcface112(rgb: np.ndarray, face: Face, size: int = 112):
    pts = _arcface_points(rgb, face)
    template = ARCFACE_TEMPLATE_112 * (size / 112.0)
    to_original = _similarity_lstsq(template, pts)
    chip, _ = _warp_to_chip(rgb, to_original, size)
    return chip, to_original, pts


# long: two thirds of it is the docstring describing both alignments exactly
def align_face(
    rgb: np.ndarray,
    method: str = "dlib150",
    face_index: int = 0,
    allow_no_face: bool = False,
    source_name: str = "image",
) -> AlignedFace:
    """Detect faces and return the aligned chip of one of them.

    ``method``:

    * ``"dlib150"``: exactly ``dlib.get_face_chip(img, shape, size=150,
      padding=0.25)`` with the 5-point landmarks (dlib's pyramid shrinking
      included); ``to_original`` is derived from ``dlib.get_face_chip_details``.
    * ``"arcface112"``: 112x112, least-squares similarity (Umeyama) from the
      five landmarks to the standard ArcFace template (:data:`ARCFACE_TEMPLATE_112`),
      ``cv2.warpAffine`` bilinear with a constant 0 border (the photo is
      area-shrunk around the face first if a chip pixel spans more than 1.5 photo
      pixels, to avoid aliasing). The five points come from dlib's **68-point**
      model run on the detected box, because dlib's 5-point model has no mouth
      corners and its nose point is the base of the nose whereas ArcFace's is the
      tip: eye centres = mean of each eye's two corners (68-points 36/39 and
      42/45), nose tip = point 30, mouth corners = points 48 and 54. Real mouth
      corners make the fit follow the actual face (head tilt, smiling) rather
      than a mouth guessed from the template.
    * ``"center-crop"``: no detection, same as :func:`center_crop` (150 px).

    ``face_index`` picks among the faces found, sorted by box area (0 = largest);
    out of range raises ``ValueError``. With no face, :class:`FaceNotFoundError`
    is raised, unless ``allow_no_face``: then the largest centred square is used
    (``method == "center-crop"``, ``face is None``, ``n_faces == 0``).
    """
    if method not in ALIGN_METHODS:
        raise ValueError(f"unknown alignment method {method!r}; choose one of {', '.join(ALIGN_METHODS)}")
    rgb = as_rgb_uint8(rgb)
    if method == "center-crop":
        return center_crop(rgb, 150)
    size = CHIP_SIZES[method]
    faces = detect_faces(rgb)
    if not faces:
        if allow_no_face:
            return center_crop(rgb, size)
        raise FaceNotFoundError(
            f"no face found in {source_name}; use --no-align (centre crop) to use the image as it is"
        )
    n = len(faces)
    if not isinstance(face_index, (int, np.integer)) or not 0 <= face_index < n:
        raise ValueError(
            f"face_index {face_index} is out of range: {source_name} has {n} face"
            f"{'' if n == 1 else 's'} (valid indices 0..{n - 1})"
        )
    face = faces[int(face_index)]
    if method == "dlib150":
        chip, to_original, pts = _align_dlib150(rgb, face, size)
    else:
        chip, to_original, pts = _align_arcface112(rgb, face, size)
    return AlignedFace(
        chip=chip.astype(np.float32) / np.float32(255.0),
        to_original=to_original,
        method=method,
        face=face,
        face_index=int(face_index),
        n_faces=n,
        original_shape=(int(rgb.shape[0]), int(rgb.shape[1])),
        align_points=pts,
    )


def center_crop(rgb: np.ndarray, size: int) -> AlignedFace:
    """The largest centred square of the photo, resized to ``size x size``.

    Area averaging when shrinking, bilinear when enlarging (``cv2.resize``, whose
    pixel-centre convention ``to_original`` follows exactly).
    """
    rgb = as_rgb_uint8(rgb)
    size = int(size)
    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    h, w = rgb.shape[:2]
    side = min(h, w)
    x0, y0 = (w - side) // 2, (h - side) // 2
    square = rgb[y0 : y0 + side, x0 : x0 + side]
    interp = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
    chip = cv2.resize(square, (size, size), interpolation=interp)
    k = side / size
    to_original = np.array(
        [[k, 0.0, x0 + 0.5 * k - 0.5], [0.0, k, y0 + 0.5 * k - 0.5]], dtype=np.float64
    )
    return AlignedFace(
        chip=chip.astype(np.float32) / np.float32(255.0),
        to_original=to_original,
        method="center-crop",
        face=None,
        face_index=None,
        n_faces=0,
        original_shape=(int(h), int(w)),
        align_points=None,
    )


# ---------------------------------------------------------------------------
# back to the photo


def _chip_corners(size: int) -> np.ndarray:
    e = size - 0.5
    return np.array([(-0.5, -0.5), (e, -0.5), (e, e), (-0.5, e)], dtype=np.float64)


def chip_footprint_polygon(aligned: AlignedFace) -> np.ndarray:
    """The chip's outline on the photo: ``(4, 2)`` float ``(x, y)``.

    Order: the chip's top-left, top-right, bottom-right, bottom-left corners
    (outer pixel edges), in photo pixel coordinates. It may reach outside the
    photo when the face is near an edge.
    """
    return _apply_affine(aligned.to_original, _chip_corners(aligned.size))


def chip_map_to_original(
    map_chip: np.ndarray,
    aligned: AlignedFace,
    out_shape: tuple[int, int] | None = None,
) -> np.ndarray:
    """Lay a map computed on the chip onto the photo's pixel grid.

    ``map_chip`` is ``(h, w)`` (or ``(h, w, C)`` with C <= 4), normally the chip's
    own ``(S, S)``; another size (e.g. a 7x7 class activation map) is stretched
    over the whole chip (pixel centres aligned, like ``cv2.resize``, edge values
    held to the chip's border). Returns float32 ``(H, W)`` (or ``(H, W, C)``),
    bilinear, 0 outside the chip. ``out_shape=(h, w)`` renders onto a resized
    photo grid instead (e.g. a display-sized preview of a huge photo).
    """
    m = np.asarray(map_chip, dtype=np.float32)
    if m.ndim not in (2, 3) or m.shape[0] < 1 or m.shape[1] < 1:
        raise ValueError(f"expected a 2-D map, got shape {m.shape}")
    s = aligned.size
    mh, mw = m.shape[:2]
    # map pixel -> chip pixel
    map_to_chip = np.array(
        [[s / mw, 0.0, 0.5 * s / mw - 0.5], [0.0, s / mh, 0.5 * s / mh - 0.5]]
    )
    fwd = _compose(np.asarray(aligned.to_original, dtype=np.float64), map_to_chip)
    H, W = aligned.original_shape
    if out_shape is not None:
        oh, ow = int(out_shape[0]), int(out_shape[1])
        fx, fy = ow / W, oh / H
        photo_to_out = np.array([[fx, 0.0, 0.5 * fx - 0.5], [0.0, fy, 0.5 * fy - 0.5]])
        fwd = _compose(photo_to_out, fwd)
        H, W = oh, ow
    inv = cv2.invertAffineTransform(fwd)  # output pixel -> map pixel
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    if (mh, mw) == (s, s):
        out = cv2.warpAffine(
            np.ascontiguousarray(m), inv, (int(W), int(H)), flags=flags,
            borderMode=cv2.BORDER_CONSTANT, borderValue=0,
        )
    else:
        # a coarser (or finer) map: stretch it over the whole chip (edge values
        # held), then cut it to the chip's footprint at chip resolution
        out = cv2.warpAffine(
            np.ascontiguousarray(m), inv, (int(W), int(H)), flags=flags,
            borderMode=cv2.BORDER_REPLICATE,
        )
        chip_inv = cv2.invertAffineTransform(_compose(fwd, cv2.invertAffineTransform(map_to_chip)))
        mask = cv2.warpAffine(
            np.ones((s, s), np.float32), chip_inv, (int(W), int(H)), flags=flags,
            borderMode=cv2.BORDER_CONSTANT, borderValue=0,
        )
        out = out * (mask[:, :, None] if out.ndim == 3 else mask)
    if m.ndim == 3 and out.ndim == 2:  # OpenCV drops a single channel axis
        out = out[:, :, None]
    return out.astype(np.float32, copy=False)
