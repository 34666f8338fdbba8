"""Finding faces: dlib's HOG frontal-face detector and its landmark predictors.

:func:`detect_faces` finds frontal faces and puts the five dlib landmarks on each
(``shape_predictor_5_face_landmarks``). Very large photos are searched on a
shrunken copy; the landmarks are still placed on the full-resolution photo.
The dlib models are loaded once and run one call at a time (:data:`run_lock`).
"""
from __future__ import annotations

import threading
from dataclasses import dataclass

import cv2
import numpy as np

DETECT_MAX_SIDE = 1280  # larger photos are searched on a shrunken copy


@dataclass
class Face:
    """One detected face, in the photo's own pixel coordinates.

    ``box`` is ``(x0, y0, x1, y1)``: dlib's detection rectangle (``left, top,
    right, bottom``), scaled back to the photo when detection ran on a shrunken
    copy. ``landmarks`` is ``(5, 2)`` float ``(x, y)`` in dlib's 5-point order
    (see :data:`DLIB_TEMPLATE_UNIT`). ``score`` is the HOG detector's confidence
    (higher is surer; about 0 at the default threshold).
    """

    box: tuple[float, float, float, float]
    landmarks: np.ndarray
    score: float | None = None

    @property
    def area(self) -> float:
        x0, y0, x1, y1 = self.box
        return max(0.0, x1 - x0) * max(0.0, y1 - y0)

    @property
    def center(self) -> tuple[float, float]:
        x0, y0, x1, y1 = self.box
        return (0.5 * (x0 + x1), 0.5 * (y0 + y1))


# dlib objects are not safe to share between threads while running: loading and running are serialised
_load_lock = threading.Lock()
run_lock = threading.Lock()
_models: dict[str, object] = {}


def dlib_model(name: str):
    m = _models.get(name)
    if m is not None:
        return m
    with _load_lock:
        m = _models.get(name)
        if m is None:
            import dlib

            if name == "detector":
                m = dlib.get_frontal_face_detector()
            else:
                import face_recognition_models as frm

                if name == "sp5":
                    m = dlib.shape_predictor(frm.pose_predictor_five_point_model_location())
                elif name == "sp68":
                    m = dlib.shape_predictor(frm.pose_predictor_model_location())
                else:  # pragma: no cover - programming error
                    raise KeyError(name)
            _models[name] = m
    return m




def as_rgb_uint8(rgb: np.ndarray) -> np.ndarray:
    a = np.asarray(rgb)
    if a.dtype != np.uint8:
        raise TypeError(f"expected a uint8 RGB image, got dtype {a.dtype}")
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    elif a.ndim == 3 and a.shape[2] == 4:
        a = a[:, :, :3]
    elif a.ndim == 3 and a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    if a.ndim != 3 or a.shape[2] != 3 or a.shape[0] < 1 or a.shape[1] < 1:
        raise ValueError(f"expected an (H, W, 3) RGB image, got shape {tuple(np.shape(rgb))}")
    return np.ascontiguousarray(a)


# ---------------------------------------------------------------------------
# detection


def _detect_raw(rgb: np.ndarray):
    """Run the HOG detector (shrinking huge photos). Returns [(box, score)] in photo pixels."""
    h, w = rgb.shape[:2]
    longest = max(h, w)
    if longest > DETECT_MAX_SIDE:
        f = DETECT_MAX_SIDE / longest
        small = cv2.resize(
            rgb, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA
        )
        fx, fy = small.shape[1] / w, small.shape[0] / h
    else:
        small, fx, fy = rgb, 1.0, 1.0
    det = dlib_model("detector")
    found: list = []
    scores: list = []
    for upsample in (0, 1):
        with run_lock:
            rects, scores, _ = det.run(small, upsample, 0.0)
        found = list(rects)
        if found:
            break
    out = []
    for r, s in zip(found, scores):
        if fx == 1.0 and fy == 1.0:
            box = (float(r.left()), float(r.top()), float(r.right()), float(r.bottom()))
        else:
            # pixel centres: x_photo + 0.5 = (x_small + 0.5) / f
            box = (
                (r.left() + 0.5) / fx - 0.5,
                (r.top() + 0.5) / fy - 0.5,
                (r.right() + 0.5) / fx - 0.5,
                (r.bottom() + 0.5) / fy - 0.5,
            )
        out.append((box, float(s)))
    return out


def dlib_rect(box):
    import dlib

    x0, y0, x1, y1 = (int(round(v)) for v in box)
    return dlib.rectangle(x0, y0, x1, y1)


def landmarks(rgb: np.ndarray, box, model: str = "sp5") -> np.ndarray:
    sp = dlib_model(model)
    with run_lock:
        shape = sp(rgb, dlib_rect(box))
    return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)


def detect_faces(rgb: np.ndarray) -> list[Face]:
    """All frontal faces in an RGB photo, largest box first.

    dlib's HOG frontal detector runs without upsampling, and once more with one
    2x upsampling if that found nothing. Photos with a longer side above
    :data:`DETECT_MAX_SIDE` are searched on an area-averaged shrunken copy; the
    boxes are scaled back and the 5 landmarks are predicted on the full photo.
    Returns ``[]`` when there is no face.
    """
    rgb = as_rgb_uint8(rgb)
    faces = [
        Face(box=box, landmarks=landmarks(rgb, box), score=score)
        for box, score in _detect_raw(rgb)
    ]
    faces.sort(key=lambda f: (-f.area, f.box[0], f.box[1]))
    return faces


# ---------------------------------------------------------------------------
# alignment
