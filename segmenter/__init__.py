"""Models: the Segmenter interface, its implementations, checkpoints and training."""
from segmenter.backend import BACKENDS
from segmenter.base import Instances, Segmenter, resolve_device
from segmenter.checkpoint import Checkpoint, ModelLoadError
from segmenter.registry import FAMILIES, SHIPPED, from_checkpoint, load, model_path, register
from segmenter.bns import BNSSegmenter
from segmenter.classical import OtsuWatershed
from segmenter.detection import DetectionSegmenter
from segmenter.focus_gated import FocusGated
from segmenter.unet_segmenter import UNetSegmenter

register(UNetSegmenter)
register(DetectionSegmenter)
register(FocusGated)
register(BNSSegmenter)
register(OtsuWatershed)

__all__ = ["BACKENDS", "Checkpoint", "DetectionSegmenter", "FAMILIES", "FocusGated", "Instances", "ModelLoadError",
           "SHIPPED", "Segmenter", "UNetSegmenter", "from_checkpoint", "load", "model_path", "register", "resolve_device"]
