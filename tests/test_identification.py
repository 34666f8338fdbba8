"""Identification mode: dlib's face network + a gallery folder = a classifier over identities.

Real photos (resources/faces), no mocks. Run with ``-s`` to see the numbers.
"""
import os
import shutil

import numpy as np
import pytest
import torch
from conftest import face
from PIL import Image

from famegui.core.fame import default_params
from famegui.data.pipeline import prepare_for_model
from famegui.methods.fame import explain_fame
from famegui.models.identification import (
    build_identification_model,
    identify,
    parse_identification_spec,
)
from famegui.paths import resource_path
from famegui.targets import Target


def _link(src, dst):
    try:
        os.symlink(src, dst)
    except OSError:  # no symlinks here: copy
        shutil.copy(src, dst)


@pytest.fixture(scope="module")
def small_gallery(tmp_path_factory):
    """4 identities; london_001 only has its neutral photo, so london_001/smiling.jpg is a held-out probe."""
    root = tmp_path_factory.mktemp("gallery")
    members = {
        "london_001": ["neutral.jpg"],
        "london_005": ["neutral.jpg", "smiling.jpg"],
        "london_006": ["neutral.jpg", "smiling.jpg"],
        "lisa_debruine": ["lisa_lisa1.jpg", "zoom_30cm.jpg"],
    }
    for ident, files in members.items():
        (root / ident).mkdir()
        for f in files:
            _link(face(ident, f), root / ident / f)
    return root


@pytest.fixture(scope="module")
def ident_small(dlib, small_gallery):
    return build_identification_model(dlib, small_gallery)


def test_held_out_probe_is_its_own_identity(dlib, ident_small, small_gallery):
    m = ident_small
    assert m.task == "classification"
    assert m.class_names == ["lisa_debruine", "london_001", "london_005", "london_006"]
    assert (m.input_size, m.mean, m.std, m.channel_order, m.alignment) == (
        dlib.input_size, dlib.mean, dlib.std, dlib.channel_order, dlib.alignment)
    assert m.source == f"identify:dlib-resnet:{small_gallery.resolve()}"
    assert m.weights_id.startswith(dlib.weights_id + "+gallery-sha256:")
    assert m.extras["skipped"] == [] and m.extras["identity_counts"]["london_005"] == 2
    assert m.default_layer == "embedder.stage4"
    assert parse_identification_spec(m.source) == ("dlib-resnet", small_gallery.resolve())
    # the gallery is fixed: a buffer, not a trainable parameter
    assert "gallery" in dict(m.module.named_buffers())
    assert all(not p.requires_grad for p in m.module.parameters())
    assert all("gallery" not in n for n, _ in m.module.named_parameters())

    x = prepare_for_model(m, face("london_001", "smiling.jpg")).tensor
    top = identify(m, x, top=4)
    print(f"\nheld-out probe london_001/smiling.jpg: {[(n, round(s, 4)) for n, s in top]}")
    assert top[0][0] == "london_001"
    assert top[0][1] > top[1][1] + 0.03
    # the scores are cosines to the identity templates: check one by hand
    with torch.no_grad():
        e = dlib(x)[0].double()
        g = dlib(prepare_for_model(dlib, face("london_001", "neutral.jpg")).tensor)[0].double()
    by_hand = float(torch.dot(e, g) / (e.norm() * g.norm()))
    assert dict(top)["london_001"] == pytest.approx(by_hand, abs=1e-5)


def test_bundled_photos_work_as_a_gallery(dlib):
    m = build_identification_model(dlib, resource_path("faces"))
    print(f"\nresources/faces gallery: {len(m.class_names)} identities, counts {m.extras['identity_counts']}, "
          f"skipped {m.extras['skipped']}")
    assert "hard_cases" not in m.class_names and len(m.class_names) == 15
    assert m.extras["skipped"] == []
    right = 0
    for probe, ident in (("london_005/smiling.jpg", "london_005"), ("joe_biden/vp_portrait.jpg", "joe_biden"),
                         ("hard_cases/obama_lowres_320x240.jpg", "barack_obama")):
        top = identify(m, prepare_for_model(m, face(*probe.split("/"))).tensor, top=2)
        print(f"{probe}: {top}")
        right += top[0][0] == ident
    assert right == 3


def test_unusable_gallery_photos_are_skipped_and_empty_identities_refused(dlib, tmp_path):
    g = tmp_path / "g"
    (g / "london_001").mkdir(parents=True)
    (g / "nobody").mkdir()
    (g / ".hidden").mkdir()
    shutil.copy(face("london_001", "neutral.jpg"), g / "london_001" / "n.jpg")
    Image.new("RGB", (120, 120), (128, 128, 128)).save(g / "london_001" / "gray.png")
    (g / "london_001" / "broken.jpg").write_bytes(b"not a jpeg")
    (g / "london_001" / "notes.txt").write_text("ignored: not an image")
    shutil.copy(face("london_005", "neutral.jpg"), g / "nobody" / "a.jpg")
    m = build_identification_model(dlib, g)
    print(f"\nskipped: {m.extras['skipped']}")
    assert m.class_names == ["london_001", "nobody"]
    skipped = sorted(m.extras["skipped"])
    assert len(skipped) == 2
    assert skipped[0].startswith("london_001/broken.jpg: ") and skipped[1].startswith("london_001/gray.png: ")
    assert "no face" in skipped[1]
    # the gallery hash follows the content: another gallery, another weights id
    shutil.copy(face("london_001", "smiling.jpg"), g / "london_001" / "s.jpg")
    m2 = build_identification_model(dlib, g)
    assert m2.weights_id != m.weights_id and m2.extras["identity_counts"]["london_001"] == 2

    (g / "empty").mkdir()
    Image.new("RGB", (120, 120), (90, 90, 90)).save(g / "empty" / "flat.png")
    with pytest.raises(ValueError, match="identity 'empty' .* no usable photo .*no face"):
        build_identification_model(dlib, g)
    with pytest.raises(ValueError, match="not found"):
        build_identification_model(dlib, tmp_path / "missing")
    with pytest.raises(ValueError, match="no identity sub-folders"):
        build_identification_model(dlib, g / "nobody")


def test_class_logit_fame_and_a_cell_target_on_the_identification_model(ident_small):
    m = ident_small
    x = prepare_for_model(m, face("london_001", "smiling.jpg")).tensor
    k = m.class_names.index("london_001")
    res = explain_fame(m, x, Target("class", class_index=k), default_params("embedding", iterations=40))
    amap = res.maps[0]
    central = float(amap[25:125, 25:125].sum() / amap.sum())
    print(f"\nclass-logit FAME ({m.class_names[k]}): score {res.initial_loss[0]:.4f} -> {res.final_loss[0]:.4f}, "
          f"central share {central:.3f}")
    assert amap.shape == (150, 150) and amap.min() >= 0 and amap.max() == pytest.approx(1) and amap.max() <= 1
    assert res.final_loss[0] < res.initial_loss[0] - 0.05
    assert not res.empty[0]

    info = m.layer_info("embedder.stage4")
    assert info.shape == (256, 4, 4)
    cell = explain_fame(m, x, Target("cell", layer="embedder.stage4", cell=(1, 2)),
                        default_params("embedding", iterations=20))
    print(f"cell embedder.stage4[1,2]: loss {cell.initial_loss[0]:.3f} -> {cell.final_loss[0]:.3f}")
    assert cell.maps[0].shape == (150, 150) and np.isfinite(cell.maps[0]).all()
    assert cell.final_loss[0] < cell.initial_loss[0]
