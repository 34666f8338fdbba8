"""The Excitation Backprop family: EBP, contrastive EBP and gweEBP, for face pairs and classifiers.

``ebp``, ``cebp``, ``gweebp`` (Zhang et al. IJCV 2018; Wang et al. PRL 2025)
    Excitation Backprop with hand-written rules on an internal copy of the network
    (:mod:`.ebp_engine`, rules in :mod:`.ebp_rules`); the map is the marginal winning probability (MWP)
    summed over the channels of an intermediate layer (param ``layer``; default:
    the deepest stage whose feature map is at least 12 px, e.g. dlib ``stage2``
    17x17, IResNet ``layer3`` 14x14, like the paper's 14x14 / 16x16; stage
    aliases ``stage1``.. of ``model.extras['stages']`` are accepted; ``input`` =
    pixels), bilinearly upsampled and divided by its maximum.

    Top signal, verification: the embedding is turned into a one-neuron
    "classifier" whose weights are the normalised reference (``s = <phi_x, r_hat>``,
    as the seed-004 paper stacks the mate's embedding into an extra fc layer).
    e+ starts from the excitatory contributions ``(r_hat_k a_k)^+`` (normalised to
    sum 1); e- from the dual unit with weights ``-r_hat`` (the contributions that
    pull the pair apart). Classification: the class row of the last fc layer (and
    its negation for the dual).

    - ``ebp``: MWP from the target unit, with the extended rule below (Wang et al.'s
      eEBP); on layers with non-negative responses (dlib's ReLU stages) this is
      Zhang et al.'s EBP exactly. Like the original, e+ and e- look alike: EBP is
      not contrastive.
    - ``cebp``: contrastive EBP: MWP(target unit) - MWP(dual unit) at the layer,
      positive part (Zhang et al.'s contrastive MWP with the negated top weights).
    - ``gweebp``: every child response is replaced by its gradient-weighted value
      ``a [dG/da]^+`` (a >= 0) or ``a [-dG/da]^+`` (a < 0) before the MWP of each
      layer is computed (Wang et al., eq. 6). The paper's gain is the triplet gain
      ``max(0, ||a-n|| - ||a-p||)`` on normalised embeddings: used for e+ when a
      non-mate image is given (``run_method(..., non_mate=...)``, the GUI's third
      image, ``--non-mate``). Without one, and for e-, ``G = cos(phi_x, r)`` for e+
      (reference = positive) and ``G = 1 - cos`` for e- (gradients flip sign), with
      the top unit ``r_hat`` / ``-r_hat`` as above. ``info["gain"]`` says which.
      Clamping ``[-dG/da]^+`` for negative neurons (the paper writes ``a (-dG/da)``) keeps the sign of every response;
      the paper's text says such neurons are "suppressed", which this implements.

The engine (network rebuilding and the rules) is :mod:`.ebp_engine`.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .ebp_engine import ebp_run, gweebp_maps, upsample
from .face_common import is_similar, need_reference, scale_max, to_numpy, unit
from .registry import MethodContext, MethodSpec, Param, register


def _ebp_common(ctx: MethodContext, variant: str) -> np.ndarray:
    size = tuple(ctx.x.shape[-2:])
    layer = ctx.params.get("layer") or None
    ctx.report(0.0)
    if ctx.task == "classification":
        cls = int(ctx.target.class_index)
        if variant == "gweebp":
            def gains(out):
                return [out.flatten(1)[0, cls]]
            res = ebp_run(ctx.model, ctx.x, top="classification", signs=(1.0,), class_index=cls, layer=layer,
                           gains=gains)
            m = res.maps[0]
        else:
            signs = (1.0, -1.0) if variant == "cebp" else (1.0,)
            res = ebp_run(ctx.model, ctx.x, top="classification", signs=signs, class_index=cls, layer=layer)
            m = res.maps[0] - res.maps[1] if variant == "cebp" else res.maps[0]
    else:
        ref = need_reference(ctx)
        similar = is_similar(ctx)
        if variant == "gweebp":
            # Wang et al.'s triplet gain needs a non-mate and explains the match (e+); otherwise, and for e-,
            # the pair gain G = cos / 1 - cos
            triplet = ctx.non_mate_embedding is not None and similar
            ctx.info["gain"] = "triplet max(0, |a-n| - |a-p|)" if triplet else (
                "cos(a, p)" if similar else "1 - cos(a, p)")
            if triplet:
                with torch.no_grad():
                    a = F.normalize(ctx.model(ctx.x).flatten(1), dim=1)
                    gain = float(((a - unit(ctx.non_mate_embedding)).norm() - (a - unit(ref)).norm()).item())
                ctx.info["triplet_gain"] = gain
                if gain <= 0:  # max(0, .) has no gradient: the map is empty, say why
                    ctx.info["empty"] = True
                    ctx.info["note"] = "the non-mate is not farther from the probe than the mate: triplet gain 0"
            res = gweebp_maps(ctx.model, ctx.x, ref, layer=layer, targets=("similar" if similar else "dissimilar",),
                              negative_embedding=ctx.non_mate_embedding if triplet else None)
            m = res.maps[0]
        else:
            s = 1.0 if similar else -1.0
            signs = (s, -s) if variant == "cebp" else (s,)
            res = ebp_run(ctx.model, ctx.x, top="verification", signs=signs, reference_embedding=ref, layer=layer)
            m = res.maps[0] - res.maps[1] if variant == "cebp" else res.maps[0]
    ctx.report(0.9)
    m = upsample(m.clamp(min=0).unsqueeze(0), size)[0]
    ctx.report(1.0)
    return to_numpy(scale_max(m.clamp(min=0)))


def _ebp_method(ctx: MethodContext) -> np.ndarray:
    return _ebp_common(ctx, "ebp")


def _cebp_method(ctx: MethodContext) -> np.ndarray:
    return _ebp_common(ctx, "cebp")


def _gweebp_method(ctx: MethodContext) -> np.ndarray:
    return _ebp_common(ctx, "gweebp")


EBP_TASKS = frozenset({"verification", "classification"})
EBP_LAYER = Param("layer", str, None, "layer where the MWP map is read (default: the deepest stage with a "
                  "feature map of at least 12 px, e.g. dlib stage2, IResNet layer3; 'input' = pixels)")

register(MethodSpec(
    name="ebp", label="EBP", tasks=EBP_TASKS, output="pair", task_outputs={"classification": "single"},
    cost="cheap", fn=_ebp_method, params=(EBP_LAYER,),
    description="Excitation Backprop: marginal winning probabilities from the similarity unit (e+) or its "
                "dual (e-), read at an intermediate layer",
))

register(MethodSpec(
    name="cebp", label="contrastive EBP", tasks=EBP_TASKS, output="pair", task_outputs={"classification": "single"},
    cost="cheap", fn=_cebp_method,
    params=(EBP_LAYER,),
    description="Contrastive Excitation Backprop: MWP of the target unit minus MWP of its negated dual",
))

register(MethodSpec(
    name="gweebp", label="gweEBP", tasks=EBP_TASKS, output="pair", task_outputs={"classification": "single"},
    cost="cheap", fn=_gweebp_method, params=(EBP_LAYER,), uses_non_mate=True,
    description="Gradient-weighted extended EBP (Wang et al., PRL 2025): responses weighted by the gradient of "
                "the gain "
                "(with a non-mate: the triplet gain for e+; else cos for e+, 1 - cos for e-)",
))
