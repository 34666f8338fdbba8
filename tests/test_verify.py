"""Face verification with the embedded dlib network: EER, pair lists, compare_pair, the CLI, e+/e-.

Real photos (resources/faces), no mocks. Run with ``-s`` to see the numbers.
"""
import itertools

import numpy as np
import pytest
import torch
from conftest import face
from PIL import Image

from famegui.cli import main
from famegui.core.fame import default_params, run_fame
from famegui.data.pairs import demo_pairs, read_pairs, sample_identities, sample_pairs
from famegui.data.pipeline import prepare_for_model
from famegui.evaluation.verification import (
    DLIB_COSINE_THRESHOLD,
    compare_pair,
    cosine,
    decision_rule,
    default_cosine_threshold,
    eer_from_pairs,
    eer_threshold,
    embed_inputs,
    euclidean,
)
from famegui.methods.fame import explain_fame
from famegui.targets import Target
from famegui.targets.losses import cosine_to


@pytest.fixture(scope="module")
def sample_embeddings(dlib):
    """Every bundled sample photo (hard_cases excluded) aligned and embedded once, in one batch."""
    paths = [p for ps in sample_identities().values() for p in ps]
    chips = [prepare_for_model(dlib, str(p)).tensor for p in paths]
    emb = embed_inputs(dlib, chips).double().numpy()
    return {p: e for p, e in zip(paths, emb)}


def chip(model, *parts):
    return prepare_for_model(model, face(*parts)).tensor


# --------------------------------------------------------------------------- EER by hand
def test_eer_threshold_hand_computed():
    # genuine 0.9 0.8 0.6, impostor 0.7 0.5; same if score >= t:
    #   t=0.9: FMR 0/2, FNMR 2/3 -> |d| 0.667
    #   t=0.8: FMR 0/2, FNMR 1/3 -> 0.333
    #   t=0.7: FMR 1/2, FNMR 1/3 -> 0.167   <- minimum
    #   t=0.6: FMR 1/2, FNMR 0   -> 0.5
    #   t=0.5: FMR 1,   FNMR 0   -> 1
    thr, eer = eer_threshold([0.9, 0.8, 0.7, 0.6, 0.5], [1, 1, 0, 1, 0])
    print(f"\nhand case: threshold {thr}, EER {eer:.4f}")
    assert thr == 0.7
    assert eer == pytest.approx((1 / 2 + 1 / 3) / 2)


def test_eer_threshold_takes_the_first_minimum_on_a_tie():
    # genuine 0.9 0.7 0.5, impostor 0.8 0.6 (input order shuffled):
    #   t=0.9: FMR 0,   FNMR 2/3 -> 0.667
    #   t=0.8: FMR 1/2, FNMR 2/3 -> 1/6   <- first minimum
    #   t=0.7: FMR 1/2, FNMR 1/3 -> 1/6   (tie, not taken)
    #   t=0.6: FMR 1,   FNMR 1/3 -> 0.667
    #   t=0.5: FMR 1,   FNMR 0   -> 1
    thr, eer = eer_threshold([0.5, 0.8, 0.9, 0.6, 0.7], [1, 0, 1, 0, 1])
    print(f"\ntie case: threshold {thr}, EER {eer:.4f}")
    assert thr == 0.8
    assert eer == pytest.approx((1 / 2 + 2 / 3) / 2)


def test_eer_threshold_separable_and_bad_input():
    # perfectly separated: the sweep stops at the lowest genuine score, EER 0
    assert eer_threshold([0.95, 0.9, 0.3, 0.2], [True, True, False, False]) == (0.9, 0.0)
    # duplicate scores form one candidate threshold
    assert eer_threshold([0.5, 0.5, 0.5, 0.1], [1, 0, 1, 0]) == (0.5, 0.25)
    with pytest.raises(ValueError, match="genuine and impostor"):
        eer_threshold([0.9, 0.8], [1, 1])
    with pytest.raises(ValueError, match="labels"):
        eer_threshold([0.9, 0.8], [1, 2])
    with pytest.raises(ValueError, match="2 scores but 3 labels"):
        eer_threshold([0.9, 0.8], [1, 0, 1])


def test_cosine_and_euclidean_by_hand():
    assert cosine([1.0, 0.0], [1.0, 1.0]) == pytest.approx(1 / np.sqrt(2))
    assert euclidean(np.array([0.0, 0.0]), torch.tensor([3.0, 4.0])) == pytest.approx(5.0)
    rows = cosine(np.array([[1.0, 0.0], [0.0, 2.0]]), np.array([[2.0, 0.0], [1.0, 0.0]]))
    assert np.allclose(rows, [1.0, 0.0])
    with pytest.raises(ValueError, match="differ in length"):
        cosine([1.0, 0.0], [1.0, 0.0, 0.0])


def test_rules_without_and_with_a_model_threshold(resnet_embedder):
    from famegui.models.wrapper import ModelWrapper

    m = resnet_embedder  # untrained, no threshold of any kind
    assert default_cosine_threshold(m) is None
    with pytest.raises(ValueError, match="no verification threshold"):
        decision_rule(m)
    r = decision_rule(m, eer=0.42)
    assert r.metric == "cosine" and r.is_same(0.42, 9.0) and not r.is_same(0.41, 0.0)
    assert default_cosine_threshold(m, eer=0.42) == 0.42
    cosine_model = ModelWrapper(name="c", module=m.module, input_size=(64, 64), task="embedding", threshold=0.3)
    assert decision_rule(cosine_model).describe() == "cosine >= 0.3"
    assert decision_rule(cosine_model, eer=0.5).threshold == 0.5  # an EER threshold overrides
    assert default_cosine_threshold(cosine_model) == 0.3


# --------------------------------------------------------------------------- pair lists
def test_read_pairs_formats_labels_and_relative_paths(tmp_path):
    (tmp_path / "img").mkdir()
    local = tmp_path / "img" / "a b.jpg"
    local.write_bytes(open(face("london_001", "neutral.jpg"), "rb").read())
    lst = tmp_path / "pairs.csv"
    lst.write_text(
        "pathA,pathB,label\n"
        "# a comment line\n"
        "\n"
        f'"img/a b.jpg",{face("london_001", "smiling.jpg")},1\n'
        f'"img/a b.jpg", {face("london_005", "neutral.jpg")} , different\n'
        f'{face("london_005", "neutral.jpg")}   {face("london_005", "smiling.jpg")}\tSAME\n'
        f'{face("london_005", "neutral.jpg")} {face("london_006", "neutral.jpg")} 0\n'
    )
    pairs = read_pairs(lst)
    assert [p.same for p in pairs] == [True, False, True, False]
    assert [p.line for p in pairs] == [4, 5, 6, 7]
    assert pairs[0].a == tmp_path / "img" / "a b.jpg"  # relative to the list's folder
    assert len(pairs.genuine) == 2 and len(pairs.impostor) == 2


@pytest.mark.parametrize("line, message", [
    ("a.jpg,b.jpg", r"pairs.txt line 2: expected 'pathA,pathB,label' \(3 fields\), got 2"),
    ("a.jpg b.jpg maybe", r"pairs.txt line 2: label must be 1/0 or same/different, got 'maybe'"),
    ("a.jpg,missing.jpg,1", r"pairs.txt line 2: image not found: .*missing.jpg"),
])
def test_read_pairs_errors_name_the_line(tmp_path, line, message):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.jpg")
    Image.new("RGB", (8, 8)).save(tmp_path / "b.jpg")
    (tmp_path / "pairs.txt").write_text(f"# header comment\n{line}\n")
    with pytest.raises(ValueError, match=message) as e:
        read_pairs(tmp_path / "pairs.txt")
    assert "\n" not in str(e.value)


def test_read_pairs_empty_and_missing(tmp_path):
    (tmp_path / "empty.txt").write_text("# nothing\n\n")
    with pytest.raises(ValueError, match="no pairs"):
        read_pairs(tmp_path / "empty.txt")
    with pytest.raises(ValueError, match="not found"):
        read_pairs(tmp_path / "nope.txt")


def test_sample_and_demo_pairs():
    pairs = sample_pairs()
    print(f"\nsample pairs: {len(pairs.genuine)} genuine, {len(pairs.impostor)} impostor")
    assert (len(pairs.genuine), len(pairs.impostor)) == (44, 622)  # 12 x 1 + 28 + 3 + 1; C(37,2) - 44
    assert all(p.a.parent.name != "hard_cases" and p.b.parent.name != "hard_cases" for p in pairs)
    assert all((p.a.parent.name == p.b.parent.name) == p.same for p in pairs)
    with_hard = sample_pairs(include_hard_cases=True)
    assert len(with_hard.genuine) == 44 - 3 + 21  # barack_obama grows from 3 to 7 photos
    assert not any("two_faces" in str(p.a) + str(p.b) for p in with_hard)
    genuine, impostor = demo_pairs()
    assert genuine.same and not impostor.same and genuine.a.is_file() and impostor.b.is_file()


# --------------------------------------------------------------------------- acceptance
def test_acceptance_genuine_pairs_score_above_impostor_pairs(sample_embeddings):
    keys = list(sample_embeddings)
    gen, imp = [], []
    for a, b in itertools.combinations(keys, 2):
        s = cosine(sample_embeddings[a], sample_embeddings[b])
        (gen if a.parent.name == b.parent.name else imp).append(s)
    gen, imp = np.array(gen), np.array(imp)
    min_gen, max_imp = gen.min(), imp.max()
    violating = float((imp >= min_gen).mean())  # impostors at or above the worst genuine pair
    thr, eer = eer_threshold(np.r_[gen, imp], np.r_[np.ones_like(gen), np.zeros_like(imp)])
    print(f"\n{len(keys)} photos: {gen.size} genuine pairs, {imp.size} impostor pairs")
    print(f"cosine: min genuine {min_gen:.4f}, max impostor {max_imp:.4f}, "
          f"impostors >= min genuine: {100 * violating:.2f}%; EER threshold {thr:.4f}, EER {100 * eer:.2f}%")
    assert gen.size == 44 and imp.size == 622
    assert violating <= 0.01

    # the hard-coded cosine threshold for dlib is still what its comment says it is
    norms = np.array([np.linalg.norm(e) for e in sample_embeddings.values()])
    derived = 1 - 0.18 / np.mean(norms ** 2)
    print(f"descriptor lengths {norms.min():.3f}-{norms.max():.3f}; 1 - 0.18/mean(n^2) = {derived:.4f}; "
          f"DLIB_COSINE_THRESHOLD = {DLIB_COSINE_THRESHOLD}")
    assert abs(derived - DLIB_COSINE_THRESHOLD) < 0.005
    assert max_imp < DLIB_COSINE_THRESHOLD < min_gen


# --------------------------------------------------------------------------- compare_pair
def test_compare_pair_decides_with_dlibs_distance_rule(dlib):
    genuine, impostor = demo_pairs()
    results = {}
    for pair in (genuine, impostor):
        res = compare_pair(dlib, str(pair.a), str(pair.b))
        ea, eb = (dlib(chip(dlib, p.parent.name, p.name))[0].detach().double().numpy() for p in (pair.a, pair.b))
        print(f"\n{res.summary()}")
        # the numbers agree with embeddings computed independently
        assert res.cosine == pytest.approx(cosine(ea, eb), abs=1e-5)
        assert res.distance == pytest.approx(np.linalg.norm(ea - eb), abs=1e-5)
        assert res.rule.metric == "distance" and res.threshold == pytest.approx(0.6)
        assert res.same == (res.distance < 0.6)
        # dlib's distance rule and the cosine threshold agree on these pairs
        assert (res.cosine >= DLIB_COSINE_THRESHOLD) == res.same
        assert res.summary().splitlines()[-1] == f"decision: {res.decision}"
        results[pair.same] = res
    assert results[True].decision == "same" and results[False].decision == "different"
    assert decision_rule(dlib).describe() == "distance < 0.6"
    assert default_cosine_threshold(dlib) == DLIB_COSINE_THRESHOLD


def test_a_pair_list_sets_the_threshold(dlib, tmp_path):
    genuine, impostor = demo_pairs()
    a = face("london_001", "neutral.jpg")
    # genuine pairs in this list are identical photos (cosine 1), so its EER threshold is ~1:
    # the demo genuine pair (cosine 0.98) must then be judged different
    lst = tmp_path / "strict.txt"
    lst.write_text(
        f"{a} {a} 1\n"
        f"{face('london_005', 'neutral.jpg')} {face('london_005', 'neutral.jpg')} 1\n"
        f"{a},{face('london_005', 'neutral.jpg')},0\n"
        f"{a},{face('london_006', 'smiling.jpg')},0\n"
    )
    eer = eer_from_pairs(dlib, lst)
    res = compare_pair(dlib, str(genuine.a), str(genuine.b), pairs=str(lst))
    print(f"\nstrict list: EER threshold {eer.threshold:.6f}, EER {eer.eer}\n{res.summary()}")
    assert res.rule.metric == "cosine" and res.threshold == eer.threshold
    assert eer.threshold > 0.9999 and eer.eer == 0.0
    assert "strict.txt" in res.rule.source
    assert res.decision == "different" and res.cosine < res.threshold
    # the bundled sample pairs: EER 0, threshold = their lowest genuine cosine; the demo pair is same
    res2 = compare_pair(dlib, str(genuine.a), str(genuine.b), pairs=sample_pairs())
    print(f"sample pairs: {res2.rule.source}, threshold {res2.threshold:.4f}")
    assert res2.rule.metric == "cosine" and 0.93 < res2.threshold < 0.96 and res2.eer.eer == 0.0
    assert res2.decision == "same"
    res3 = compare_pair(dlib, str(impostor.a), str(impostor.b), pairs=sample_pairs())
    assert res3.threshold == res2.threshold and res3.decision == "different"

# --------------------------------------------------------------------------- CLI
def run(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_verify_same_and_different(capsys):
    genuine, impostor = demo_pairs()
    for pair, word in ((genuine, "same"), (impostor, "different")):
        code, out, err = run(capsys, "verify", "--model", "dlib-resnet", pair.a, pair.b)
        print(f"\n{out}")
        assert code == 0, err
        assert "cosine similarity:" in out and "euclidean distance:" in out and "threshold:" in out
        assert out.strip().splitlines()[-1] == f"decision: {word}"


def test_cli_verify_no_face(tmp_path, capsys):
    gray = tmp_path / "gray.png"
    Image.new("RGB", (200, 200), (128, 128, 128)).save(gray)
    code, out, err = run(capsys, "verify", "--model", "dlib-resnet", face("london_001", "neutral.jpg"), gray)
    print(f"\nstderr: {err!r}")
    assert code == 1 and out == ""
    assert len(err.strip().splitlines()) == 1 and "no face" in err
    code, out, err = run(capsys, "verify", "--model", "dlib-resnet", "--no-align",
                         face("london_001", "neutral.jpg"), gray)
    assert code == 0, err
    assert out.strip().splitlines()[-1] in ("decision: same", "decision: different")


def test_cli_explain_pair_writes_a_chip_sized_map(tmp_path, capsys):
    png, npy = tmp_path / "e.png", tmp_path / "e.npy"
    code, out, err = run(capsys, "explain", "--model", "dlib-resnet", "--image", face("london_001", "neutral.jpg"),
                         "--reference", face("london_001", "smiling.jpg"), "--target", "similar",
                         "--iterations", "60", "--out", png, "--save-map", npy)
    assert code == 0, err
    m = np.load(npy)
    assert m.shape == (150, 150) and m.dtype == np.float32 and m.min() >= 0 and m.max() == pytest.approx(1)
    assert Image.open(png).size == (800, 800)  # the chip, cut again from the photo at the default --size
    assert "e+ (similar)" in out


def test_acceptance_e_plus_and_e_minus_differ_and_e_plus_sits_on_the_face(dlib):
    x = chip(dlib, "london_001", "neutral.jpg")
    ref = dlib(chip(dlib, "london_001", "smiling.jpg")).detach()
    params = default_params("embedding", iterations=120)

    def both(xb):  # row 0: L+ = cos (e+), row 1: L- = 1 - cos (e-); rows are independent
        s = cosine_to(dlib, xb, ref)
        return torch.stack([s[0], 1.0 - s[1]])

    res = run_fame(x.expand(2, -1, -1, -1), both, params, normalize=dlib.normalize, denormalize=dlib.denormalize)
    e_plus, e_minus = res.maps
    central = lambda m: float(m[25:125, 25:125].sum() / m.sum())  # noqa: E731
    diff = float(np.abs(e_plus - e_minus).mean())
    corr = float(np.corrcoef(e_plus.ravel(), e_minus.ravel())[0, 1])
    print(f"\ne+: loss {res.initial_loss[0]:.4f} -> {res.final_loss[0]:.4f}, central 100x100 share "
          f"{central(e_plus):.3f}; e-: loss {res.initial_loss[1]:.4f} -> {res.final_loss[1]:.4f}, share "
          f"{central(e_minus):.3f}; mean |e+ - e-| {diff:.3f}, correlation {corr:.3f} (the central square is "
          f"{100 * 100 / 150 ** 2:.3f} of the chip)")
    assert e_plus.shape == (150, 150)
    assert res.final_loss[0] < res.initial_loss[0] and res.final_loss[1] < res.initial_loss[1]
    assert diff > 0.03 and corr < 0.95
    assert central(e_plus) > 0.5
    # the batched engine run is the same computation as explain_fame with a similarity target
    single = explain_fame(dlib, x, Target("similar"), default_params("embedding", iterations=5), reference=ref)
    again = run_fame(x.expand(2, -1, -1, -1), both, default_params("embedding", iterations=5),
                     normalize=dlib.normalize, denormalize=dlib.denormalize)
    gap = float(np.abs(single.maps[0] - again.maps[0]).max())
    print(f"explain_fame vs the batched run, 5 iterations: max |difference| {gap:.2e}")
    assert gap < 5e-3  # float rounding of batch-2 vs batch-1 convolutions, amplified by the sign-like step
