"""Write the golden maps of tests/golden_cases.py (see there for when to regenerate)."""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import golden_cases  # noqa: E402


def main() -> None:
    golden_cases.GOLDEN_DIR.mkdir(exist_ok=True)
    for group in ("dlib", "r18"):
        t0 = time.perf_counter()
        maps = golden_cases.compute(group)
        np.savez_compressed(golden_cases.golden_path(group), **maps)
        print(f"{group}: {len(maps)} maps in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
