"""FAME's speed features give the maps of the plain loop: convergence stop (reproducible from a sidecar),
no host copy per step, e+/e- in one batch, receptive-field crops, reduced precision, the batch size of the
all-cells sheet, and the thread policy."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from famegui.core.fame import FameParams, fame_steps, map_correlation, run_fame
from famegui.methods.fame import cell_grid, cell_window, cells_batch_size, explain_fame, explain_fame_pair
from famegui.targets import Target, build_loss

FACE = dict(blur_kernel=25, blur_sigma=5.0)


def _corr(a, b) -> float:
    return float(map_correlation(torch.as_tensor(np.asarray(a))[None], torch.as_tensor(np.asarray(b))[None])[0])


# ----------------------------------------------------------------------------- no host copy per step
class _HostReads:
    """Counts every way a tensor reaches the host (copies and Python scalars) while active."""

    NAMES = ("cpu", "item", "tolist", "numpy", "__bool__", "__float__", "__int__", "__index__")

    def __init__(self, monkeypatch):
        self.count = 0
        for name in self.NAMES:
            original = getattr(torch.Tensor, name)

            def counted(t, *a, _original=original, **k):
                self.count += 1
                return _original(t, *a, **k)

            monkeypatch.setattr(torch.Tensor, name, counted)


@pytest.mark.parametrize("extra", [{}, {"epsilon": 1e-9}, {"converge_tol": 0.999, "converge_every": 10}])
def test_the_loop_reads_the_host_only_every_few_steps(resnet18_random, small_images, monkeypatch, extra):
    """Host reads grow with the number of progress reports / convergence checks, never with iterations."""
    model = resnet18_random
    loss = build_loss(model, [Target("cell", layer="layer1", cell=(3, 4))] * 2)
    x = small_images[:2]
    counts = []
    for iterations in (20, 60):
        reads = _HostReads(monkeypatch)
        steps = list(fame_steps(x, loss, FameParams(iterations=iterations, blur_kernel=3, blur_sigma=1.0, **extra),
                                every=iterations))
        monkeypatch.undo()
        counts.append(reads.count)
        assert steps[-1].iteration <= iterations
    checks = 60 // extra.get("converge_every", 60)
    assert counts[1] <= counts[0] + checks + 1, counts  # 3x the iterations, (almost) the same reads
    assert counts[0] < 20


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_the_loop_on_cuda_has_no_synchronising_call(resnet18_random, small_images):
    model = resnet18_random.clone().to("cuda")
    inner = build_loss(model, [Target("cell", layer="layer1", cell=(3, 4))])
    calls = [0]

    def loss(z):
        calls[0] += 1
        return inner(z)

    x = small_images[:1].cuda()
    torch.cuda.set_sync_debug_mode("error")
    try:
        gen = fame_steps(x, loss, FameParams(iterations=30, blur_kernel=3, blur_sigma=1.0), every=1000)
        with pytest.raises(RuntimeError):  # the first synchronising call is the final report's host read
            next(gen)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert calls[0] == 30
    res = run_fame(x, loss, FameParams(iterations=30, blur_kernel=3, blur_sigma=1.0))
    assert res.maps.shape == (1, 64, 64) and res.maps.max() > 0


# ----------------------------------------------------------------------------- convergence stop
def test_convergence_stops_early_and_keeps_the_cap(dlib, pair):
    x, _ = pair
    cell = Target("cell", layer="stage1", cell=(17, 17))
    fp = FameParams(iterations=120, converge_tol=0.9, converge_every=10, crop=True, **FACE)
    res = explain_fame(dlib, x, cell, fp)
    assert 10 <= int(res.iterations[0]) < 120
    full = explain_fame(dlib, x, cell, FameParams(iterations=int(res.iterations[0]), crop=True, **FACE))
    np.testing.assert_allclose(res.maps, full.maps, atol=1e-6)  # stopped = run for exactly that many steps
    capped = explain_fame(dlib, x, cell, FameParams(iterations=12, converge_tol=1.0, converge_every=5, crop=True,
                                                     **FACE))
    assert int(capped.iterations[0]) == 12  # tol 1.0 is never reached: the cap ends the run


def test_convergence_stop_reproduces_from_the_sidecar(dlib, tmp_path):
    from conftest import face

    from famegui.report import load_sidecar, reproduce
    from famegui.session import Session

    s = Session()
    s.set_model(dlib, "dlib-resnet")
    s.set_image("probe", face("london_001", "neutral.jpg"))
    params = {"iterations": 150, "converge_tol": 0.9, "converge_every": 10, "crop": True}
    res = s.explain("fame", Target("cell", layer="stage1", cell=(10, 20)), params)
    assert res.info["iterations"] < 150 and res.info["crop"]
    out = tmp_path / "cell.png"
    s.export(res, str(out), save_map=str(tmp_path / "cell.npy"))
    rec = load_sidecar(str(out.with_suffix(".json")))
    assert rec["params"]["converge_tol"] == 0.9 and rec["info"]["iterations"] == res.info["iterations"]
    again = reproduce(str(out.with_suffix(".json")), out=str(tmp_path / "again.png"))
    assert again.diff is not None and again.diff <= 1e-6


def test_reproduce_uses_the_thread_count_the_map_was_made_with(dlib, tmp_path):
    """Float sums depend on torch's thread count and FAME's normalised steps carry the last bits into the
    map; famegui picks the count by the machine's load, so the sidecar records it and `reproduce` uses it
    again: a map made with one thread reproduces exactly in a process that runs two."""
    from conftest import face

    from famegui.report import load_sidecar, reproduce
    from famegui.session import Session

    s = Session()
    s.set_model(dlib, "dlib-resnet")
    s.set_image("probe", face("london_001", "neutral.jpg"))
    s.set_image("reference", face("london_001", "smiling.jpg"))
    saved = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        res = s.explain("fame", Target("similar"), {"iterations": 40}, slot="probe", other="reference")
        out = tmp_path / "e_plus.png"
        s.export(res, str(out), save_map=str(tmp_path / "e_plus.npy"))
        torch.set_num_threads(2)
        side = str(out.with_suffix(".json"))
        assert load_sidecar(side)["info"]["threads"] == 1
        again = reproduce(side, out=str(tmp_path / "again.png"))
        assert again.diff is not None and again.diff <= 1e-6
        assert torch.get_num_threads() == 2  # restored
        # made with two threads, the map differs in the last bits that FAME amplifies: what the pinning undoes
        from famegui.methods import run_method

        two = run_method("fame", dlib, s.inputs["probe"].tensor, Target("similar"), {"iterations": 40},
                         reference=s.inputs["reference"].tensor)
        if np.abs(two - np.load(tmp_path / "e_plus.npy")).max() <= 1e-6:
            pytest.skip("this CPU's kernels give the same sums with one and two threads")
    finally:
        torch.set_num_threads(saved)


# ----------------------------------------------------------------------------- batching
def test_pair_in_one_batch_equals_separate_runs(dlib, pair):
    x, y = pair
    fp = FameParams(iterations=6, **FACE)
    both = explain_fame_pair(dlib, x, y, fp)
    plus = explain_fame(dlib, x, Target("similar"), fp, reference=y)
    minus = explain_fame(dlib, x, Target("dissimilar"), fp, reference=y)
    assert _corr(both.maps[0], plus.maps[0]) >= 0.999 and _corr(both.maps[1], minus.maps[0]) >= 0.999
    np.testing.assert_allclose(both.initial_loss, [plus.initial_loss[0], minus.initial_loss[0]], rtol=1e-5)
    assert _corr(both.maps[0], both.maps[1]) < 0.999  # e+ and e- differ: the rows were not mixed up


def test_different_pairs_in_one_batch_equal_separate_runs(dlib, pair):
    """Probes of different pairs, each against its own reference and with its own sign, in one batch (the
    protocol runner's items); with a convergence stop the rows stop at different steps and leave the batch,
    and each map still equals its own run."""
    from conftest import face

    from famegui.data.pipeline import prepare_for_model
    from famegui.methods.fame import explain_fame_pairs

    x, y = pair
    other = prepare_for_model(dlib, face("london_005", "neutral.jpg")).tensor
    probes, refs = torch.cat([x, other, x]), torch.cat([y, x, other])
    kinds = ["similar", "dissimilar", "similar"]
    fp = FameParams(iterations=40, converge_tol=0.99, converge_every=5, **FACE)
    batch = explain_fame_pairs(dlib, probes, refs, kinds, fp)
    steps = [int(v) for v in batch.iterations]
    assert len(set(steps)) > 1, steps  # rows stopped at different steps
    for i, kind in enumerate(kinds):
        alone = explain_fame(dlib, probes[i:i + 1], Target(kind), fp, reference=refs[i:i + 1])
        assert int(alone.iterations[0]) == steps[i]
        assert _corr(batch.maps[i], alone.maps[0]) >= 0.999
    with pytest.raises(ValueError, match="one kind per probe"):
        explain_fame_pairs(dlib, probes, refs, kinds[:2], fp)


def test_cells_batch_size_follows_memory_and_crop(dlib):
    b = cells_batch_size(dlib, "stage1")
    assert 1 <= b <= 32
    assert cells_batch_size(dlib, "stage1", budget_bytes=1.0) == 1
    small = 40e6
    assert cells_batch_size(dlib, "stage1", crop=True, budget_bytes=small) > cells_batch_size(
        dlib, "stage1", budget_bytes=small)  # a crop needs less memory per cell


# ----------------------------------------------------------------------------- receptive-field crops
def test_crop_windows_hold_the_receptive_field(dlib):
    from famegui.models.receptive import receptive_field

    grid = cell_grid(dlib, "stage1")
    assert grid is not None and grid.stride == (4, 4)
    h, w = grid.size
    assert h * w < 0.25 * 150 * 150
    for cell in [(0, 0), (17, 17), (34, 34), (3, 30)]:
        rf = receptive_field(dlib, "stage1", cell)
        y, x = grid.rows[cell[0]], grid.cols[cell[1]]
        assert y <= rf.y0 and x <= rf.x0 and y + h >= rf.y1 and x + w >= rf.x1
    assert cell_grid(dlib, "stage4") is None  # its cells see (nearly) the whole face: nothing to crop


def test_cropped_cell_maps_equal_uncropped(dlib, pair):
    x, _ = pair
    cells = [Target("cell", layer="stage1", cell=c) for c in [(0, 0), (17, 17), (34, 34), (5, 33)]]
    window, moved = cell_window(dlib, x.expand(len(cells), -1, -1, -1), cells)
    with torch.no_grad():  # the cell's activation on its crop is the one on the whole image
        full = dlib.activation(x, "stage1")[0]
        crops = dlib.activation(window.take(x.expand(len(cells), -1, -1, -1)), "stage1")
    for i, (t, m) in enumerate(zip(cells, moved)):
        torch.testing.assert_close(crops[i, :, m.cell[0], m.cell[1]], full[:, t.cell[0], t.cell[1]],
                                   rtol=1e-5, atol=1e-5)
    fp = dict(iterations=8, **FACE)
    cropped = explain_fame(dlib, x, cells, FameParams(crop=True, **fp))
    plain = explain_fame(dlib, x, cells, FameParams(**fp))
    assert cropped.window is not None and plain.window is None
    for a, b in zip(cropped.maps, plain.maps):
        assert _corr(a, b) >= 0.999
        np.testing.assert_allclose(a, b, atol=1e-4)
    np.testing.assert_allclose(cropped.final_loss, plain.final_loss, rtol=1e-4)


def test_crop_on_a_layer_that_sees_everything_runs_uncropped(dlib, pair):
    x, _ = pair
    t = Target("cell", layer="stage4", cell=(2, 1))
    res = explain_fame(dlib, x, t, FameParams(iterations=2, crop=True, **FACE))
    assert res.window is None and res.maps.max() > 0


# ----------------------------------------------------------------------------- reduced precision
def test_bf16_is_close_to_fp32(dlib, pair):
    x, _ = pair
    t = Target("cell", layer="stage1", cell=(17, 17))
    fp32 = explain_fame(dlib, x, t, FameParams(iterations=4, crop=True, **FACE))
    bf16 = explain_fame(dlib, x, t, FameParams(iterations=4, crop=True, precision="bf16", **FACE))
    assert bf16.maps.dtype == np.float32 and bf16.x_final.dtype == torch.float32
    assert 0.9 <= _corr(bf16.maps[0], fp32.maps[0]) < 1.0  # close, and really computed in bf16


def test_new_params_validate():
    for bad in ({"converge_tol": 0.0}, {"converge_tol": 1.5}, {"converge_every": 0}, {"precision": "fp8"}):
        with pytest.raises(ValueError):
            FameParams(**bad).validate()


def test_channels_last_layout_changes_float_rounding_only(pair):
    """famegui keeps convolution weights channels-last (faster on CPU); the maps of FAME (e+, e-) and a CAM
    equal those of PyTorch's default layout up to rounding, which FAME's normalised steps amplify a little."""
    from famegui.methods import run_method
    from famegui.models.zoo import load_model

    x, y = pair
    model = load_model("dlib-resnet")  # a model of its own: the session's is shared
    assert model.module.fc.weight.ndim == 2
    conv = next(m for m in model.module.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    maps = {}
    for layout in (True, False):
        model.set_layout(channels_last=layout)
        assert conv.weight.is_contiguous(memory_format=torch.channels_last) == layout
        maps[layout] = [np.asarray(run_method(name, model, x, Target(kind), params, reference=y))
                        for name, kind, params in (("fame", "similar", {"iterations": 60}),
                                                   ("fame", "dissimilar", {"iterations": 60}),
                                                   ("gradcam", "similar", {}))]
    fast, plain = maps[True], maps[False]
    for a, b in zip(fast[:2], plain[:2]):
        assert float(map_correlation(torch.as_tensor(a)[None], torch.as_tensor(b)[None])[0]) >= 0.999
    assert np.abs(fast[2] - plain[2]).max() <= 1e-4


# ----------------------------------------------------------------------------- thread policy
def test_thread_policy():
    from famegui.core import threads

    assert threads.threads_for("worker") == 1
    assert 1 <= threads.threads_for("gui") <= (os.cpu_count() or 1)
    with pytest.raises(ValueError):
        threads.threads_for("server")
    code = ("import os, sys\n"
            "from famegui.core import threads\n"
            "import torch\n"
            "n = threads.configure('worker')\n"
            "print(n, torch.get_num_threads(), threads.adapt(block=True))")
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.stdout.split() == ["1", "1", "None"], out.stderr  # a worker keeps one thread, whatever the load


@pytest.mark.parametrize("physical,logical,others,expected", [
    (2, 2, None, 2), (2, 2, 0.0, 2), (2, 2, 0.3, 2), (2, 2, 0.7, 1), (2, 2, 1.0, 1), (2, 2, 5.0, 1),
    (8, 16, 0.0, 8), (8, 16, 4.0, 6), (8, 16, 16.0, 1), (1, 1, 0.0, 1)])
def test_threads_for_the_cores_other_processes_leave(physical, logical, others, expected):
    from famegui.core.threads import threads_under_load

    assert threads_under_load(physical, logical, others) == expected


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="the load reading needs Linux's /proc")
def test_a_competing_process_takes_a_core_from_the_gui_and_cli():
    """One `while 1: pass` next to famegui: the load meter sees about one busy CPU (more under a parallel
    test run) and the GUI/CLI thread count leaves it a core; without OMP_NUM_THREADS of the user."""
    code = ("from famegui.core import threads\n"
            "import torch\n"
            "threads.configure('cli')\n"
            "n = threads.adapt(block=True)\n"
            "print(n, torch.get_num_threads(), threads.state()['others'], threads.physical_cores())")
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    hog = subprocess.Popen([sys.executable, "-c", "while 1: pass"])
    try:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    finally:
        hog.kill()
        hog.wait()
    n, now, others, physical = out.stdout.split()
    assert float(others) >= 0.6, out.stderr
    assert int(n) == int(now) <= max(1, int(physical) - 1)
    env["OMP_NUM_THREADS"] = "1"  # the user's choice wins: no adaptation
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.stdout.split()[:3] == ["None", "1", "None"], out.stderr


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="the load reading needs Linux's /proc")
def test_a_python_api_call_leaves_a_busy_core_alone_and_gives_the_callers_count_back():
    """A notebook's famegui.explain beside a CPU-bound process: before, it ran on every core and FAME's
    OpenMP threads waited for the descheduled one (the classifier notebook: 26 s alone, 259 s beside one
    other torch process). Now the call runs with the cores left free (its recorded thread count says so)
    and the caller's torch count is the same after the call."""
    code = ("import torch, famegui\n"
            "from famegui.core import threads\n"
            "before = torch.get_num_threads()\n"
            "e = famegui.explain('dlib-resnet', famegui.sample_image('london_001'), famegui.cell('stage2', 1, 1),\n"
            "                    iterations=3)\n"
            "print(before, e.info.threads, torch.get_num_threads(), threads.physical_cores())")
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    hog = subprocess.Popen([sys.executable, "-c", "while 1: pass"])
    try:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    finally:
        hog.kill()
        hog.wait()
    before, used, after, physical = (int(v) for v in out.stdout.split()[-4:])
    assert before == after and used <= max(1, physical - 1) and used <= before, out.stderr
    env["OMP_NUM_THREADS"] = "1"  # the user's choice wins
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.stdout.split()[-4:-1] == ["1", "1", "1"], out.stderr


def test_gui_starts_fast_settings_the_registry_keeps_the_papers(qtbot):
    from famegui.gui.params import ParamForm
    from famegui.methods.fame import FAME_PARAMS

    form = ParamForm(FAME_PARAMS)
    qtbot.addWidget(form)
    got = form.values()
    assert got["converge_tol"] == pytest.approx(0.999) and got["converge_every"] == 20 and got["crop"] is True
    defaults = {p.name: p.default for p in FAME_PARAMS}
    assert defaults["converge_tol"] is None and defaults["crop"] is False and defaults["precision"] == "fp32"


def test_stopped_samples_leave_the_batch_and_the_rest_is_unchanged(dlib, pair):
    """With a convergence stop, samples that stopped are no longer computed; each map and step count
    still equals its own run."""
    x, _ = pair
    cells = [Target("cell", layer="stage1", cell=c) for c in [(17, 17), (2, 30), (30, 4)]]
    fp = FameParams(iterations=60, converge_tol=0.999, converge_every=5, **FACE)
    batches = []

    def loss_for(rows):
        batches.append(len(rows))
        return build_loss(dlib, [cells[i] for i in rows])

    xs = x.expand(len(cells), -1, -1, -1)
    res = run_fame(xs, build_loss(dlib, cells), fp, every=5, loss_for=loss_for)
    assert len(set(res.iterations.tolist())) > 1, res.iterations  # they stopped at different steps
    assert batches and batches == sorted(batches, reverse=True) and batches[-1] < len(cells)
    for i, t in enumerate(cells):
        alone = run_fame(x, build_loss(dlib, [t]), fp, every=5)
        assert int(alone.iterations[0]) == int(res.iterations[i])
        assert _corr(alone.maps[0], res.maps[i]) >= 0.999
