"""Image loading and model preprocessing, keeping the mapping back to the photo.

Every image becomes float32 RGB in [0,1] (H,W,3): EXIF orientation applied;
grayscale, gray+alpha, RGBA, palette, CMYK and 16-bit images converted.
Preprocessing for a model produces its input tensor and a 2x3 affine
``to_image`` that maps a model-input pixel (x, y) to the loaded image, so a map
can be drawn on the photo the user opened.
"""
from __future__ import annotations

import hashlib
import io
import os
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from . import files
from .files import regular_file

SUPPORTED_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
MAX_PIXELS = 400_000_000  # Pillow's own backstop; famegui's limit (files.max_pixels) is checked first
MAX_WORKING_SIDE = 4096  # larger photos are downscaled once at load time

Image.MAX_IMAGE_PIXELS = MAX_PIXELS


class ImageLoadError(ValueError):
    """The file is not an image we can read; the message is one line."""


@dataclass
class LoadedImage:
    rgb: np.ndarray  # (H,W,3) float32 in [0,1], possibly downscaled from the file
    path: str
    sha256: str
    original_size: tuple[int, int]  # (H, W) in the file, after EXIF rotation
    scale: float = 1.0  # working size / original size
    note: str = ""

    @property
    def shape(self) -> tuple[int, int]:
        return self.rgb.shape[:2]

    def as_uint8(self) -> np.ndarray:
        return np.clip(np.rint(self.rgb * 255.0), 0, 255).astype(np.uint8)


def _to_float_rgb(im: Image.Image) -> np.ndarray:
    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        a = np.asarray(im, dtype=np.float64)
        hi = 65535.0 if (mode.startswith("I;16") or a.max() > 255) else 255.0
        g = np.clip(a / hi, 0, 1).astype(np.float32)
        return np.repeat(g[..., None], 3, axis=2)
    if mode == "F":
        a = np.asarray(im, dtype=np.float32)
        hi = float(a.max()) if a.max() > 1 else 1.0
        g = np.clip(a / max(hi, 1e-12), 0, 1)
        return np.repeat(g[..., None], 3, axis=2)
    if mode == "P":
        im = im.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA") or "transparency" in im.info:
        # composite over white: transparent regions become neutral background
        rgba = im.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        im = Image.alpha_composite(bg, rgba)
    return np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0


def _read_16bit_color(path: Path) -> np.ndarray | None:
    """16-bit colour PNG/TIFF, which PIL reduces to 8 bits: read them with OpenCV."""
    if path.suffix.lower() not in (".png", ".tif", ".tiff"):
        return None
    import cv2

    a = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if a is None or a.dtype != np.uint16 or a.ndim != 3:
        return None
    if a.shape[2] == 4:
        rgb, alpha = a[..., 2::-1].astype(np.float32) / 65535.0, a[..., 3:].astype(np.float32) / 65535.0
        return rgb * alpha + (1.0 - alpha)
    return a[..., ::-1].astype(np.float32) / 65535.0


def load_image(path: str | os.PathLike, max_side: int = MAX_WORKING_SIDE, max_pixels: int | None = None
               ) -> LoadedImage:
    """Read an image file; raise :class:`ImageLoadError` with a one-line message on failure.

    Only a regular file within the image size limit is opened (never a FIFO or a device), and its pixel
    count is read from the header and checked against ``max_pixels`` (default: ``FAMEGUI_MAX_PIXELS``,
    see :mod:`famegui.data.files`) before anything is decoded.
    """
    p = regular_file(path, "image", "image", ImageLoadError)
    limit = max_pixels if max_pixels is not None else files.max_pixels()
    try:
        data = p.read_bytes()
    except OSError as e:
        raise ImageLoadError(f"cannot read {p}: {e.strerror or e}") from None
    if not data:
        raise ImageLoadError(f"{p} is empty (0 bytes)")
    sha = hashlib.sha256(data).hexdigest()
    with warnings.catch_warnings(record=True) as caught:  # Pillow's EXIF and size warnings become notes
        warnings.simplefilter("always")
        rgb = _decode(p, data, limit)
    h, w = rgb.shape[:2]
    if h < 2 or w < 2:
        raise ImageLoadError(f"{p} is too small ({w}x{h} pixels)")
    notes = _warning_notes(caught)
    scale = 1.0
    if max(h, w) > max_side:
        scale = max_side / max(h, w)
        nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
        t = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)
        from torchvision.transforms.functional import resize

        rgb = resize(t, [nh, nw], antialias=True).permute(1, 2, 0).clamp(0, 1).numpy()
        notes.append(f"downscaled from {w}x{h} to {nw}x{nh} for display and computation")
    return LoadedImage(np.ascontiguousarray(rgb, dtype=np.float32), str(p), sha, (h, w), scale, "; ".join(notes))


def _check_pixels(p: Path, w: int, h: int, limit: int) -> None:
    if w * h > limit:
        raise ImageLoadError(f"{p} is {w}x{h} pixels ({w * h / 1e6:,.0f} megapixels), over the limit of "
                             f"{limit / 1e6:,.0f} megapixels (set FAMEGUI_MAX_PIXELS to raise it)")


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _decode(p: Path, data: bytes, limit: int) -> np.ndarray:
    """The pixels of ``data`` (the bytes of ``p``) as float RGB, refusing more than ``limit`` pixels unread."""
    try:
        if data[:8] == PNG_SIGNATURE:  # every chunk and its CRC up to IEND: a truncated PNG is refused here,
            with Image.open(io.BytesIO(data)) as v:  # not passed on to OpenCV, whose libpng prints its own line
                v.verify()
        with Image.open(io.BytesIO(data)) as im:
            _check_pixels(p, *im.size, limit)  # from the header, before anything is decoded
            im = ImageOps.exif_transpose(im)
            im.load()
            rgb = _read_16bit_color(p) if im.mode == "RGB" else None
            if rgb is None:
                rgb = _to_float_rgb(im)
    except ImageLoadError:
        raise
    except Image.DecompressionBombError:
        raise ImageLoadError(f"{p} is too large to open safely (more than {2 * MAX_PIXELS:,} pixels)") from None
    except UnidentifiedImageError:
        raise ImageLoadError(f"{p} is not a readable image (supported: {', '.join(SUPPORTED_SUFFIXES)})") from None
    except MemoryError:
        raise ImageLoadError(f"not enough memory to decode {p}") from None
    except (OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError, TypeError) as e:
        raise ImageLoadError(f"{p} is damaged or truncated: {_first_line(e)}") from None
    if not np.isfinite(rgb).all():  # a float TIFF can hold NaN: every map of it would be NaN
        raise ImageLoadError(f"{p} holds NaN or infinite pixel values")
    return rgb


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _warning_notes(caught) -> list[str]:
    """Pillow's warnings while decoding, as one short note each (printed after the result, never before)."""
    notes = []
    for w in caught:
        text = str(w.message).strip().splitlines()[0] if str(w.message).strip() else w.category.__name__
        note = "damaged EXIF data ignored" if "exif" in text.lower() else f"while decoding: {text}"
        if note not in notes and not issubclass(w.category, Image.DecompressionBombWarning):
            notes.append(note)
    return notes


def image_from_array(rgb: np.ndarray, name: str = "array") -> LoadedImage:
    """Wrap an in-memory (H,W,3) uint8 or float image."""
    a = np.asarray(rgb)
    if a.dtype != np.uint8 and not np.isfinite(a).all():
        raise ImageLoadError(f"{name} holds NaN or infinite pixel values")
    a = a.astype(np.float32) / 255.0 if a.dtype == np.uint8 else a.astype(np.float32)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    sha = hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()
    return LoadedImage(np.ascontiguousarray(a[..., :3]), name, sha, a.shape[:2])


@dataclass
class Prepared:
    """A model input (1,3,H,W) in [0,1] and its mapping back onto the loaded image."""

    tensor: torch.Tensor
    to_image: np.ndarray  # 2x3 affine: model-input pixel (x, y, 1) -> image pixel
    image_shape: tuple[int, int]  # (H, W) of the LoadedImage
    mode: str

    @property
    def input_size(self) -> tuple[int, int]:
        return tuple(self.tensor.shape[-2:])

    def map_to_image(self, amap: np.ndarray) -> np.ndarray:
        """Warp a (h,w) map at model resolution onto the image grid; zero outside the input region."""
        import cv2

        h, w = self.image_shape
        return cv2.warpAffine(amap.astype(np.float32), self.to_image.astype(np.float64), (w, h),
                              flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)

    def region_mask(self) -> np.ndarray:
        return self.map_to_image(np.ones(self.input_size, np.float32)) > 0.5


def _affine(sx: float, sy: float, left: float, top: float) -> np.ndarray:
    """Model pixel (x,y) -> image pixel, for resize by (sx, sy) then crop at (left, top); pixel centres."""
    return np.array([[1.0 / sx, 0.0, (left + 0.5) / sx - 0.5],
                     [0.0, 1.0 / sy, (top + 0.5) / sy - 0.5]])


def prepare(image: LoadedImage, size: tuple[int, int], mode: str = "resize-crop",
            crop_ratio: float = 0.875) -> Prepared:
    """Resize/crop ``image`` for a model input of ``size`` = (H, W).

    - ``resize-crop``: torchvision's eval transform: shorter side to size/crop_ratio, centre crop.
    - ``center-crop``: the largest centred square (or aspect of ``size``), resized to ``size``.
    - ``resize``: squash the whole image to ``size``.
    """
    from torchvision.transforms.functional import center_crop, resize

    th, tw = size
    h, w = image.shape
    t = torch.from_numpy(image.rgb).permute(2, 0, 1)
    if mode == "resize-crop":
        short = int(round(min(th, tw) / crop_ratio))
        if h <= w:
            nh, nw = short, int(short * w / h)
        else:
            nh, nw = int(short * h / w), short
        r = resize(t, [nh, nw], antialias=True)
        out = center_crop(r, [th, tw])
        top, left = int(round((nh - th) / 2.0)), int(round((nw - tw) / 2.0))
        m = _affine(nw / w, nh / h, left, top)
    elif mode == "center-crop":
        s = min(h / th, w / tw)
        ch, cw = int(round(th * s)), int(round(tw * s))
        top, left = (h - ch) // 2, (w - cw) // 2
        out = resize(t[:, top:top + ch, left:left + cw], [th, tw], antialias=True)
        m = _affine(tw / cw, th / ch, 0, 0)
        m[:, 2] += (left, top)
    elif mode == "resize":
        out = resize(t, [th, tw], antialias=True)
        m = _affine(tw / w, th / h, 0, 0)
    else:
        raise ValueError(f"unknown preprocessing mode {mode!r}")
    return Prepared(out.clamp(0, 1).unsqueeze(0).contiguous(), m, (h, w), mode)
