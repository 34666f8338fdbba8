"""From files to model inputs and back: shared by the CLI and the GUI (no Qt here)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from .images import LoadedImage, Prepared, load_image, prepare

if TYPE_CHECKING:
    from ..models.wrapper import ModelWrapper


@dataclass
class ModelInput:
    """One image made ready for one model, plus how it got there."""

    image: LoadedImage
    prepared: Prepared
    face_index: int | None = None
    n_faces: int | None = None
    note: str = ""

    @property
    def tensor(self) -> torch.Tensor:
        return self.prepared.tensor


def prepare_for_model(model: ModelWrapper, image: LoadedImage | str, *, face_index: int = 0,
                      align: bool = True) -> ModelInput:
    """Face models get an aligned chip (``align=False``: centre crop); classifiers their eval transform."""
    if not isinstance(image, LoadedImage):
        image = load_image(image)
    if model.alignment is None:
        ratio = float(model.extras.get("crop_ratio", 0.875))
        return ModelInput(image, prepare(image, model.input_size, "resize-crop", crop_ratio=ratio), note=image.note)
    if not align:
        p = prepare(image, model.input_size, "center-crop")
        return ModelInput(image, p, note="no alignment: centre crop of the image as it is")
    from .faces import align_face

    aligned = align_face(image.as_uint8(), method=model.alignment, face_index=face_index,
                         source_name=image.path)
    chip = aligned.chip
    if chip.shape[:2] != tuple(model.input_size):
        raise ValueError(f"alignment {model.alignment} gave {chip.shape[:2]}, model expects {model.input_size}")
    t = torch.from_numpy(np.ascontiguousarray(chip, dtype=np.float32)).permute(2, 0, 1).unsqueeze(0)
    prepared = Prepared(t.contiguous(), np.asarray(aligned.to_original, dtype=np.float64), image.shape, aligned.method)
    note = image.note
    if aligned.n_faces > 1:
        note = (note + "; " if note else "") + f"{aligned.n_faces} faces found, using face {aligned.face_index}"
    return ModelInput(image, prepared, aligned.face_index, aligned.n_faces, note)
