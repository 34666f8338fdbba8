"""Write the golden maps of tests/golden_cases.py (see there for when to regenerate).

    python scripts/make_goldens.py cams    # only the group named (default: every group)
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import golden_cases  # noqa: E402


def main(groups: list[str]) -> None:
    golden_cases.GOLDEN_DIR.mkdir(exist_ok=True)
    for group in groups or golden_cases.GROUPS:
        t0 = time.perf_counter()
        maps = golden_cases.compute(group)
        np.savez_compressed(golden_cases.golden_path(group), **maps)
        print(f"{group}: {len(maps)} maps in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main(sys.argv[1:])  # groups to write (default: all; write only the group of the methods you added)
