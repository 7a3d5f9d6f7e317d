"""Images annotated with class boxes, read from a PASCAL VOC folder (e.g. BCCD)."""
from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from segmenter.datasets import read_image


@dataclass
class BoxedImage:
    """An image and its objects: boxes (N × 4: x0, y0, x1, y1 in pixels) and class indices (1-based)."""

    name: str
    image: np.ndarray
    boxes: np.ndarray
    classes: np.ndarray


def read_voc_boxes(path: Path, class_names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Boxes and 1-based class indices (into `class_names`, index 0 being background) of one VOC XML file."""
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as error:
        raise ValueError(f"cannot read annotation {path}: {error}") from error
    boxes, classes = [], []
    for obj in root.iter("object"):
        name = (obj.findtext("name") or "").strip()
        if name not in class_names[1:]:
            raise ValueError(f"{path}: class '{name}' is not one of {class_names[1:]}")
        box = obj.find("bndbox")
        coords = [float(box.findtext(tag)) for tag in ("xmin", "ymin", "xmax", "ymax")]
        if coords[2] <= coords[0] or coords[3] <= coords[1]:
            continue  # degenerate boxes (a few in BCCD) describe no object
        boxes.append(coords)
        classes.append(class_names.index(name))
    return np.asarray(boxes, dtype=np.float32).reshape(-1, 4), np.asarray(classes, dtype=np.int64)


def load_voc(root: str | Path, split: str, class_names: list[str], scale: float = 1.0) -> list[BoxedImage]:
    """The images of `ImageSets/Main/<split>.txt` with their boxes, resized by `scale`."""
    root = Path(root)
    listing = root / "ImageSets" / "Main" / f"{split}.txt"
    if not listing.is_file():
        raise FileNotFoundError(f"no split '{split}' in {root} (expected {listing})")
    samples = []
    for name in listing.read_text().split():
        image = read_image(root / "JPEGImages" / f"{name}.jpg")
        boxes, classes = read_voc_boxes(root / "Annotations" / f"{name}.xml", class_names)
        if scale != 1.0:
            size = (round(image.shape[1] * scale), round(image.shape[0] * scale))
            image = np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR))
            boxes = boxes * scale
        samples.append(BoxedImage(name, image, boxes, classes))
    return samples
