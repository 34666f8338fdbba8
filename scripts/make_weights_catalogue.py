"""Write resources/weights_catalogue.json: where each downloadable model's weights come from.

Torchvision's entries are read from its weights enums (URL, the SHA-256 prefix torchvision puts in the
file name and checks, the size it documents in MiB); timm's from its pretrained configs (the Hub
repository and licence; the size from the parameter count: the Hub's own checksum is checked on download);
insightface's release packs and the face backbones without a direct licensed URL are listed below by hand.
Run again after a torchvision or timm upgrade:

    python scripts/make_weights_catalogue.py
"""
import json
import os
import re
import sys
from pathlib import Path

import torchvision

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from famegui.models.iresnet import FACE_ARCHS  # noqa: E402
from famegui.models.zoo import TORCHVISION_CLASSIFIERS  # noqa: E402

TORCHVISION_PAGE = "https://pytorch.org/vision/stable/models.html"
TORCHVISION_LICENCE = ("torchvision's pretrained weights: BSD-3-Clause code; the weights carry the terms of "
                       "their training data (ImageNet-1K: non-commercial research)")
INSIGHTFACE_RELEASE = "https://github.com/deepinsight/insightface/releases/download/v0.7/"
INSIGHTFACE_PAGE = "https://github.com/deepinsight/insightface/tree/master/python-package"
INSIGHTFACE_LICENCE = "insightface model zoo: non-commercial research use only"
# SHA-256 and size of the v0.7 release zips, as published alongside them by several independent projects
INSIGHTFACE_PACKS = {
    "buffalo_l": ("80ffe37d8a5940d59a7384c201a2a38d4741f2f3c51eef46ebb28218a7b0ca2f", None,
                  "ResNet50 ArcFace on WebFace600K (w600k_r50) with SCRFD-10GF"),
    "buffalo_s": ("d85a87f503f691807cd8bb97128bdf7a0660326cd9cd02657127fa978bab8b5e", 127607557,
                  "MobileFaceNet ArcFace on WebFace600K (w600k_mbf) with SCRFD-500MF"),
    "antelopev2": ("8e182f14fc6e80b3bfa375b33eb6cff7ee05d8ef7633e738d1c89021dcf0c5c5", 360662982,
                   "ResNet100 on Glint360K (glintr100) with SCRFD-10GF"),
}
# timm models on the Hugging Face Hub offered in the list (any other: famegui fetch timm:NAME)
TIMM_MODELS = ["vit_tiny_patch16_224.augreg_in21k_ft_in1k", "vit_small_patch16_224.augreg_in21k_ft_in1k",
               "vit_base_patch16_224.augreg2_in21k_ft_in1k", "deit_small_patch16_224.fb_in1k",
               "swin_tiny_patch4_window7_224.ms_in1k", "convnext_tiny.fb_in1k", "resnet50.a1_in1k",
               "efficientnet_b0.ra_in1k"]
MANUAL = {
    "iresnet": ("https://github.com/deepinsight/insightface/tree/master/recognition/arcface_torch",
                "no direct licensed URL (the authors share it on OneDrive / Baidu): get backbone.pth from "
                "the page, then --weights FILE"),
    "adaface": ("https://github.com/mk-minchul/AdaFace",
                "no direct licensed URL (the authors share it on Google Drive): get the .ckpt from the page, "
                "then --weights FILE"),
}


def main() -> None:
    models: dict = {}
    for name in TORCHVISION_CLASSIFIERS:
        w = torchvision.models.get_model_weights(name).DEFAULT
        file = os.path.basename(w.url)
        prefix = re.search(r"-([0-9a-f]{8,})\.pth$", file).group(1)
        models[name] = {"url": w.url, "file": file, "hash_prefix": prefix,
                        "size": round(w.meta["_file_size"] * 2**20), "cache": "torchvision",
                        "licence": TORCHVISION_LICENCE, "page": TORCHVISION_PAGE,
                        "description": f"{w} (ImageNet-1K top-1 {w.meta['_metrics']['ImageNet-1K']['acc@1']}%)"}
    import timm

    for arch in TIMM_MODELS:
        cfg = timm.models.get_pretrained_cfg(arch)
        net = timm.create_model(arch, pretrained=False)
        size = sum(t.numel() * t.element_size() for t in net.state_dict().values())
        models[f"timm:{arch}"] = {"repo": cfg.hf_hub_id, "file": cfg.hf_hub_filename or "model.safetensors",
                                  "size": size, "cache": "huggingface", "licence": cfg.license or "see its page",
                                  "page": f"https://huggingface.co/{cfg.hf_hub_id}",
                                  "description": f"timm {arch} ({sum(p.numel() for p in net.parameters()) / 1e6:.1f}"
                                                 " M parameters)"}
    for pack, (sha, size, what) in INSIGHTFACE_PACKS.items():
        models[f"insightface:{pack}"] = {"url": f"{INSIGHTFACE_RELEASE}{pack}.zip", "file": f"{pack}.zip",
                                         "sha256": sha, **({"size": size} if size else {}),
                                         "cache": "insightface", "unpack": "zip", "licence": INSIGHTFACE_LICENCE,
                                         "page": INSIGHTFACE_PAGE, "description": what}
    for name, title in FACE_ARCHS.items():
        page, how = MANUAL["adaface" if name.startswith("adaface") else "iresnet"]
        models[name] = {"manual": how, "page": page, "description": title}
    doc = {"format": 1, "about": "famegui's weights catalogue (scripts/make_weights_catalogue.py); a file of "
           "this format named by FAMEGUI_WEIGHTS_INDEX or --index adds or overrides entries", "models": models}
    out = ROOT / "resources" / "weights_catalogue.json"
    out.write_text(json.dumps(doc, indent=1, sort_keys=False) + "\n")
    print(f"{out}: {len(models)} models")


if __name__ == "__main__":
    main()
