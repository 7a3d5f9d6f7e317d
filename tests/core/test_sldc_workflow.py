"""A real SLDC workflow drives the U-Net segmenter over an in-memory image."""
import numpy as np
import pytest
from shapely.geometry import Point
from sldc import Image, SSLWorkflowBuilder

import segmenter
from cyseg.synthetic import random_nuclei, render


class InMemoryImage(Image):
    """An sldc.Image over a numpy array (H×W×C)."""

    def __init__(self, array: np.ndarray):
        self.array = array

    @property
    def height(self):
        return self.array.shape[0]

    @property
    def width(self):
        return self.array.shape[1]

    @property
    def channels(self):
        return self.array.shape[2]

    @property
    def np_image(self):
        return self.array


@pytest.fixture(scope="module")
def nuclei_image():
    rng = np.random.default_rng(5)
    nuclei = random_nuclei((250, 370), 30, rng)
    image, labels = render((250, 370), nuclei, rng)
    return np.repeat(image[..., None], 3, axis=2), nuclei


def test_sldc_workflow_finds_the_nuclei(nuclei_image):
    # Abutting tiles: SLDC's semantic merger joins the halves of nuclei cut by a seam. (With
    # overlapping tiles it leaves fragments; instance-aware merging is cyseg's own, not SLDC's.)
    array, nuclei = nuclei_image
    model = segmenter.load("default")
    workflow = (SSLWorkflowBuilder().set_segmenter(model).set_tile_size(128, 128).set_overlap(0)
                .set_background_class(0).set_distance_tolerance(1).get())
    results = workflow.process(InMemoryImage(array))
    polygons = [polygon for polygon in results.polygons]
    found = sum(any(p.buffer(2).contains(Point(n.x, n.y)) for p in polygons) for n in nuclei)
    assert found >= 0.9 * len(nuclei)
    assert 0.8 * len(nuclei) <= len(polygons) <= 1.2 * len(nuclei)
