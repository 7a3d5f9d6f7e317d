"""Small models and synthetic labelled images for the core tests."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from cyseg.synthetic import random_nuclei, render
from segmenter import Checkpoint
from segmenter.unet import UNet
from transforms import Normalization, PostProcess


def tiny_checkpoint(in_channels: int = 1, seed: int = 0) -> Checkpoint:
    """An untrained two-level U-Net with 4 filters: fast, deterministic, shape-correct."""
    torch.manual_seed(seed)
    architecture = dict(in_channels=in_channels, out_channels=1, depth=2, n_filters=4, batch_norm=True)
    network = UNet(**architecture).eval()
    return Checkpoint(family="unet", architecture=architecture, class_names=["background", "nucleus"],
                      in_channels=in_channels, normalization=Normalization().to_dict(),
                      postprocess=PostProcess().to_dict(), state_dict=network.state_dict(),
                      training={"data": "none (untrained test model)"}, metrics={"val_f1": 0.0})


@pytest.fixture
def checkpoint() -> Checkpoint:
    return tiny_checkpoint()


def write_dataset(folder: Path, count: int, shape=(160, 200), seed: int = 0) -> Path:
    """`count` synthetic images (PNG) with uint16 instance labels (TIFF) in folder/images, /labels."""
    rng = np.random.default_rng(seed)
    (folder / "images").mkdir(parents=True)
    (folder / "labels").mkdir()
    for index in range(count):
        image, labels = render(shape, random_nuclei(shape, 12, rng), rng)
        Image.fromarray(image).save(folder / "images" / f"field{index}.png")
        tifffile.imwrite(folder / "labels" / f"field{index}.tif", labels)
    return folder


@pytest.fixture(scope="session")
def synthetic_dataset(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("synthetic"), 4)
