"""Models: loaders (:mod:`.zoo`), the wrapper every method works on, and what each model family declares about
its blocks for rule-based methods (importing this package registers those declarations)."""
from . import dlib_resnet, identification, iresnet, torchvision_nets  # noqa: F401  (structure declarations)
