"""Models: loaders (:mod:`.zoo`; ONNX in :mod:`.onnx_models`, timm in :mod:`.timm_models`, models found on this
machine in :mod:`.discovery`, weight files in :mod:`.weights`), the wrapper every method works on, and what each
model family declares about its blocks for rule-based methods (importing this package registers those
declarations)."""
from . import dlib_resnet, identification, iresnet, torchvision_nets  # noqa: F401  (structure declarations)
