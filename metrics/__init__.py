"""Segmentation, detection and counting metrics and the evaluation report (numpy, torch)."""
from .counting import count_mape
from .detection import average_precision, precision_recall_curve
from .matching import Matching, match_instances, precision_recall_f1
from .overlap import dice, jaccard
from .report import write_report
from .soft_overlap import soft_dice, soft_dice_loss, soft_jaccard
from .summary import ImageResult, evaluate_image, level_key, nhm, summarize, summarize_by_level

__all__ = [
    "ImageResult", "Matching", "average_precision", "count_mape", "dice", "evaluate_image", "jaccard", "level_key",
    "match_instances", "nhm", "precision_recall_curve", "precision_recall_f1", "soft_dice", "soft_dice_loss",
    "soft_jaccard", "summarize", "summarize_by_level", "write_report",
]
