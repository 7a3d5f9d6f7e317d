"""Post-training INT8 quantization of a segmenter's U-Nets for OpenVINO.

NNCF (`nncf.quantize`, OpenVINO's own tool) calibrates the activation ranges of the converted network on
images like those it will see, keeps the most sensitive layers in floating point (`MIXED` preset) and
corrects the biases; the result is stored under the digest of the network's weights in
`segmenter.backend.QUANTIZED_DIR`, where the `openvino` backend finds it. NNCF is needed only here (a
development dependency), not to run the quantized model.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from segmenter import backend
from segmenter.base import Segmenter
from segmenter.bns import BNSSegmenter
from segmenter.focus_gated import FocusGated
from segmenter.inputs import padded_batch, to_channels
from segmenter.unet_segmenter import UNetSegmenter


def unets_of(model: Segmenter) -> list[UNetSegmenter]:
    """The U-Nets a segmenter runs through the backend layer (a BNS model's segmentation branch, a
    focus-gated model's two children)."""
    if isinstance(model, UNetSegmenter):
        return [model]
    if isinstance(model, BNSSegmenter):
        return [model.segmentation]
    if isinstance(model, FocusGated):
        return unets_of(model.sharp) + unets_of(model.blurry)
    raise ValueError(f"a '{model.name}' model has no U-Net to quantize")


def calibration_inputs(unet: UNetSegmenter, images: Sequence[np.ndarray]) -> list[np.ndarray]:
    """The network's inputs for `images`, as the segmenter prepares them (channels, normalisation, padding)."""
    images = [to_channels(image, unet.in_channels) for image in images]
    return [padded_batch([unet.normalization(image)], unet.network.multiple)
            for image in images if not unet.normalization.blank(image)]


def quantize(unet: UNetSegmenter, images: Sequence[np.ndarray], folder: Path | None = None) -> Path:
    """Quantize `unet`'s network, calibrated on `images`, into `folder` (default `QUANTIZED_DIR`);
    returns the model's folder. ValueError without OpenVINO, NNCF or calibration images."""
    ov = backend.openvino_module()
    if ov is None:
        raise ValueError("quantization needs the openvino package (pip install -r requirements.txt)")
    try:
        import nncf
    except ImportError as error:
        raise ValueError("quantization needs NNCF (pip install -r requirements-dev.txt)") from error
    entry = (folder or backend.QUANTIZED_DIR) / backend.network_digest(unet.network)
    if entry.exists():
        raise ValueError(f"{entry} exists: remove it to quantize this network again")
    inputs = calibration_inputs(unet, images)
    if not inputs:
        raise ValueError("no calibration images with content: quantization needs images like those the model sees")
    quantized = nncf.quantize(backend.exported_model(ov, unet.network), nncf.Dataset(inputs),
                              subset_size=len(inputs), preset=nncf.QuantizationPreset.MIXED)
    backend.write_entry(ov, quantized, entry)
    if not entry.is_dir():
        raise OSError(f"could not write the quantized model to {entry}")
    return entry
