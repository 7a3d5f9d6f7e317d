"""Differentiable (soft) Dice and Jaccard on probability tensors, for training losses.

`probs` and `target` are float tensors of one shape, typically (N, C, H, W) with a one-hot
`target`; the sums run over `dims` and `eps` smooths empty classes (an empty class predicted
empty scores 1).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch


def _check(probs: torch.Tensor, target: torch.Tensor) -> None:
    if probs.shape != target.shape:
        raise ValueError(f"expected probs and target of one shape, got {tuple(probs.shape)} and "
                         f"{tuple(target.shape)} (one-hot encode class indices first)")


def _overlap_sums(probs: torch.Tensor, target: torch.Tensor,
                  dims: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """sum(p t) and sum(p) + sum(t) over `dims`, after checking the shapes."""
    _check(probs, target)
    target = target.to(probs.dtype)
    dims = tuple(dims)
    return (probs * target).sum(dims), probs.sum(dims) + target.sum(dims)


def soft_dice(probs: torch.Tensor, target: torch.Tensor, eps: float = 1.0,
              dims: Sequence[int] = (2, 3)) -> torch.Tensor:
    """(2 sum(p t) + eps) / (sum(p) + sum(t) + eps) over `dims`: one value per (N, C)."""
    inter, total = _overlap_sums(probs, target, dims)
    return (2 * inter + eps) / (total + eps)


def soft_jaccard(probs: torch.Tensor, target: torch.Tensor, eps: float = 1.0,
                 dims: Sequence[int] = (2, 3)) -> torch.Tensor:
    """(sum(p t) + eps) / (sum(p) + sum(t) - sum(p t) + eps) over `dims`: one value per (N, C)."""
    inter, total = _overlap_sums(probs, target, dims)
    return (inter + eps) / (total - inter + eps)


def soft_dice_loss(probs: torch.Tensor, target: torch.Tensor, class_weights: Sequence[float] | None = None,
                   eps: float = 1.0) -> torch.Tensor:
    """1 - the class-weighted mean of the batch-mean soft Dice, for (N, C, H, W) inputs.

    `class_weights` (C values, default all 1) are normalised to sum to 1.
    """
    if probs.ndim != 4:
        raise ValueError(f"expected (N, C, H, W) probabilities, got shape {tuple(probs.shape)}")
    per_class = soft_dice(probs, target, eps=eps).mean(0)
    if class_weights is None:
        return 1 - per_class.mean()
    w = torch.as_tensor(class_weights, dtype=probs.dtype, device=probs.device)
    if w.shape != per_class.shape or bool((w < 0).any()) or float(w.sum()) <= 0:
        raise ValueError(f"expected {per_class.numel()} non-negative class weights with a positive sum, "
                         f"got {list(class_weights)}")
    return 1 - (per_class * w).sum() / w.sum()
