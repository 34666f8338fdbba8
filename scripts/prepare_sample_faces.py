"""Copy the sample photos into resources/faces: upright, RGB, longest side <= 600 px.

Usage: python scripts/prepare_sample_faces.py SRC_DIR  (SRC_DIR holds the original photos)
Re-run it when the source set changes, and update resources/faces/ATTRIBUTION.md.
"""
import sys
from pathlib import Path

from PIL import Image, ImageOps

MAX_SIDE = 600


def main(src: str, dst: str = "resources/faces") -> None:
    src_p, dst_p = Path(src), Path(dst)
    for p in sorted(src_p.rglob("*.jpg")):
        with Image.open(p) as im:
            im = ImageOps.exif_transpose(im).convert("RGB")
        w, h = im.size
        scale = min(1.0, MAX_SIDE / max(w, h))
        if scale < 1:
            im = im.resize((round(w * scale), round(h * scale)), Image.LANCZOS)
        out = dst_p / p.relative_to(src_p)
        out.parent.mkdir(parents=True, exist_ok=True)
        im.save(out, quality=90)
        print(f"{out}: {w}x{h} -> {im.size[0]}x{im.size[1]}")


if __name__ == "__main__":
    main(*sys.argv[1:])
