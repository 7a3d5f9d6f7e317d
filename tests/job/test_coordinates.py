"""The one flip between image coordinates (origin top-left) and Cytomine's (origin bottom-left)."""
from __future__ import annotations

import numpy as np
from shapely import affinity
from shapely.geometry import Polygon

from cyseg.coordinates import from_cytomine, to_cytomine
from cyseg.polygons import label_polygons

HEIGHT = 100
# An "L" in the top-left corner of a 100-pixel-high image: its long leg goes down, its foot right.
L_SHAPE = Polygon([(10, 5), (20, 5), (20, 35), (40, 35), (40, 45), (10, 45)])


def test_points_move_to_the_bottom_left_origin() -> None:
    flipped = to_cytomine(L_SHAPE, HEIGHT)
    assert list(flipped.exterior.coords)[:2] == [(10, 95), (20, 95)]
    assert flipped.bounds == (10, 55, 40, 95)  # near the top of the image = high y in Cytomine
    assert flipped.area == L_SHAPE.area
    # the foot (at the bottom of the L in the image) is now below the top of the leg: lower y
    foot = to_cytomine(Polygon.from_bounds(20, 35, 40, 45), HEIGHT)
    assert foot.bounds[3] < flipped.bounds[3] and foot.within(flipped.buffer(1e-9))


def test_round_trip_is_the_identity() -> None:
    assert from_cytomine(to_cytomine(L_SHAPE, HEIGHT), HEIGHT).equals(L_SHAPE)


def test_matches_sldc_cytomines_reading_of_cytomine_geometries() -> None:
    """sldc-cytomine turns a Cytomine annotation into image coordinates with this affine map."""
    cytomine_geometry = to_cytomine(L_SHAPE, HEIGHT)
    sldc_cytomine = affinity.affine_transform(cytomine_geometry, [1, 0, 0, -1, 0, HEIGHT])
    assert from_cytomine(cytomine_geometry, HEIGHT).equals(sldc_cytomine)


def test_pixel_edges_of_a_labelled_shape() -> None:
    """The pixels of the L (rows 5-44, columns 10-39) give exactly its outline, then its flip."""
    labels = np.zeros((HEIGHT, 60), dtype=np.int32)
    labels[5:45, 10:20] = 1
    labels[35:45, 20:40] = 1
    outline = label_polygons(labels)[1]
    assert outline.equals(L_SHAPE)
    assert to_cytomine(outline, HEIGHT).bounds == (10, 55, 40, 95)
