"""Faithfulness (deletion / insertion) on hand-built cases and on the real face model."""
import dataclasses

import numpy as np
import pytest
import torch
from conftest import face
from torch import nn

from famegui.evaluation.curves import (
    LabelledPair,
    accuracy_curves,
    area,
    curve,
    explain_pairs,
    fill_image,
    perturbed,
    pixel_order,
    random_map,
    tie_break,
)
from famegui.methods import run_method
from famegui.models.wrapper import ModelWrapper
from famegui.targets import Target

torch.set_num_threads(min(2, torch.get_num_threads()))


def test_area_by_hand():
    assert area([0, 0.5, 1], [1, 0, 1]) == pytest.approx(0.5)
    assert area([0, 1], [0.2, 0.4]) == pytest.approx(0.3)
    assert area([0.0, 0.25, 0.5], [1, 1, 0]) == pytest.approx(0.75)  # normalised by the span 0.5
    with pytest.raises(ValueError):
        area([0.3], [1.0])


def test_perturbed_removes_exactly_the_top_pixels():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, 10, 10, generator=g) * 0.5 + 0.4  # never equal to the black fill
    amap = np.arange(100, dtype=np.float32).reshape(10, 10)  # the last row-major pixels rank first
    fr = [0.0, 0.13, 0.5, 1.0]
    dele = perturbed(x, amap, fr, "deletion", fill="zero")
    ins = perturbed(x, amap, fr, "insertion", fill="zero")
    for i, f in enumerate(fr):
        gone = (dele[i] == 0).all(dim=0).flatten()
        assert int(gone.sum()) == round(100 * f)
        assert gone[100 - round(100 * f):].all()  # exactly the highest-ranked pixels
        kept = (ins[i] != 0).all(dim=0).flatten()
        assert torch.equal(kept, gone)  # insertion keeps what deletion removes
    assert torch.equal(dele[0], x[0]) and torch.equal(ins[-1], x[0])
    mean = fill_image(x, "mean")
    assert torch.allclose(mean[0, :, 3, 4], x.mean(dim=(2, 3))[0])
    assert fill_image(x, "blur").shape == x.shape
    tied_first = [1, 3] if tie_break(4).tolist().index(1) < tie_break(4).tolist().index(3) else [3, 1]
    assert pixel_order(np.array([[0.1, 0.9], [0.5, 0.9]])).tolist() == tied_first + [2, 0]
    # a tie block goes in a scattered, fixed order, the same whichever way the map is read
    flat = np.zeros(400)
    flat[:100] = 1.0
    order = pixel_order(flat.reshape(20, 20))
    assert sorted(order[:100].tolist()) == list(range(100)) and order[:100].tolist() != list(range(100))
    assert pixel_order(-flat.reshape(20, 20))[300:].tolist() == order[:100].tolist()
    with pytest.raises(ValueError, match="shape"):
        perturbed(x, amap[:5], fr)
    with pytest.raises(ValueError, match="mode"):
        perturbed(x, amap, fr, "remove")
    with pytest.raises(ValueError, match="fill"):
        fill_image(x, "grey")


def _region_embedder(size: int = 32, box=(4, 12, 18, 26)) -> tuple[ModelWrapper, np.ndarray]:
    """phi(x) = A x restricted to one square: the similarity depends on that region only."""
    t, b, le, ri = box
    mask = torch.zeros(1, 3, size, size)
    mask[..., t:b, le:ri] = 1
    lin = nn.Linear(3 * size * size, 8, bias=False)
    g = torch.Generator().manual_seed(3)
    lin.weight.data = torch.randn(8, 3 * size * size, generator=g) * mask.flatten()
    model = ModelWrapper(name="region", module=nn.Sequential(nn.Flatten(), lin), input_size=(size, size),
                         task="embedding", threshold=0.5)
    truth = np.zeros((size, size), np.float32)
    truth[t:b, le:ri] = 1.0
    return model, truth


def test_the_true_region_beats_random_and_inverted_maps():
    model, truth = _region_embedder()
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(1, 3, 32, 32, generator=g), torch.rand(1, 3, 32, 32, generator=g)
    y = 0.7 * x + 0.3 * y  # a "genuine" reference: cosine well above 0
    t = Target("similar")
    kw = dict(reference=y, fill="zero")  # a black pixel adds nothing to A x: deleting the region empties phi

    def curves(amap):
        return {m: curve(model, x, amap, t, m, **kw) for m in ("deletion", "insertion")}

    good, rand, bad = curves(truth + 0.01 * random_map(truth.shape)), curves(random_map(truth.shape, 5)), \
        curves(1.0 - truth)
    print({k: (round(v["deletion"].auc, 3), round(v["insertion"].auc, 3))
           for k, v in (("good", good), ("random", rand), ("inverted", bad))})
    assert good["deletion"].auc < rand["deletion"].auc < bad["deletion"].auc
    assert good["insertion"].auc > rand["insertion"].auc > bad["insertion"].auc
    # deleting the region (8 % of the pixels) leaves nothing to compare; deleting the rest changes nothing
    with torch.no_grad():
        clean = torch.cosine_similarity(model(x), model(y)).item()
    d = good["deletion"]
    assert d.score_name == "cosine" and d.scores[0] == pytest.approx(clean, abs=1e-6)
    assert d.scores[1] == pytest.approx(0.0, abs=1e-6) and d.scores[-1] == pytest.approx(0.0, abs=1e-6)
    assert bad["deletion"].scores[9] == pytest.approx(clean, abs=1e-5)  # 90 % gone, the region untouched
    assert good["insertion"].scores[1] == pytest.approx(clean, abs=1e-5)  # the region alone is enough
    # e- explains 1 - cosine: its deletion curve starts at 1 - clean
    e_minus = curve(model, x, truth, Target("dissimilar"), "deletion", reference=y)
    assert e_minus.score_name == "1 - cosine" and e_minus.scores[0] == pytest.approx(1 - clean, abs=1e-6)


def test_flip_fraction_on_the_region_model():
    from famegui.evaluation.curves import flip_fraction

    model, truth = _region_embedder()
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(1, 3, 32, 32, generator=g), torch.rand(1, 3, 32, 32, generator=g)
    y = 0.7 * x + 0.3 * y
    with torch.no_grad():
        clean = torch.cosine_similarity(model(x), model(y)).item()
    th = clean - 0.05  # "same" now; losing a little of the region flips it
    exact = truth + 0.01 * random_map(truth.shape)
    good = flip_fraction(model, x, y, exact, th, fill="zero")
    rand = flip_fraction(model, x, y, random_map(truth.shape, 5), th, fill="zero")
    bad = flip_fraction(model, x, y, 1.0 - truth, th, fill="zero")
    print("flip fractions", good, rand, bad)
    assert good is not None and good <= truth.mean() + 0.01  # within the region's own 8 %
    assert rand is not None and bad is not None and good < rand < bad
    assert bad > 1.0 - truth.mean() - 0.01  # the region goes last
    ins = flip_fraction(model, x, y, exact, th, "insertion", fill="zero")
    assert ins is not None and ins <= truth.mean() + 0.01
    assert flip_fraction(model, x, y, exact, -1.0, fill="zero") is None  # "same" whatever is removed


def test_hiding_game_on_the_region_model():
    """Seed 004: replacing the unimportant pixels by the non-mate's first keeps the match longest."""
    from famegui.evaluation.curves import hiding_curve

    model, truth = _region_embedder()
    g = torch.Generator().manual_seed(2)
    x, n = torch.rand(1, 3, 32, 32, generator=g), torch.rand(1, 3, 32, 32, generator=g)
    mate = 0.8 * x + 0.2 * torch.rand(1, 3, 32, 32, generator=g)
    good = hiding_curve(model, x, mate, n, truth + 0.01 * random_map(truth.shape))
    rand = hiding_curve(model, x, mate, n, random_map(truth.shape, 5))
    bad = hiding_curve(model, x, mate, n, 1.0 - truth)
    print("hiding AUC", good.auc, rand.auc, bad.auc)
    assert good.auc > rand.auc > bad.auc
    assert good.scores[0] > 0 and good.extra["matched"][0]  # the clean probe is matched to its mate
    assert good.scores[9] == pytest.approx(good.scores[0], abs=1e-5)  # 90 % hidden, the region untouched
    assert good.scores[-1] == pytest.approx(bad.scores[-1], abs=1e-6) and not good.extra["matched"][-1]
    assert bad.scores[1] < 0  # the region goes first: the probe is the non-mate at once
    xs = perturbed(x, truth, [0.5], "hiding", fill=n)
    hidden = (xs[0] == n[0]).all(dim=0)
    assert not hidden[truth > 0].any() and int(hidden.sum()) == 512  # half the pixels, none of the region


def test_class_and_cell_scores(resnet18_random, small_images):
    model = resnet18_random
    x = small_images[:1]
    amap = random_map((64, 64))
    c = curve(model, x, amap, Target("class", class_index=3), "insertion")
    assert c.score_name == "class probability" and all(0 <= s <= 1 for s in c.scores)
    with torch.no_grad():
        p = torch.softmax(model(x), dim=1)[0, 3].item()
    assert c.scores[-1] == pytest.approx(p, rel=1e-4)  # all pixels back: the clean probability
    cell = curve(model, x, amap, Target("cell", layer="layer1", cell=(2, 2)), "deletion")
    with torch.no_grad():
        a = model.activation(x, "layer1")[0, :, 2, 2].abs().sum().item()
    assert cell.score_name == "cell L1 activation" and cell.scores[0] == pytest.approx(a, rel=1e-4)


# --------------------------------------------------------------------------- the real face model
@pytest.fixture(scope="module")
def labelled(dlib):
    """Three genuine and three impostor pairs of the bundled photos, as model inputs."""
    from famegui.data.pipeline import prepare_for_model

    def t(who, what="neutral.jpg"):
        return prepare_for_model(dlib, face(who, what)).tensor

    ids = ("london_001", "london_005", "london_006")
    gen = [LabelledPair(t(i), t(i, "smiling.jpg"), True, i) for i in ids]
    imp = [LabelledPair(t(a), t(b), False, f"{a}-{b}") for a, b in zip(ids, ids[1:] + ids[:1])]
    return gen + imp


def test_fame_and_gradcam_beat_a_random_map_on_a_real_pair(dlib, pair):
    x, y = pair
    t = Target("similar")
    rows = {}
    for name, params in (("fame", {"iterations": 100}), ("gradcam", {})):
        amap = run_method(name, dlib, x, t, params, reference=y)
        rows[name] = curve(dlib, x, amap, t, "deletion", reference=y, method=name)
    rows["random"] = curve(dlib, x, random_map((150, 150)), t, "deletion", reference=y)
    print({k: round(v.auc, 4) for k, v in rows.items()})
    assert rows["fame"].auc < rows["random"].auc and rows["gradcam"].auc < rows["random"].auc
    assert all(abs(v.scores[0] - rows["random"].scores[0]) < 1e-5 for v in rows.values())  # same start


def test_verification_accuracy_curves(dlib, labelled):
    from famegui.evaluation.verification import default_cosine_threshold

    th = default_cosine_threshold(dlib)
    maps = explain_pairs("gradcam", dlib, labelled, threshold=th)
    curves = accuracy_curves(dlib, labelled, maps, th, method="gradcam")
    rand = accuracy_curves(dlib, labelled, [random_map((150, 150), i) for i in range(len(labelled))], th)
    with torch.no_grad():
        clean = [torch.cosine_similarity(dlib(p.probe), dlib(p.reference)).item() >= th for p in labelled]
    acc0 = np.mean([c == p.same for c, p in zip(clean, labelled)])
    for c in (curves["deletion"], curves["insertion"], rand["deletion"]):
        assert c.score_name == "accuracy" and all(0 <= s <= 1 for s in c.scores)
    assert curves["deletion"].scores[0] == pytest.approx(acc0) and curves["insertion"].scores[-1] == pytest.approx(acc0)
    print("deletion AUC gradcam", curves["deletion"].auc, "random", rand["deletion"].auc)
    assert curves["deletion"].auc <= rand["deletion"].auc
    assert curves["deletion"].to_dict()["pairs"] == 6


# --------------------------------------------------------------------------- the command
def test_cli_faithfulness_one_pair(tmp_path, capsys):
    import json

    from PIL import Image

    from famegui.cli import main
    from famegui.evaluation.curves import area

    a, b = face("london_001", "neutral.jpg"), face("london_001", "smiling.jpg")
    js, png = tmp_path / "f.json", tmp_path / "f.png"
    assert main(["faithfulness", "--image", a, "--reference", b, "--target", "similar", "--method", "gradcam,xssab",
                 "--steps", "5", "--json", str(js), "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    data = json.loads(js.read_text())
    got = {(c["method"], c["mode"]) for c in data["curves"]}
    assert got == {(m, mode) for m in ("random", "gradcam", "xssab") for mode in ("deletion", "insertion")}
    for c in data["curves"]:
        assert c["fractions"] == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0] and c["score"] == "cosine"
        assert c["auc"] == pytest.approx(area(c["fractions"], c["scores"])) and c["metric"] == c["mode"]
        assert f"{c['auc']:.4f}" in out
        assert c["flip"] is None or 0 <= c["flip"] <= 1  # S-RISE's decision-flip share, at dlib's threshold
    w, h = Image.open(png).size
    assert (w, h) == (1000, 400)  # one target: deletion | insertion panels, 3.6 in + two legend rows below
    # bad input: one line each, exit 1
    assert main(["faithfulness", "--image", a, "--reference", b, "--mode", "erase"]) == 1
    assert "--mode" in capsys.readouterr().err
    assert main(["faithfulness", "--reference", b]) == 1
    assert "--image" in capsys.readouterr().err
    assert main(["faithfulness", "--image", a, "--reference", b, "--mode", "hiding"]) == 1
    assert "--non-mate" in capsys.readouterr().err
    # with a non-mate: the hiding game joins deletion and insertion (for e+)
    n = face("london_005", "neutral.jpg")
    assert main(["faithfulness", "--image", a, "--reference", b, "--non-mate", n, "--method", "gweebp", "--steps",
                 "4", "--json", str(js)]) == 0
    capsys.readouterr()
    curves = json.loads(js.read_text())["curves"]
    hiding = [c for c in curves if c["mode"] == "hiding"]
    assert {c["method"] for c in hiding} == {"random", "gweebp"}
    assert all(c["target"].startswith("e+") and c["scores"][0] > 0 for c in hiding)  # matched at the start
    assert {c["mode"] for c in curves if c["target"].startswith("e-")} == {"deletion", "insertion"}


def test_cli_faithfulness_over_a_pair_list(tmp_path, capsys):
    import json

    from famegui.cli import main

    lst = tmp_path / "pairs.txt"
    lst.write_text("\n".join([
        f"{face('london_001', 'neutral.jpg')},{face('london_001', 'smiling.jpg')},1",
        f"{face('london_005', 'neutral.jpg')},{face('london_005', 'smiling.jpg')},1",
        f"{face('london_001', 'neutral.jpg')},{face('london_005', 'neutral.jpg')},0",
        f"{face('london_006', 'neutral.jpg')},{face('london_021', 'neutral.jpg')},0",
        f"{tmp_path / 'missing.jpg'},{face('london_006', 'neutral.jpg')},0",
    ]) + "\n")
    (tmp_path / "missing.jpg").write_bytes(b"not an image")
    js = tmp_path / "acc.json"
    assert main(["faithfulness", "--pairs", str(lst), "--method", "xssab", "--mode", "deletion", "--steps", "4",
                 "--json", str(js)]) == 0
    out = capsys.readouterr().out
    assert "4 pairs, 1 skipped" in out
    curves = json.loads(js.read_text())["curves"]
    assert [c["method"] for c in curves] == ["random", "xssab"]
    for c in curves:
        assert c["score"] == "accuracy" and c["pairs"] == 4 and c["scores"][0] == 1.0  # separable at the EER
        assert all(s in (0.0, 0.25, 0.5, 0.75, 1.0) for s in c["scores"])


def test_a_constant_map_gives_undefined_curves(resnet18_random):
    """A flat (e.g. empty) map ranks no pixel: its curves are undefined (NaN area, null in JSON), not scored."""
    from famegui.evaluation.experiment import baseline, evaluate
    from famegui.evaluation.metrics import Sample

    x = torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    base = Sample(resnet18_random, x, Target("class", class_index=3))
    flat, rnd = evaluate([dataclasses.replace(base, amap=np.zeros((224, 224), np.float32), method="empty"),
                          baseline(base)], ["deletion"], fractions=[0.0, 0.5, 1.0])
    assert np.isnan(flat.auc) and flat.to_dict()["auc"] is None and "constant" in flat.extra["undefined"]
    assert np.isfinite(rnd.auc) and "undefined" not in rnd.extra


def test_the_sanity_metric_runs_through_the_experiment(resnet18_random):
    """The registry's sanity metric reruns the sample's method on random weights and gives a verdict."""
    from famegui.evaluation.experiment import evaluate
    from famegui.evaluation.metrics import Sample, get_metric
    from famegui.evaluation.sanity import SanityResult, compare_maps

    x = torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    s = Sample(resnet18_random, x, Target("class", class_index=3), method="gradcam")
    [r] = evaluate([s], [get_metric("sanity", region="full")])
    assert isinstance(r, SanityResult) and r.method == "gradcam" and r.verdict in ("pass", "FAIL", "undefined")
    assert r.inside == compare_maps(r.trained, r.randomised)  # the verdict is about the maps it returns
    assert not get_metric("sanity").applies(dataclasses.replace(s, method="random"))
