"""FocusLiteNN, a one-convolution focus-quality network, and the focus classifier built on it.

After Wang, Hosseini, Miles, Plataniotis and Wang, "FocusLiteNN: High Efficiency Focus Quality
Assessment for Digital Pathology", MICCAI 2020 (arXiv:2007.06565): `k` convolution kernels of
7×7 at stride 5 over the RGB patch; with one kernel the patch score is the minimum of the
response map (148 parameters), with several kernels the minimum and the maximum of each map
are combined by a learned weighted sum. Written here from the paper's description; the
weights are trained by this project (`scripts/train_focus.py`), not the authors'.

Conventions, shared by every place a focus score appears (JSON, heat maps, the gated segmenter):

- **score: higher = blurrier.** Shipped models are calibrated so that the score estimates the
  defocus radius in pixels of the optical model in `transforms.defocus` (0 = in focus).
- **blurry** means score > threshold (stored in the checkpoint, overridable).
- **input**: grey or RGB (alpha dropped), any integer or float type; grey is fed as RGB with
  equal channels. Each window is scaled to [0, 1] between its own darkest and brightest
  samples (one per 5×5 cell, over all channels), so a score measures edge sharpness relative to
  local contrast and 8-bit, 16-bit and float inputs look alike.
- **windows**: an input is scored on `patch_size`-pixel windows (the size the model was trained
  and calibrated on) on a grid with a stride (a multiple of 5). Only windows with *content*
  count (`ContentRule`): empty glass or background, a few specks of dust, or a field of pure
  noise say nothing about focus. The input's score is the median over windows with content;
  an input without content scores NaN and is not blurry.
"""
from __future__ import annotations

import functools
import math
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, NamedTuple, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from segmenter.base import resolve_device
from segmenter.checkpoint import Checkpoint, ModelLoadError
from segmenter.focus_windows import CENTRE, KERNEL, STRIDE, centre_statistics, response_extrema
from segmenter.inputs import as_image_list
from segmenter.registry import model_path

try:  # FocusLiteNN's convolution of 8-bit RGB in C, built at install (setup.py); optional
    from segmenter import _focus_conv
except ImportError:
    _focus_conv = None

FAMILY = "focuslitenn"
DEFAULT_MODEL = "focus"
#: Pixels sampled per input (at most) to estimate its intensity range and noise.
STATS_SAMPLES = 2 ** 12
#: Pixels scored in one pass (same-shape images are batched up to this).
BATCH_PIXELS = 2 ** 20


def response_cells(pixels: int) -> int:
    """Response-map cells along an axis of `pixels` (at least one kernel)."""
    return (pixels - KERNEL) // STRIDE + 1


def window_cells(size: int) -> int:
    """Response-map cells in a window of `size` pixels; `size` must be 7 + 5·n."""
    if size < KERNEL or (size - KERNEL) % STRIDE:
        raise ValueError(f"window size {size} px must be {KERNEL} + {STRIDE}·n (e.g. 252)")
    return response_cells(size)


def stride_cells(stride: int) -> int:
    """Response-map cells in a window stride of `stride` pixels (a positive multiple of 5)."""
    if stride <= 0 or stride % STRIDE:
        raise ValueError(f"window stride {stride} px must be a positive multiple of {STRIDE}")
    return stride // STRIDE


@functools.cache
def native_convolution() -> bool:
    """Whether 8-bit RGB images are convolved by cyseg's compiled kernel (`segmenter/_focus_conv.c`:
    built at install, and this CPU has AVX-512 VBMI and VNNI) rather than by PyTorch on a float copy."""
    return _focus_conv is not None and _focus_conv.supported()


@functools.cache
def _helpers() -> ThreadPoolExecutor:
    """The threads that share the compiled convolution with the caller (started on first use)."""
    return ThreadPoolExecutor(max(1, (os.cpu_count() or 1) - 1), thread_name_prefix="focus-convolution")


class FocusLiteNN(nn.Module):
    """One convolution (`kernels` × 7×7, stride 5) and min (k = 1) or min+max (k > 1) pooling.

    `forward` scores B×3×H×W windows already scaled by `normalize_window`; `window_extrema`
    gives the pooled responses of all the windows of raw images at once.

    Raw images are convolved as they lie in memory: rows of W·C interleaved samples with the
    kernels laid out the same way (7 × 7·C, stride 5 × 5·C), which equals the convolution over
    channels without transposing the image; a grey image uses the kernels summed over the
    colour channels (the same as three equal channels). 8-bit RGB on the CPU goes to the compiled
    kernel where it runs (`native_convolution`), anything else to PyTorch on a float copy.
    """

    def __init__(self, kernels: int = 1, in_channels: int = 3):
        super().__init__()
        if kernels < 1:
            raise ValueError(f"FocusLiteNN needs at least one kernel, got {kernels}")
        self.kernels = kernels
        self.conv = nn.Conv2d(in_channels, kernels, KERNEL, stride=STRIDE)
        self.combine = nn.Linear(2 * kernels, 1) if kernels > 1 else None

    def head(self, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        """Scores from each kernel's minimum and maximum response (…×k each → …)."""
        if self.combine is None:
            return low[..., 0]
        return self.combine(torch.cat([low, high], dim=-1))[..., 0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        response = self.conv(x)
        return self.head(response.amin(dim=(2, 3)), response.amax(dim=(2, 3)))

    def responses(self, images: Sequence[np.ndarray], native: bool | None = None) -> np.ndarray:
        """Response maps without bias (B×k×h×w float32) of H×W×C images of one shape (C = 1 or 3,
        uint8 or float32); `native` (default: `native_convolution()`) allows the compiled kernel."""
        return self.start_responses(images, native)()

    def start_responses(self, images: Sequence[np.ndarray],
                        native: bool | None = None) -> Callable[[], np.ndarray]:
        """`responses`, started: the compiled kernel runs on helper threads (one fewer than
        PyTorch's) while the caller goes on; the returned function takes its share of the rows
        still to do and returns the maps."""
        height, width, channels = images[0].shape
        weight = self.weight_for(channels)
        interleaved = weight.detach().permute(0, 2, 3, 1).reshape(weight.shape[0], KERNEL, -1)
        native = native_convolution() if native is None else native
        if not (native and weight.device.type == "cpu" and images[0].dtype == np.uint8 and channels == 3):
            def convolve_in_torch() -> np.ndarray:
                rows = _as_batch(images).to(weight.device).reshape(len(images), 1, height, -1)
                maps = F.conv2d(rows, interleaved[:, None], stride=(STRIDE, STRIDE * channels))
                return maps.float().cpu().numpy()
            return convolve_in_torch

        taps = interleaved.float().contiguous().numpy()
        images = [np.ascontiguousarray(image) for image in images]
        out = np.empty((len(images), self.kernels, response_cells(height), response_cells(width)), np.float32)
        taken = np.zeros((len(images), 1), np.int64)  # rows handed out, per image, shared by the threads

        def convolve() -> None:
            for image, maps, rows in zip(images, out, taken):
                _focus_conv.responses(image, height, width, taps, self.kernels, maps, rows)

        helping = [_helpers().submit(convolve) for _ in range(torch.get_num_threads() - 1)]

        def finish() -> np.ndarray:
            convolve()
            for helper in helping:
                helper.result()
            return out
        return finish

    def weight_for(self, channels: int) -> torch.Tensor:
        """The kernels for inputs of `channels` (3: as they are; 1: summed over the colour
        channels, which sees a grey image as RGB with equal channels)."""
        return self.conv.weight.sum(dim=1, keepdim=True) if channels == 1 else self.conv.weight

    def window_extrema(self, maps: np.ndarray, channels: int, offset: np.ndarray, scale: np.ndarray,
                       layout: "WindowLayout") -> tuple[np.ndarray, np.ndarray]:
        """Per-window min and max response (B×ny×nx×k each) from the `responses` of raw images of
        `channels`, each window scaled as `(raw - offset) * scale` (offset, scale: B×ny×nx, scale > 0).

        The scaling is applied after pooling: it is affine and increasing within a window, so
        it commutes with min and max.
        """
        low, high = response_extrema(maps, *layout)
        sums = self.weight_for(channels).sum(dim=(1, 2, 3)).float().cpu().numpy()
        bias = self.conv.bias.float().cpu().numpy()
        offset, scale = offset[..., None], scale[..., None]
        return tuple((v - offset * sums) * scale + bias for v in (low, high))


class WindowLayout(NamedTuple):
    """Where the windows of an input lie on its response map, in cells: rows and columns where
    they start, and their side."""

    y_starts: np.ndarray
    x_starts: np.ndarray
    cells: int

    @classmethod
    def of(cls, height: int, width: int, window: int, stride: int) -> "WindowLayout":
        """The windows of `window` px every `stride` px (see `window_starts`) of a height×width input."""
        return cls(*(window_starts(size, window, stride) // STRIDE for size in (height, width)),
                   window_cells(window))


def window_starts(size: int, window: int, stride: int) -> np.ndarray:
    """Where the windows along an axis of `size` px start: every `stride` px while they fit,
    then one more ending at the last response cell when the regular ones leave a strip; an
    input smaller than a window is padded (by reflection) to one window."""
    cells, step = window_cells(window), stride_cells(stride)
    last = max(0, response_cells(size) - cells)
    starts = list(range(0, last + 1, step))
    if starts[-1] != last:
        starts.append(last)
    return STRIDE * np.array(starts)


def grid_shape(height: int, width: int, window: int, stride: int) -> tuple[int, int]:
    """Rows and columns of the windows of a height×width input."""
    return len(window_starts(height, window, stride)), len(window_starts(width, window, stride))


def sample_centres(x: torch.Tensor) -> torch.Tensor:
    """The centre pixel of every response cell of …×H×W images (one sample per 5×5 pixels)."""
    return x[..., CENTRE::STRIDE, CENTRE::STRIDE][..., :response_cells(x.shape[-2]), :response_cells(x.shape[-1])]


def normalize_window(window: torch.Tensor) -> torch.Tensor:
    """A C×H×W window scaled as the classifier scales it: darkest centre sample → 0, brightest → 1."""
    centres = sample_centres(window)
    low, high = centres.min(), centres.max()
    return (window - low) / (high - low).clamp_min(1e-12)


@dataclass(frozen=True)
class InputStats:
    """An input's intensity range (percentiles over all channels) and pixel noise (std)."""

    low: float
    high: float
    noise: float

    @property
    def range(self) -> float:
        return max(self.high - self.low, 1e-12)


@dataclass(frozen=True)
class ContentRule:
    """When a window has content, from its centre samples: their span (darkest to brightest,
    over channels) exceeds `min_contrast` times the input's range and `min_snr` times the
    input's noise, and the standard deviation of their grey levels exceeds `min_spread` times
    the range (a few specks on glass have a span but no spread)."""

    min_contrast: float = 0.1
    min_snr: float = 15.0
    min_spread: float = 0.05

    def windows(self, image: np.ndarray, stats: InputStats,
                layout: WindowLayout) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Darkest and brightest centre sample and content (ny×nx each) of the windows of an
        H×W×C image with its `stats`."""
        bottom, top, _, variance = centre_statistics(image, *layout, stats.low, stats.range)
        content = ((top - bottom > max(self.min_contrast * stats.range, self.min_snr * stats.noise))
                   & (variance > self.min_spread ** 2))
        return bottom, top, content


def focus_input(image: np.ndarray) -> np.ndarray:
    """An H×W×C view (C = 1 grey or 3 RGB, alpha dropped, dtype kept) of a finite image at least
    one kernel in size; anything else is a ValueError."""
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3:
        raise ValueError(f"expected an H×W or H×W×C image, got shape {image.shape}")
    if image.shape[2] == 4:  # RGBA from a slide reader: alpha carries no signal
        image = image[..., :3]
    if image.shape[2] not in (1, 3):
        raise ValueError(f"expected 1 (grey) or 3 (RGB) channels, got {image.shape[2]} (shape {image.shape})")
    if not (np.issubdtype(image.dtype, np.integer) or np.issubdtype(image.dtype, np.floating)
            or image.dtype == bool):
        raise ValueError(f"unsupported pixel type {image.dtype}")
    if np.issubdtype(image.dtype, np.floating) and not np.isfinite(image).all():
        raise ValueError(f"image of {image.shape[0]}×{image.shape[1]} px has NaN or infinite pixels")
    if image.shape[0] < KERNEL or image.shape[1] < KERNEL:
        raise ValueError(f"image of {image.shape[0]}×{image.shape[1]} px is smaller than the "
                         f"{KERNEL}×{KERNEL} focus kernel")
    return image


def input_stats(image: np.ndarray, percentiles: tuple[float, float] = (1.0, 99.8)) -> InputStats:
    """Range and noise of an H×W×C image from a regular subsample of at most `STATS_SAMPLES`
    pixels; noise = robust std (MAD) of horizontal neighbour differences / √2."""
    step = max(1, math.ceil(math.sqrt(image.shape[0] * image.shape[1] / STATS_SAMPLES)))
    sample = image[::step, ::step]
    low, high = _percentiles(sample, percentiles)
    neighbours = image[::step, 1::step]
    width = min(sample.shape[1], neighbours.shape[1])
    if image.dtype == np.uint8:  # 8-bit differences stay 8-bit: `_percentiles` counts them
        difference = np.abs(neighbours[:, :width].astype(np.int16) - sample[:, :width]).astype(np.uint8)
    else:
        difference = np.abs(neighbours[:, :width].astype(np.float32) - sample[:, :width])
    noise = 1.4826 * _percentiles(difference, (50.0,))[0] / math.sqrt(2) if difference.size else 0.0
    return InputStats(low, high, noise)


def _percentiles(values: np.ndarray, percentiles: Sequence[float]) -> list[float]:
    """`np.percentile` (linear interpolation) of the few thousand samples of `input_stats`:
    order statistics from a histogram for 8-bit values, else from one sort; both several
    times faster than `np.percentile`."""
    ranks = np.asarray(percentiles, dtype=np.float64) / 100 * (values.size - 1)
    below = np.floor(ranks).astype(np.int64)
    above = np.minimum(below + 1, values.size - 1)
    if values.dtype == np.uint8:  # the k-th smallest is the first level with more than k values at or below it
        at_or_below = np.cumsum(np.bincount(values.ravel(), minlength=256))
        lower, upper = (np.searchsorted(at_or_below, k, side="right").astype(np.float64) for k in (below, above))
    else:
        ordered = np.sort(values, axis=None).astype(np.float64)
        lower, upper = ordered[below], ordered[above]
    return [float(v) for v in lower + (upper - lower) * (ranks - below)]


def _padded(image: np.ndarray, size: int) -> np.ndarray:
    """A validated H×W×C image as uint8 or float32 (other types converted), reflect-padded at the
    bottom and right to at least size×size."""
    if image.dtype not in (np.uint8, np.float32) or any(s < 0 for s in image.strides):
        image = image.astype(np.float32)
    pad_h, pad_w = max(0, size - image.shape[0]), max(0, size - image.shape[1])
    if pad_h or pad_w:
        mode = "reflect" if pad_h < image.shape[0] and pad_w < image.shape[1] else "edge"
        image = np.pad(image, ((0, pad_h), (0, pad_w), (0, 0)), mode=mode)
    return image


def _as_batch(images: Sequence[np.ndarray]) -> torch.Tensor:
    """H×W×C images of one shape as a B×H×W×C float32 CPU tensor (channels last, as the images
    lie in memory)."""
    raw = torch.empty((len(images), *images[0].shape), dtype=torch.float32)
    with warnings.catch_warnings():  # read-only arrays (from Pillow) are fine: the tensor is only read
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        for index, image in enumerate(images):
            raw[index].copy_(torch.from_numpy(image))
    return raw


@dataclass
class FocusGrid:
    """Focus scores of the windows of one height×width input, on a grid.

    Window (row, col) covers pixels [y_starts[row], + window) × [x_starts[col], + window): every
    `stride` px, plus one end-aligned window per axis where the regular ones leave a strip
    (see `window_starts`).
    """

    scores: np.ndarray  # rows × cols, float32, higher = blurrier
    content: np.ndarray  # rows × cols, bool: the window is not empty background or noise
    window: int
    stride: int
    threshold: float
    height: int
    width: int

    @property
    def score(self) -> float:
        """The input's score: median over windows with content; NaN when none has content."""
        return float(np.median(self.scores[self.content])) if self.content.any() else math.nan

    @property
    def blurry(self) -> bool:
        return self.score > self.threshold

    @property
    def blurry_windows(self) -> np.ndarray:
        """Windows with content that score above the threshold."""
        return self.content & (self.scores > self.threshold)

    def starts(self) -> tuple[np.ndarray, np.ndarray]:
        """Window starts (y, x) in pixels."""
        return (window_starts(self.height, self.window, self.stride),
                window_starts(self.width, self.window, self.stride))

    def edges(self) -> tuple[np.ndarray, np.ndarray]:
        """Cell boundaries (y, x) in pixels: each pixel belongs to the cell of the nearest
        window centre, so cells partition the input."""
        return tuple(np.concatenate([[0.0], (starts[1:] + starts[:-1] + self.window) / 2, [size]])
                     for starts, size in zip(self.starts(), (self.height, self.width)))


class FocusClassifier:
    """A FocusLiteNN with its window size, content rule and threshold; see the module docstring."""

    def __init__(self, network: FocusLiteNN, threshold: float, patch_size: int = 252,
                 content: ContentRule = ContentRule(), percentiles: tuple[float, float] = (1.0, 99.8),
                 device: str | torch.device | None = None):
        self.device = resolve_device(device)
        self.network = network.to(self.device).eval()
        self.threshold = float(threshold)
        self.patch_size = patch_size
        self.cells = window_cells(patch_size)
        #: Windows that tile the response map without overlap (they share the kernel's 2 px).
        self.default_stride = STRIDE * self.cells
        self.content = content
        self.percentiles = percentiles

    @classmethod
    def from_checkpoint(cls, checkpoint: Checkpoint, device: str | torch.device | None = None,
                        threshold: float | None = None) -> "FocusClassifier":
        if checkpoint.family != FAMILY:
            raise ModelLoadError(f"a '{checkpoint.family}' model is not a focus classifier "
                                 f"(expected family '{FAMILY}')")
        network = FocusLiteNN(**checkpoint.architecture)
        network.load_state_dict(checkpoint.state_dict)
        post = checkpoint.postprocess
        return cls(network, checkpoint.threshold if threshold is None else threshold,
                   patch_size=post["patch_size"], content=ContentRule(**post["content"]),
                   percentiles=tuple(checkpoint.normalization["range_percentiles"]), device=device)

    def grid(self, image: np.ndarray, stride: int | None = None,
             value_range: tuple[float, float] | None = None) -> FocusGrid:
        """The window grid of one image, by default at `default_stride`; `value_range` (low,
        high) replaces the image's own percentiles in the content rule (a slide region uses the
        whole slide's)."""
        return self.grids([image], stride, value_range)[0]

    def grids(self, images: Sequence[np.ndarray], stride: int | None = None,
              value_range: tuple[float, float] | None = None) -> list[FocusGrid]:
        """The window grids of several images (see `grid`); images of one shape are scored
        together, up to `BATCH_PIXELS` at a time."""
        stride = stride or self.default_stride
        stride_cells(stride)  # a bad stride fails before any work
        images = [focus_input(image) for image in images]
        groups: dict[tuple, list[int]] = {}
        for index, image in enumerate(images):
            groups.setdefault(image.shape, []).append(index)
        grids: list[FocusGrid | None] = [None] * len(images)
        for shape, members in groups.items():
            per_pass = max(1, BATCH_PIXELS // (shape[0] * shape[1]))
            for start in range(0, len(members), per_pass):
                chunk = members[start:start + per_pass]
                found = self._score_same_shape([images[i] for i in chunk], stride, value_range)
                for index, grid in zip(chunk, found):
                    grids[index] = grid
        return grids

    def _score_same_shape(self, images: list[np.ndarray], stride: int,
                          value_range: tuple[float, float] | None) -> list[FocusGrid]:
        """The grids of validated images of one shape, in one pass; the statistics of the content
        rule are computed while the convolution runs."""
        height, width, channels = images[0].shape
        padded = [_padded(image, self.patch_size) for image in images]
        layout = WindowLayout.of(*padded[0].shape[:2], self.patch_size, stride)
        with torch.inference_mode():
            responses = self.network.start_responses(padded)
            stats = [input_stats(image, self.percentiles) for image in images]
            if value_range is not None:
                stats = [InputStats(*value_range, s.noise) for s in stats]
            bottom, top, content = (np.stack(v) for v in zip(*(self.content.windows(image, s, layout)
                                                             for image, s in zip(padded, stats))))
            span = top - bottom
            scale = np.divide(1, span, out=np.zeros_like(span), where=span > 0)
            low, high = self.network.window_extrema(responses(), channels, bottom, scale, layout)
            scores = self.network.head(*(torch.from_numpy(v).to(self.device) for v in (low, high)))
            scores = scores.float().cpu().numpy()
        return [FocusGrid(scores=scores[i], content=content[i], window=self.patch_size, stride=stride,
                          threshold=self.threshold, height=height, width=width) for i in range(len(images))]

    def score_batch(self, images: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        """One score per image (float32; higher = blurrier; NaN for an image without content)."""
        return np.array([grid.score for grid in self.grids(as_image_list(images))], dtype=np.float32)

    def score(self, image: np.ndarray) -> float:
        return float(self.score_batch([image])[0])

    def classify_batch(self, images: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        """Per image, True when it is blurry (score > threshold; never for an image without content)."""
        return self.score_batch(images) > self.threshold


def focus_checkpoint(network: FocusLiteNN, threshold: float, patch_size: int, content: ContentRule,
                     training: dict[str, Any], metrics: dict[str, Any],
                     percentiles: tuple[float, float] = (1.0, 99.8)) -> Checkpoint:
    """The checkpoint of a focus classifier (family 'focuslitenn', classes sharp/blurry)."""
    window_cells(patch_size)
    return Checkpoint(
        family=FAMILY, architecture=dict(kernels=network.kernels, in_channels=network.conv.in_channels),
        class_names=["sharp", "blurry"], in_channels=network.conv.in_channels,
        normalization=dict(kind="window-min-max", range_percentiles=list(percentiles)),
        state_dict={k: v.detach().cpu().clone() for k, v in network.state_dict().items()},
        threshold=float(threshold),
        postprocess=dict(patch_size=patch_size, content=asdict(content)),
        training=training, metrics=metrics)


def load_focus_classifier(name_or_path: str | Path = DEFAULT_MODEL, device: str | torch.device | None = None,
                          threshold: float | None = None) -> FocusClassifier:
    """A focus classifier from a shipped model name or a checkpoint path."""
    return FocusClassifier.from_checkpoint(Checkpoint.load(model_path(name_or_path)), device=device,
                                           threshold=threshold)
