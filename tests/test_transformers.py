"""Vision transformers as famegui sees them: token outputs as grids of cells (ViT, Swin), FAME on a token,
CAM methods through pytorch-grad-cam's reshape_transform chosen from the layer's layout, and a transformer
face embedder explained with e+/e-. Weights are seeded and saved by the tests (nothing is downloaded)."""
import json

import numpy as np
import pytest
import torch
from conftest import face
from safetensors.torch import save_file

import famegui
from famegui.cli import main
from famegui.models.wrapper import grid_layout

VIT, SWIN = "timm:vit_tiny_patch16_224", "timm:swin_tiny_patch4_window7_224"


def _saved(name: str, path) -> str:
    import timm

    torch.manual_seed(0)
    net = timm.create_model(name.split(":", 1)[1], pretrained=False)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    return str(path)


@pytest.fixture(scope="module")
def vit_file(tmp_path_factory):
    return _saved(VIT, tmp_path_factory.mktemp("vit") / "vit.safetensors")


@pytest.fixture(scope="module")
def swin_file(tmp_path_factory):
    return _saved(SWIN, tmp_path_factory.mktemp("swin") / "swin.safetensors")


@pytest.fixture(scope="module")
def vit(vit_file):
    return famegui.load(VIT, weights=vit_file)


def run(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("raw, size, expected", [
    ((197, 192), (224, 224), ("tokens", (192, 14, 14), 1)),  # ViT: class token + 14x14 patches
    ((201, 384), (224, 224), ("tokens", (384, 14, 14), 5)),  # class token and 4 registers
    ((196, 192), (224, 224), ("tokens", (192, 14, 14), 0)),  # patch tokens alone (global pooling)
    ((141, 192), (224, 160), ("tokens", (192, 14, 10), 1)),  # a non-square input
    ((56, 56, 96), (224, 224), ("hwc", (96, 56, 56), 0)),  # Swin: channels last
    ((64, 56, 56), (224, 224), ("chw", (64, 56, 56), 0)),  # a CNN
    ((512, 7, 7), (224, 224), ("chw", (512, 7, 7), 0)),
    ((3, 197, 64), (224, 224), (None, (3, 197, 64), 0)),  # attention heads: no grid of the image
    ((1000,), (224, 224), (None, (1000,), 0)),
])
def test_the_layout_is_read_from_the_shape(raw, size, expected):
    assert grid_layout(raw, size) == expected


def test_layers_lists_every_block_as_a_grid(vit_file, swin_file, capsys):
    code, out, err = run(capsys, "layers", "--model", VIT, "--weights", vit_file, "--spatial")
    assert code == 0, err
    rows = {line.split()[0]: line for line in out.splitlines()[1:]}
    for i in range(12):
        assert f"blocks.{i}" in rows and "192x14x14" in rows[f"blocks.{i}"] and "+1 token" in rows[f"blocks.{i}"]
    code, out, err = run(capsys, "layers", "--model", SWIN, "--weights", swin_file, "--spatial")
    assert code == 0, err
    rows = {line.split()[0]: line for line in out.splitlines()[1:]}
    for stage, (c, side) in enumerate([(96, 56), (192, 28), (384, 14), (768, 7)]):
        assert f"{c}x{side}x{side}" in rows[f"layers.{stage}"] and "channels last" in rows[f"layers.{stage}"]
        assert f"layers.{stage}.blocks.1" in rows


def test_fame_on_a_token_and_gradcam_from_the_command_line(vit_file, tmp_path, capsys):
    img = face("joe_biden", "vp_portrait.jpg")
    code, _, err = run(capsys, "explain", "--model", VIT, "--weights", vit_file, "--image", img,
                       "--cell", "blocks.11:7,7", "--iterations", "8", "--out", tmp_path / "cell.png")
    assert code == 0, err
    side = json.loads((tmp_path / "cell.json").read_text())
    amap = np.load(tmp_path / "cell.npy") if (tmp_path / "cell.npy").exists() else None
    assert side["target"]["layer"] == "blocks.11" and side["target"]["cell"] == [7, 7]
    assert amap is None or np.isfinite(amap).all()
    code, _, err = run(capsys, "explain", "--model", VIT, "--weights", vit_file, "--image", img, "--method",
                       "gradcam", "--class", "3", "--out", tmp_path / "gc.png")
    assert code == 0, err


def test_fame_reads_the_token_under_the_cell(vit):
    """The cell loss of blocks.k at (r, c) is the absolute sum of patch token 1 + r*14 + c (after the class
    token) of that block's output; FAME's map of a token is finite, and a first-block token (whose receptive
    field is its patch until attention mixes) keeps more of its mass in its patch than blocks.11's."""
    from famegui.models.receptive import footprint, receptive_field
    from famegui.targets.losses import cell_loss

    x = torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    tokens = []
    h = vit.get_layer("blocks.4").register_forward_hook(lambda _m, _i, out: tokens.append(out))
    with torch.no_grad():
        vit(x)
        value = cell_loss(vit, "blocks.4", (3, 9))(x)
    h.remove()
    assert torch.allclose(value, tokens[0][:, 1 + 3 * 14 + 9].abs().sum(1))
    assert receptive_field(vit, "patch_embed", (3, 9)) == footprint((224, 224), (14, 14), (3, 9))
    assert receptive_field(vit, "blocks.0", (3, 9)).as_tuple() == (0.0, 0.0, 224.0, 224.0)
    e = famegui.explain(vit, x, famegui.cell("blocks.11", 7, 7), iterations=10)
    assert e.map.shape == (224, 224) and np.isfinite(e.map).all() and e.map.max() > 0


@pytest.mark.parametrize("name, layer, to_bchw", [
    (VIT, "blocks.11.norm1", lambda t: t[:, 1:, :].reshape(t.shape[0], 14, 14, t.shape[2]).permute(0, 3, 1, 2)),
    (SWIN, "layers.3", lambda t: t.permute(0, 3, 1, 2)),
])
def test_gradcam_on_transformers_equals_the_package_with_its_documented_reshape(name, layer, to_bchw, vit_file,
                                                                                swin_file):
    """The reshape famegui picks from the layout gives the map pytorch-grad-cam's own ViT / Swin examples
    give (their reshape_transform written out here by hand)."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from famegui.methods.cam import FoldedNetwork, cam_layer

    model = famegui.load(name, weights=vit_file if name == VIT else swin_file)
    assert cam_layer(model) == layer  # ViT: the last block's input to attention, chosen from the layout
    x = torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    ours = famegui.explain(model, x, famegui.class_target(5), "gradcam").map
    with GradCAM(model=FoldedNetwork(model), target_layers=[model.get_layer(layer)],
                 reshape_transform=to_bchw) as cam:
        theirs = cam(input_tensor=x.clone().requires_grad_(True), targets=[ClassifierOutputTarget(5)])[0]
    assert ours.max() > 0
    np.testing.assert_allclose(ours, theirs, atol=1e-5)


def test_a_transformer_face_embedder_gets_e_plus_and_e_minus(pair):
    """A ViT face embedder (an nn.Module in memory, as from an entry point) explained like the CNNs."""
    import timm

    torch.manual_seed(3)
    net = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=112, patch_size=8, num_classes=0,
                            depth=4).eval()
    model = famegui.wrap(net, input_size=112, mean=(0.5,) * 3, std=(0.5,) * 3, task="embedding")
    assert model.layer_info("blocks.3").shape == (192, 14, 14)
    probe, ref = (torch.nn.functional.interpolate(t, size=(112, 112), mode="bilinear", antialias=True)
                  for t in pair)
    ep = famegui.explain(model, probe, "e+", reference=ref, iterations=8)
    em = famegui.explain(model, probe, "e-", reference=ref, iterations=8)
    for e in (ep, em):
        assert np.isfinite(e.map).all() and e.map.max() > 0
    assert not np.allclose(ep.map, em.map)


def test_shapleycam_refuses_a_transformer_in_one_line(vit):
    from famegui.methods import run_method
    from famegui.targets import Target

    with pytest.raises(ValueError) as err:
        run_method("shapleycam", vit, torch.rand(1, 3, 224, 224), Target("class", class_index=1))
    assert "\n" not in str(err.value) and "Grad-CAM" in str(err.value)


def test_a_click_on_a_token_in_the_window(vit_file, qtbot, tmp_path):
    """The ViT in the window: its blocks are in the layer tree as 14x14 grids; a click on a cell of blocks.11
    explains that token with FAME."""
    from PySide6.QtCore import QSettings
    from test_gui import click_cell

    from famegui.gui.main_window import MainWindow

    w = MainWindow(model=VIT, weights=vit_file, images=[face("joe_biden", "vp_portrait.jpg")],
                   settings=QSettings(str(tmp_path / "s.ini"), QSettings.IniFormat))
    qtbot.addWidget(w)
    w.show()
    qtbot.waitUntil(lambda: w.session.model is not None and "probe" in w.session.inputs
                    and w.feature_map.fmap_canvas.image_shape() is not None, timeout=180000)
    names = []
    stack = [w.layer_tree.topLevelItem(i) for i in range(w.layer_tree.topLevelItemCount())]
    while stack:
        item = stack.pop()
        names.append(item.text(0))
        stack += [item.child(i) for i in range(item.childCount())]
    assert {f"blocks.{i}" for i in range(12)} <= set(names)
    w.param_form.set_value("iterations", 6)
    assert w.feature_map.select_layer("blocks.11")
    qtbot.waitUntil(lambda: w.feature_map.fmap_canvas.image_shape() is not None, timeout=60000)
    with qtbot.waitSignal(w.result_shown, timeout=180000) as sig:
        click_cell(qtbot, w, (7, 7))
    result = sig.args[0]
    assert result.target.cell == (7, 7) and np.isfinite(result.map).all() and result.map.max() > 0
    w.close()
