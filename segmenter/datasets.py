"""Reading images and instance labels from folders laid out as `DIR/images` + `DIR/labels`."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image, UnidentifiedImageError

IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg")


def read_image(path: str | Path) -> np.ndarray:
    """An image file as a numpy array (TIFF via tifffile, others via Pillow), dtype preserved."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            image = tifffile.imread(path)
        else:
            with Image.open(path) as handle:
                image = np.asarray(handle)
    except (tifffile.TiffFileError, UnidentifiedImageError, OSError, ValueError) as error:
        raise ValueError(f"cannot read image {path}: {error}") from error
    if image.ndim == 3 and image.shape[0] in (1, 3, 4) and image.shape[2] not in (1, 3, 4):
        image = np.moveaxis(image, 0, -1)  # channel-first TIFF
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if image.size == 0:
        raise ValueError(f"cannot read image {path}: it holds no pixels (corrupt or empty file)")
    return image


def list_images(folder: str | Path) -> list[Path]:
    """Image files in a folder, sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"folder not found: {folder}")
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


@dataclass
class LabelledImage:
    name: str
    image: np.ndarray
    labels: np.ndarray


def find_pairs(images_dir: str | Path, labels_dir: str | Path) -> list[tuple[Path, Path]]:
    """(image, label) file pairs, matched by file stem."""
    labels = {p.stem: p for p in list_images(labels_dir)}
    pairs = [(image, labels[image.stem]) for image in list_images(images_dir) if image.stem in labels]
    if not pairs:
        raise ValueError(f"no image/label pairs in {images_dir} and {labels_dir} "
                         f"(label files must have the images' names)")
    return pairs


def load_labelled(folder: str | Path, labels_dir: str | Path | None = None) -> list[LabelledImage]:
    """Every image with its instance labels, from `folder/images` + `folder/labels`, or from
    `folder` + `labels_dir`; image and label sizes must agree."""
    images_dir = Path(folder) if labels_dir else Path(folder) / "images"
    labels_dir = labels_dir or Path(folder) / "labels"
    samples = []
    for image_path, label_path in find_pairs(images_dir, labels_dir):
        image, labels = read_image(image_path), read_image(label_path)
        if labels.ndim != 2 or labels.shape != image.shape[:2]:
            raise ValueError(f"labels {label_path} have shape {labels.shape}, "
                             f"image {image_path} has {image.shape}")
        samples.append(LabelledImage(image_path.stem, image, labels.astype(np.int32)))
    return samples
