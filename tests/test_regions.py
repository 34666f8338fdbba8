"""Face regions: a map that covers one region has all of its mass there, the shares add up to 1, and a
protocol run's report gives them per method x target."""
import numpy as np
import pytest
from conftest import face

import famegui
from famegui.cli import main
from famegui.evaluation.regions import REGIONS, landmarks, region_labels, region_shares


@pytest.mark.parametrize("alignment", ["dlib150", "arcface112"])
def test_a_map_on_one_region_has_all_its_mass_there(alignment):
    labels = region_labels(alignment)
    for i, name in enumerate(REGIONS):
        only = (labels == i).astype(np.float32)
        assert only.sum() > 50, name  # every region has pixels
        shares = region_shares(only, alignment)
        assert shares[name] == 1.0 and sum(shares.values()) == pytest.approx(1.0)
    pts = landmarks(alignment)  # the template's points lie in their regions
    for key, region in (("left_eye", "eyes"), ("right_eye", "eyes"), ("mouth", "mouth")):
        x, y = (int(v) for v in pts[key])
        assert REGIONS[labels[y, x]] == region, key


def test_shares_of_a_real_map_add_up_and_need_a_face_model(pair):
    e = famegui.explain("dlib-resnet", face("london_001", "neutral.jpg"),
                        famegui.similar(face("london_001", "smiling.jpg")), "gradcam")
    shares = famegui.regions(e)
    assert set(shares) == set(REGIONS) and sum(shares.values()) == pytest.approx(1.0)
    assert all(0 <= v <= 1 for v in shares.values())
    with pytest.raises(ValueError, match="aligned face"):
        famegui.regions(np.ones((224, 224)), "center-crop")


def test_report_regions_of_a_run(tmp_path, capsys):
    from famegui.evaluation.protocol import demo_protocol
    from famegui.evaluation.runner import run_protocol

    out = tmp_path / "run"
    run_protocol(demo_protocol(limit=2), "dlib-resnet", methods=["gradcam"], metrics=["deletion"], out_dir=out)
    assert main(["report", str(out), "--regions", "--plot", str(tmp_path / "bars.png")]) == 0
    text = capsys.readouterr().out
    lines = [ln for ln in text.splitlines() if ln.startswith("| gradcam")]
    assert len(lines) == 2 and all(" 2 " in ln for ln in lines)  # e+ and e-, two items each
    assert "eyes" in text and (tmp_path / "bars.png").is_file()
    assert main(["report", str(out), str(out), "--regions"]) == 1
    assert "one run folder" in capsys.readouterr().err
