"""The detection family: star-convex geometry, training targets, decoding, box metrics, training, loading."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import segmenter
from cyseg.synthetic import Nucleus, render
from metrics.boxes import BoxDetections, average_precision_per_class, box_iou, match_boxes
from segmenter import Checkpoint, DetectionSegmenter, Instances
from segmenter.box_datasets import load_voc, read_voc_boxes
from segmenter.detection import Decoding, HeadMaps, build_network
from segmenter.detection_targets import box_targets, label_targets
from segmenter.detection_training import DetectionTrainConfig, train_detection, transfer_weights
from segmenter.star import box_distances, label_distances, polygon_vertices, suppress, to_polygon
from transforms import Normalization

from .conftest import tiny_checkpoint


def disk(shape: tuple[int, int], centre: tuple[int, int], radius: float, value: int = 1,
         labels: np.ndarray | None = None) -> np.ndarray:
    labels = np.zeros(shape, np.int32) if labels is None else labels
    rows, cols = np.ogrid[:shape[0], :shape[1]]
    labels[(rows - centre[0]) ** 2 + (cols - centre[1]) ** 2 <= radius ** 2] = value
    return labels


def test_rays_from_a_disk_centre_measure_its_radius():
    labels = disk((64, 64), (32, 32), 10)
    distances = label_distances(labels, np.array([[32, 32]]), np.array([1]), 16, 30.0)
    assert distances.shape == (1, 16)
    assert np.all(np.abs(distances - 10.5) <= 1.0)
    polygon = to_polygon(polygon_vertices((32, 32), distances[0]))
    assert abs(polygon.area - np.pi * 10.5 ** 2) / (np.pi * 10.5 ** 2) < 0.1
    assert polygon.centroid.x == pytest.approx(32, abs=0.5)


def test_rays_stop_at_another_object_and_at_the_image_edge():
    labels = disk((40, 80), (20, 20), 8, 1)
    labels[:, 29:] = 2  # a neighbour touching on the right
    distances = label_distances(labels, np.array([[20, 20]]), np.array([1]), 4, 30.0)[0]
    assert distances[0] == pytest.approx(9, abs=1)  # +x: the neighbour starts at column 29
    edge = label_distances(np.ones((10, 10), np.int32), np.array([[5, 8]]), np.array([1]), 4, 30.0)[0]
    assert edge[0] == pytest.approx(2, abs=1)


def test_rays_to_a_box_boundary():
    distances = box_distances(np.array([[20, 10]]), np.array([[0, 10, 30, 40]]), 4)[0]  # x0, y0, x1, y1
    assert distances == pytest.approx([20, 20, 10, 10])  # +x, +y, -x, -y


def test_suppression_keeps_the_best_of_overlapping_polygons():
    a = to_polygon(polygon_vertices((20, 20), np.full(8, 6.0)))
    b = to_polygon(polygon_vertices((21, 20), np.full(8, 6.0)))
    c = to_polygon(polygon_vertices((60, 60), np.full(8, 6.0)))
    assert suppress([a, b, c], np.array([0.5, 0.9, 0.4]), 0.3) == [1, 2]


def test_label_targets_peak_at_each_centre_and_keep_touching_nuclei_apart():
    labels = disk((64, 96), (32, 30), 12, 1)
    labels = disk((64, 96), (32, 55), 12, 2, labels=labels)  # overlaps: pixels of 2 overwrite 1
    targets = label_targets(labels, 16, 48.0)
    peaks = np.argwhere(targets.heat[0] == 1.0)
    assert {int(labels[r, c]) for r, c in peaks} == {1, 2}
    assert targets.heat[0][labels == 0].max() == 0 and targets.heat[0][labels > 0].min() > 0
    assert np.all(labels[targets.ray_weight > 0] > 0)
    seam = (labels[:, :-1] != labels[:, 1:]) & (labels[:, :-1] > 0) & (labels[:, 1:] > 0)
    assert seam.any() and not targets.foreground[:, :-1][seam].any()


def test_box_targets_use_the_box_class_channel():
    targets = box_targets(np.array([[10, 10, 40, 30]], np.float32), np.array([2]), (48, 64), 3, 4)
    assert targets.heat[1].max() == pytest.approx(1.0, abs=0.06)
    assert targets.heat[0].max() == 0 and targets.heat[2].max() == 0
    assert targets.foreground is None
    assert targets.rays[:, 20, 25] == pytest.approx([15, 10, 15, 10])


@pytest.fixture(scope="module")
def detector() -> DetectionSegmenter:
    """An untrained detector with a tiny network: decoding is tested on hand-made head maps."""
    config = DetectionTrainConfig(out="unused", depth=2, n_filters=4, n_rays=8)
    network, _ = build_network(config.architecture())
    checkpoint = Checkpoint(family="detection", architecture=config.architecture(),
                            class_names=["background", "nucleus"],
                            in_channels=1, normalization=Normalization().to_dict(),
                            postprocess=Decoding().to_dict(), state_dict=network.state_dict())
    return DetectionSegmenter(checkpoint, device="cpu")


def head_maps(peaks: list[tuple[int, int, float, float]], shape=(64, 64), n_rays: int = 8) -> HeadMaps:
    """Maps with a peak (row, col, score, radius) each; foreground everywhere."""
    heat = np.zeros((1,) + shape, np.float32)
    rays = np.zeros((n_rays,) + shape, np.float32)
    for row, col, score, radius in peaks:
        heat[0, row, col] = score
        rays[:, row, col] = radius
    return HeadMaps(heat, rays, np.ones(shape, np.float32), np.array([(r, c) for r, c, _, _ in peaks]).reshape(-1, 2))


def test_decoding_turns_peaks_into_scored_objects(detector):
    found = detector.instances_from_maps(head_maps([(20, 20, 0.9, 6), (45, 40, 0.6, 8), (5, 60, 0.1, 4)]))
    assert isinstance(found, Instances) and len(found) == 2  # the 0.1 peak is under the threshold
    assert sorted(found.scores.tolist()) == pytest.approx([0.6, 0.9])
    assert found.classes.tolist() == [1, 1]
    assert found.labels[20, 20] > 0 and found.labels[45, 40] > 0 and found.labels[20, 20] != found.labels[45, 40]
    assert found.scores[found.labels[20, 20] - 1] == pytest.approx(0.9)


def test_decoding_suppresses_a_second_peak_on_the_same_object(detector):
    found = detector.instances_from_maps(head_maps([(30, 30, 0.9, 8), (31, 31, 0.5, 8)]))
    assert len(found) == 1 and found.scores[0] == pytest.approx(0.9)


def test_decoding_trims_objects_to_the_foreground(detector):
    maps = head_maps([(30, 30, 0.9, 10)])
    maps.foreground[:, 30:] = 0.0
    trimmed = detector.instances_from_maps(maps)
    kept = detector.instances_from_maps(maps, Decoding(foreground_refine=False))
    assert (trimmed.labels[:, 30:] == 0).all() and (kept.labels[:, 31:] > 0).any()


def test_class_mask_separates_touching_objects():
    labels = np.zeros((10, 10), np.int32)
    labels[:, :5], labels[:, 5:] = 1, 2
    mask = Instances(labels, np.array([0.9, 0.8]), np.array([1, 1])).class_mask()
    assert (mask[:, 4:6] == 0).any() and mask[0, 0] == 1 and mask[0, 9] == 1


def test_transfer_spreads_a_grey_first_layer_over_colour_channels():
    source = tiny_checkpoint()
    network, _ = build_network(DetectionTrainConfig(out="unused", in_channels=3, depth=2, n_filters=4).architecture())
    copied = transfer_weights(network, source)
    first = "encoder.0.0.weight"
    assert first in copied and "head.weight" in copied
    state = network.state_dict()
    assert torch.allclose(state[first].sum(dim=1, keepdim=True), source.state_dict[first])
    assert torch.equal(state["encoder.1.0.weight"], source.state_dict["encoder.1.0.weight"])
    heads = network.heads  # the U-Net's one output seeds the probability and foreground channels, not the rays
    for channel in (0, heads.foreground):
        assert torch.equal(state["head.weight"][channel], source.state_dict["head.weight"][0])
    assert not torch.equal(state["head.weight"][heads.rays.start], source.state_dict["head.weight"][0])


def test_training_writes_a_checkpoint_that_loads_by_path(tmp_path, synthetic_dataset):
    config = DetectionTrainConfig(out=str(tmp_path / "det.pt"), data=[str(synthetic_dataset)], depth=2, n_filters=4,
                                  n_rays=8, crop=64, batch_size=2, epochs=2, steps_per_epoch=2, val_fraction=0.25)
    trained = train_detection(config, progress=False)
    assert trained.family == "detection" and "ap50" in trained.metrics["val"]
    assert [h["epoch"] for h in trained.training["history"]] == [1, 2]
    model = segmenter.load(tmp_path / "det.pt", device="cpu")
    image = render((64, 80), [Nucleus(30, 30, 8, 8)], np.random.default_rng(0))[0]
    masks = model.segment_batch(np.stack([image, image]))
    assert masks.shape == (2, 64, 80) and masks.dtype == np.int32
    proba = model.predict_proba(image)
    assert proba.shape == (2, 64, 80) and np.allclose(proba.sum(axis=0), 1.0)


def test_box_metrics():
    assert box_iou([[0, 0, 10, 10]], [[5, 0, 15, 10]])[0, 0] == pytest.approx(1 / 3)
    hits = match_boxes(np.array([[0, 0, 10, 10], [1, 0, 11, 10]]), [0.5, 0.9], np.array([[0, 0, 10, 10]]))
    assert hits.tolist() == [False, True]  # the better score takes the one true box
    perfect = BoxDetections(np.array([[0, 0, 10, 10], [20, 20, 30, 30]]), np.array([0.9, 0.8]), np.array([1, 2]),
                            np.array([[0, 0, 10, 10], [20, 20, 30, 30]]), np.array([1, 2]))
    ap = average_precision_per_class([perfect], ["background", "RBC", "WBC"])
    assert ap == {"RBC": 1.0, "WBC": 1.0, "mAP": 1.0}
    wrong_class = BoxDetections(perfect.boxes, perfect.scores, np.array([2, 1]), perfect.true_boxes, perfect.true_classes)
    assert average_precision_per_class([wrong_class], ["background", "RBC", "WBC"])["mAP"] == 0.0


VOC_XML = """<annotation><object><name>{name}</name><bndbox><xmin>2</xmin><ymin>3</ymin><xmax>12</xmax>
<ymax>9</ymax></bndbox></object></annotation>"""


def test_voc_folders_are_read_and_bad_classes_named(tmp_path):
    from PIL import Image

    for folder in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (tmp_path / folder).mkdir(parents=True)
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(tmp_path / "JPEGImages" / "a.jpg")
    (tmp_path / "Annotations" / "a.xml").write_text(VOC_XML.format(name="WBC"))
    (tmp_path / "ImageSets" / "Main" / "train.txt").write_text("a\n")
    [sample] = load_voc(tmp_path, "train", ["background", "RBC", "WBC"], scale=0.5)
    assert sample.image.shape == (10, 15, 3) and sample.classes.tolist() == [2]
    assert sample.boxes.tolist() == [[1.0, 1.5, 6.0, 4.5]]
    (tmp_path / "Annotations" / "a.xml").write_text(VOC_XML.format(name="Monocyte"))
    with pytest.raises(ValueError, match="class 'Monocyte' is not one of"):
        read_voc_boxes(tmp_path / "Annotations" / "a.xml", ["background", "RBC", "WBC"])
    with pytest.raises(FileNotFoundError, match="no split 'test'"):
        load_voc(tmp_path, "test", ["background", "RBC"])


def test_shipped_detection_model_finds_nuclei(shared_data, tmp_path):
    import tifffile

    from cyseg.cli import main
    from segmenter.datasets import load_labelled
    from segmenter.detection_training import label_ap

    model = segmenter.load("detection", device="cpu")
    samples = load_labelled(shared_data / "bbbc039" / "val")[:4]
    assert label_ap(model, samples) > 0.7  # 0.785 on all of bbbc039/val (model card)
    image = shared_data / "bbbc039" / "val" / "images" / f"{samples[0].name}.tif"
    assert main(["segment", str(image), "--model", "detection", "--out", str(tmp_path)]) == 0
    labels = tifffile.imread(tmp_path / f"{samples[0].name}.tif")
    assert labels.dtype == np.uint16 and labels.shape == samples[0].labels.shape
    assert abs(int(labels.max()) - int(samples[0].labels.max())) < 0.2 * samples[0].labels.max()
