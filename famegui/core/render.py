"""Drawing maps on images without Qt: colormaps, overlays, boxes, sheets."""
from __future__ import annotations

import cv2
import numpy as np

COLORMAPS = {
    "jet": cv2.COLORMAP_JET, "turbo": cv2.COLORMAP_TURBO, "inferno": cv2.COLORMAP_INFERNO,
    "viridis": cv2.COLORMAP_VIRIDIS, "magma": cv2.COLORMAP_MAGMA, "hot": cv2.COLORMAP_HOT,
    "gray": None,
    "bwr": "diverging",  # blue (negative) - white (0, at 0.5) - red (positive), for signed maps
}


def colorize(amap: np.ndarray, cmap: str = "jet") -> np.ndarray:
    """(H,W) map in [0,1] -> (H,W,3) uint8 RGB."""
    if cmap not in COLORMAPS:
        raise ValueError(f"unknown colormap {cmap!r}; choose from {', '.join(COLORMAPS)}")
    if COLORMAPS[cmap] == "diverging":
        t = np.clip(np.nan_to_num(amap, nan=0.5), 0.0, 1.0)[..., None]
        blue, white, red = np.array([40, 70, 220.0]), np.array([255, 255, 255.0]), np.array([215, 40, 40.0])
        rgb = np.where(t < 0.5, blue + (white - blue) * (t / 0.5), white + (red - white) * ((t - 0.5) / 0.5))
        return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
    u8 = np.clip(np.rint(np.nan_to_num(amap) * 255.0), 0, 255).astype(np.uint8)
    if COLORMAPS[cmap] is None:
        return np.repeat(u8[..., None], 3, axis=2)
    return cv2.applyColorMap(u8, COLORMAPS[cmap])[..., ::-1].copy()


def to_uint8(rgb: np.ndarray) -> np.ndarray:
    if rgb.dtype == np.uint8:
        return rgb
    return np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8)


def overlay(image: np.ndarray, amap: np.ndarray, opacity: float = 0.5, cmap: str = "jet",
            region: np.ndarray | None = None) -> np.ndarray:
    """Blend a [0,1] map (same H,W as ``image``) over an RGB image; ``region`` limits where."""
    img = to_uint8(image).astype(np.float32)
    col = colorize(amap, cmap).astype(np.float32)
    a = float(np.clip(opacity, 0.0, 1.0))
    out = img * (1 - a) + col * a
    if region is not None:
        out = np.where(region[..., None], out, img)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def draw_box(rgb: np.ndarray, box_xyxy, color=(255, 255, 255), thickness: int = 2) -> np.ndarray:
    out = np.ascontiguousarray(rgb.copy())
    x0, y0, x1, y1 = (int(round(v)) for v in box_xyxy)
    cv2.rectangle(out, (x0, y0), (max(x0, x1 - 1), max(y0, y1 - 1)), tuple(int(c) for c in color), thickness)
    return out


def draw_polygon(rgb: np.ndarray, pts: np.ndarray, color=(255, 255, 255), thickness: int = 2) -> np.ndarray:
    out = np.ascontiguousarray(rgb.copy())
    cv2.polylines(out, [np.rint(pts).astype(np.int32).reshape(-1, 1, 2)], True, tuple(int(c) for c in color),
                  thickness)
    return out


def sheet(tiles: list[np.ndarray], columns: int, gap: int = 2, background: int = 255) -> np.ndarray:
    """Tile equally sized RGB images row-major into one picture."""
    if not tiles:
        raise ValueError("no tiles")
    h, w = tiles[0].shape[:2]
    rows = (len(tiles) + columns - 1) // columns
    out = np.full((rows * h + (rows - 1) * gap, columns * w + (columns - 1) * gap, 3), background, np.uint8)
    for i, t in enumerate(tiles):
        r, c = divmod(i, columns)
        out[r * (h + gap):r * (h + gap) + h, c * (w + gap):c * (w + gap) + w] = to_uint8(t)
    return out


LABEL_H = 22


def labelled(tile: np.ndarray, text: str, width_chars: int = 40) -> np.ndarray:
    """An RGB tile with a dark caption bar on top."""
    bar = np.full((LABEL_H, tile.shape[1], 3), 32, np.uint8)
    cv2.putText(bar, text[:width_chars], (4, LABEL_H - 7), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (235, 235, 235), 1,
                cv2.LINE_AA)
    return np.concatenate([bar, to_uint8(tile)], axis=0)


FOOTPRINT_COLOR = (255, 255, 255)  # a cell's footprint (the patch under it)
RF_COLOR = (0, 230, 255)  # its theoretical receptive field


def chip_at_scale(photo_rgb: np.ndarray, to_image: np.ndarray, s: float, size: tuple[int, int]) -> np.ndarray:
    """The model input cut from the photo again at ``s`` times its size (``size`` = (w, h)): sharp, not blown up.

    ``to_image`` (2x3) maps model-input pixel centres to photo pixel centres; an output pixel u is the input
    point (u + 0.5) / s - 0.5.
    """
    m = np.asarray(to_image, np.float64)
    a = m[:, :2] / s
    b = m[:, :2] @ np.full(2, 0.5 / s - 0.5) + m[:, 2]
    return cv2.warpAffine(to_uint8(photo_rgb), np.hstack([a, b[:, None]]), size,
                          flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
