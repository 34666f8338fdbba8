"""Every registered method x target equals its golden map (written before the package redesign)."""
from __future__ import annotations

import golden_cases as gc
import numpy as np
import pytest


@pytest.mark.parametrize("group", ["dlib", "r18", "cams"])  # captum's: tests/test_methods_captum.py
def test_maps_equal_their_goldens(group):
    stored = np.load(gc.golden_path(group))
    cases = dict(gc.GROUPS[group]())
    # every method of the registry has a golden, and no golden is left without its method
    assert sorted(cases) == sorted(stored.files)
    worst = {}
    for key, run in cases.items():
        with gc.pinned_threads():
            got = np.asarray(run(), dtype=np.float32)
        want = stored[key]
        assert got.shape == want.shape, key
        worst[key] = float(np.abs(got - want).max())
    bad = {k: v for k, v in worst.items() if v > gc.tolerance(k)}
    assert not bad, f"maps differ from their goldens: {bad}"
    # the goldens are not trivial: most maps have structure
    assert sum(float(np.ptp(stored[k])) > 0 for k in stored.files) >= len(stored.files) - 2


def test_every_method_has_goldens():
    """Each registered method is pinned in exactly one group: the two written before the redesign, or the
    group of its own that it was added with."""
    from famegui.methods import methods

    for spec in methods():
        group = gc.OWN_GROUP.get(spec.name)
        if group is None:
            assert spec.name in {k.split("/")[1] for g in ("dlib", "r18") for k in np.load(gc.golden_path(g)).files}
        else:
            assert any(k.split("/")[1] == spec.name for k in np.load(gc.golden_path(group)).files), spec.name
