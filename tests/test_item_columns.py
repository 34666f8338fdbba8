"""Extra columns of a protocol list (``group``, ``pose``): read with the list, kept by a run in items.parquet,
and ``famegui report RUN --by group`` (and ``--regions --by group``) gives one table per group whose numbers
are those of the group's own rows; two runs' decisions are compared item by item."""
import json
import math
import shutil

import numpy as np
import pytest

from famegui.cli import main
from famegui.data.pairs import Pair, read_pairs, write_pairs
from famegui.evaluation.compare_runs import compare_runs, item_cosines
from famegui.evaluation.protocol import demo_protocol, read_protocol
from famegui.evaluation.report_tables import load_run, split_run, summarise
from famegui.evaluation.rundir import read_items, read_results
from famegui.evaluation.runner import run_protocol


def _write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def test_lists_with_extra_columns_need_a_header_naming_them(tmp_path):
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        (tmp_path / name).write_bytes(b"")
    pairs = read_pairs(_write(tmp_path / "p.csv", "pathA,pathB,label,group,pose\n"
                                                  "a.jpg,b.jpg,1,f,frontal\nb.jpg,c.jpg,0,m,profile\n"))
    assert pairs.columns == ("group", "pose")
    assert [dict(p.attrs) for p in pairs] == [{"group": "f", "pose": "frontal"}, {"group": "m", "pose": "profile"}]
    proto = read_protocol(tmp_path / "p.csv")
    assert proto.kind == "pairs" and proto.columns == ("group", "pose")
    assert proto.describe()["columns"] == ["group", "pose"]
    # write_pairs keeps them: read back equal
    write_pairs(tmp_path / "again.csv", pairs)
    assert [p.attrs for p in read_pairs(tmp_path / "again.csv")] == [p.attrs for p in pairs]
    # triplets and image lists as well
    trip = read_protocol(_write(tmp_path / "t.csv", "probe,mate,non_mate,group\na.jpg,b.jpg,c.jpg,x\n"))
    assert trip.kind == "triplets" and dict(trip.items[0].attrs) == {"group": "x"}
    imgs = read_protocol(_write(tmp_path / "i.csv", "path,class,pose\na.jpg,3,left\n"))
    assert imgs.kind == "images" and imgs.items[0].class_label == "3" and dict(imgs.items[0].attrs) == {"pose": "left"}
    # a list without extra columns describes itself as before (old runs resume)
    assert "columns" not in read_protocol(_write(tmp_path / "plain.csv", "a.jpg,b.jpg,1\n")).describe()
    bad = {
        "nohead.csv": ("a.jpg,b.jpg,1,f\n", "header line naming them"),
        "short.csv": ("pathA,pathB,label,group\na.jpg,b.jpg,1\n", "plus the header's group"),
        "dup.csv": ("pathA,pathB,label,g,g\na.jpg,b.jpg,1,x,y\n", "repeat"),
        "reserved.csv": ("pathA,pathB,label,method\na.jpg,b.jpg,1,x\n", "name of its own"),
        "tshort.csv": ("probe,mate,non_mate,group\na.jpg,b.jpg,c.jpg\n", "plus the header's group"),
    }
    for name, (text, words) in bad.items():
        with pytest.raises(ValueError, match=words) as e:
            read_protocol(_write(tmp_path / name, text))
        assert "\n" not in str(e.value) and name in str(e.value)


@pytest.fixture(scope="module")
def grouped_run(tmp_path_factory):
    """The first four demo pairs with a group column (two each), run with Grad-CAM and deletion."""
    root = tmp_path_factory.mktemp("grouped")
    items = demo_protocol(limit=4).items
    groups = ["north", "south", "south", "north"]
    write_pairs(root / "pairs.csv", [Pair(it.a, it.b, it.same, attrs=(("group", g),)) for it, g in zip(items, groups)])
    out = root / "run"
    run_protocol(read_protocol(root / "pairs.csv"), "dlib-resnet", methods=["gradcam"], metrics=["deletion"],
                 out_dir=out)
    return out, groups


def test_a_run_keeps_the_columns_and_splits_its_table_by_them(grouped_run, capsys):
    out, groups = grouped_run
    items = read_items(out)
    assert [r["group"] for r in items] == groups and [r["item_index"] for r in items] == [0, 1, 2, 3]
    run = load_run(out)
    parts = split_run(run, ["group"])
    assert [v for v, _ in parts] == [("north",), ("south",)]
    rows = read_results(out).to_pylist()
    for (group,), sub in parts:
        mine = {i for i, g in enumerate(groups) if g == group}
        assert {r["item_index"] for r in sub.rows} == mine
        rep = summarise(sub)
        cam = next(r for r in rep.rows if r.method == "gradcam" and r.target == "e+")
        by_hand = np.mean([r["auc"] for r in rows if r["item_index"] in mine and r["method"] == "gradcam"
                           and r["target"] == "e+"])
        assert cam.items == 2 and cam.mean == pytest.approx(by_hand, abs=1e-12)
    assert main(["report", str(out), "--by", "group"]) == 0
    text = capsys.readouterr().out
    assert text.count("\n# ") + text.startswith("# ") == 2
    assert "group = north (2 items)" in text and "group = south (2 items)" in text
    assert main(["report", str(out), "--by", "group", "--format", "csv"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("group,target,metric,method") and {ln.split(",")[0] for ln in lines[1:]} == {
        "north", "south"}
    assert main(["report", str(out), "--by", "label"]) == 0
    assert "label = genuine" in capsys.readouterr().out
    assert main(["report", str(out), "--by", "pose"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no item column 'pose'" in err[0] and "group" in err[0]


def test_regions_by_group_give_one_table_per_group(grouped_run, capsys):
    out, _groups = grouped_run
    assert main(["report", str(out), "--regions", "--by", "group"]) == 0
    text = capsys.readouterr().out
    assert text.count("### group = ") == 2
    for block in text.split("### group = ")[1:]:
        rows = [ln for ln in block.splitlines() if ln.startswith("| gradcam")]
        assert len(rows) == 2 and all("| 2 |" in ln for ln in rows)  # e+ and e-, two items each


def test_a_run_made_before_item_columns_says_so(grouped_run, tmp_path, capsys):
    out, _ = grouped_run
    old = tmp_path / "old"
    shutil.copytree(out, old)
    (old / "items.parquet").unlink()
    assert main(["report", str(old), "--by", "group"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "items.parquet" in err[0]
    assert main(["report", str(old)]) == 0  # the plain table still reads


def test_decisions_of_two_runs_item_by_item(grouped_run, tmp_path):
    import torch

    import famegui
    from famegui.data.pipeline import prepare_for_model

    out, _ = grouped_run
    cos = item_cosines(load_run(out))
    # the unperturbed cosines equal the model's own, computed here from the two aligned photos
    items = read_protocol(out.parent / "pairs.csv").items
    model = famegui.load("dlib-resnet")
    with torch.no_grad():
        for i, it in enumerate(items):
            ea, eb = (model(prepare_for_model(model, str(p), align=True).tensor) for p in (it.a, it.b))
            assert cos[i] == pytest.approx(float(torch.nn.functional.cosine_similarity(ea, eb)), abs=1e-5)
    same = compare_runs(out, out)
    assert same.decisions["differ"] == 0 and same.decisions["items"] == 4
    truth = [it.same for it in items]
    thr = json.loads((out / "run.json").read_text())["threshold"]
    assert same.decisions["accuracy_a"] == pytest.approx(np.mean([(cos[i] >= thr) == t for i, t in enumerate(truth)]))
    # the same maps judged at another threshold (a run of the same protocol with another setting)
    other = tmp_path / "other"
    shutil.copytree(out, other)
    meta = json.loads((other / "run.json").read_text())
    ordered = sorted(cos.values())
    meta["threshold"] = (ordered[0] + ordered[1]) / 2  # three items above it, one below
    (other / "run.json").write_text(json.dumps(meta))
    c = compare_runs(out, other)
    expected = sum((cos[i] >= thr) != (cos[i] >= meta["threshold"]) for i in cos)
    assert expected >= 1 and c.decisions["differ"] == expected and len(c.differ) == expected
    assert all(math.isfinite(r["cosine_a"]) and r["decision_a"] != r["decision_b"] for r in c.differ)
    text = c.render("md")
    assert "## Decisions" in text and f"{expected} differently" in text
