"""`cyseg dataset` through the embedded server and the real client: crops, masks, splits, selection, errors."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
from cytomine import Cytomine
from cytomine.models import ImageInstance
from PIL import Image
from shapely import affinity

from cyseg.cli import main
from cyseg.coordinates import to_cytomine
from cyseg.dataset import DatasetConfig, Selection, build_dataset, split_slides
from cyseg.errors import CysegError
from cyseg.polygons import label_polygons
from cyseg.server.geometry import measures
from cyseg.server.records import NewAnnotation
from cyseg.server.runner import write_credentials
from .conftest import EXPERT_COUNT, Project, Slide


def read(path: Path) -> np.ndarray:
    with Image.open(path) as picture:
        return np.asarray(picture.convert("RGB"))


def server_window(image_id: int, crop: dict, folder: Path) -> np.ndarray:
    """The server's window for a crop of the manifest (its box at full resolution, scaled down by zoom)."""
    factor = 2 ** crop["zoom"]
    path = folder / f"window-{crop['name']}.png"
    assert ImageInstance().fetch(image_id).window(crop["x"] * factor, crop["y"] * factor, crop["width"] * factor,
                                                  crop["height"] * factor, dest_pattern=str(path),
                                                  zoom=crop["zoom"] or None)
    return read(path)


def kept_labels(slide: Slide, annotation_ids: list[int] | None = None) -> np.ndarray:
    """The slide's labels reduced to the annotated nuclei (all of them, or those of `annotation_ids`)."""
    ids = [slide.annotated[a] for a in (annotation_ids or slide.annotated)]
    return np.where(np.isin(slide.labels, ids), slide.labels, 0)


def same_instances(found: np.ndarray, expected: np.ndarray) -> bool:
    """Equal label images up to the numbering of the instances."""
    if not np.array_equal(found > 0, expected > 0):
        return False
    pairs = np.unique(np.stack([found[found > 0], expected[found > 0]]), axis=1)
    return len(set(pairs[0])) == len(set(pairs[1])) == pairs.shape[1]


def test_crops_are_the_servers_windows_and_masks_the_uploaded_polygons(
        client: Cytomine, project: Project, tmp_path: Path) -> None:
    a = project.slides["a.tif"]
    manifest = build_dataset(Selection(project.endpoint.project_id, terms=("Nucleus",), images=("a.tif",)),
                             DatasetConfig(crop_size=96), tmp_path / "data")
    truth = kept_labels(a)
    assert manifest["counts"]["annotations"] == len(a.annotated)
    assert manifest["slides"] == {str(a.id): dict(name="a.tif", width=320, height=256, split="train",
                                                  annotations=len(a.annotated), crops=len(manifest["crops"]))}
    assert {c["x"] for c in manifest["crops"]} <= {0, 96, 192, 224} and len(manifest["crops"]) >= 6
    covered = np.zeros(a.labels.shape, dtype=bool)
    for crop in manifest["crops"]:
        box = np.s_[crop["y"]:crop["y"] + crop["height"], crop["x"]:crop["x"] + crop["width"]]
        pixels = read(tmp_path / "data" / "train" / "images" / f"{crop['name']}.png")
        assert np.array_equal(pixels, server_window(a.id, crop, tmp_path))
        assert np.array_equal(pixels, a.pixels[box])  # and at the right place in the slide
        labels = tifffile.imread(tmp_path / "data" / "train" / "labels" / f"{crop['name']}.tif")
        assert labels.dtype == np.uint16 and same_instances(labels, truth[box])
        assert sorted(crop["annotations"]) == sorted(a for a, i in a.annotated.items() if (truth[box] == i).any())
        covered[box] = True
    assert covered[truth > 0].all()  # every annotated nucleus is in a crop


def test_around_layout_at_zoom_one(client: Cytomine, project: Project, tmp_path: Path) -> None:
    a = project.slides["a.tif"]
    manifest = build_dataset(Selection(project.endpoint.project_id, images=(str(a.id),)),
                             DatasetConfig(zoom=1, crop_size=40, layout="around"), tmp_path / "data")
    assert all(c["zoom"] == 1 and (c["width"], c["height"]) == (40, 40) for c in manifest["crops"])
    polygons = label_polygons(a.labels)
    for annotation, label in a.annotated.items():  # each annotation lies whole in a crop
        left, top, right, bottom = np.asarray(polygons[label].bounds) / 2
        assert any(c["x"] <= left and right <= c["x"] + 40 and c["y"] <= top and bottom <= c["y"] + 40
                   and annotation in c["annotations"] for c in manifest["crops"])
    half = kept_labels(a)[::2, ::2] > 0
    for crop in manifest["crops"][:4]:
        pixels = read(tmp_path / "data" / "train" / "images" / f"{crop['name']}.png")
        assert np.array_equal(pixels, server_window(a.id, crop, tmp_path))
        labels = tifffile.imread(tmp_path / "data" / "train" / "labels" / f"{crop['name']}.tif")
        expected = half[crop["y"]:crop["y"] + 40, crop["x"]:crop["x"] + 40]
        assert np.logical_and(labels > 0, expected).sum() / np.logical_or(labels > 0, expected).sum() > 0.8


def test_slides_are_split_whole(client: Cytomine, project: Project, tmp_path: Path) -> None:
    names = ("a.tif", "b.tif", "c.tif", "d.tif")
    manifest = build_dataset(Selection(project.endpoint.project_id, terms=(project.endpoint.terms["Nucleus"],),
                                       images=names),
                             DatasetConfig(crop_size=64, split=(0.5, 0.25, 0.25), seed=3), tmp_path / "data")
    ids = {project.slides[name].id for name in names}
    splits = manifest["splits"]
    assert sorted(i for s in splits.values() for i in s["slides"]) == sorted(ids)  # each slide once
    assert [len(splits[s]["slides"]) for s in ("train", "val", "test")] == [2, 1, 1]
    for split, content in splits.items():
        crops = [c for c in manifest["crops"] if c["split"] == split]
        assert {c["image"] for c in crops} == set(content["slides"])
        assert sorted(p.stem for p in (tmp_path / "data" / split / "images").iterdir()) == sorted(
            c["name"] for c in crops)
        assert content["crops"] == len(crops) and content["objects"] == sum(c["objects"] for c in crops)
    assert all(manifest["slides"][str(c["image"])]["split"] == c["split"] for c in manifest["crops"])


@pytest.mark.parametrize("count", range(1, 13))
def test_split_by_slide_is_a_seeded_partition(count: int) -> None:
    ids = list(range(100, 100 + count))
    shares = (0.6, 0.2, 0.2)
    for seed in range(5):
        splits = split_slides(ids, shares, seed)
        assert sorted(splits) == ids and set(splits.values()) <= {"train", "val", "test"}
        counts = [list(splits.values()).count(s) for s in ("train", "val", "test")]
        assert counts[0] >= 1 and all(abs(c - share * count) < 1 + 1e-9 for c, share in zip(counts[1:], shares[1:]))
        assert split_slides(list(reversed(ids)), shares, seed) == splits
    if count >= 3:  # the seed matters
        assert len({tuple(sorted(split_slides(ids, shares, seed).items())) for seed in range(5)}) > 1


def test_selection_by_user_and_augmentation(client: Cytomine, project: Project, tmp_path: Path) -> None:
    b = project.slides["b.tif"]
    manifest = build_dataset(Selection(project.endpoint.project_id, users=(project.expert.id,)),
                             DatasetConfig(crop_size=64, augment=2, defocus_levels=(2.0,)), tmp_path / "data")
    assert manifest["counts"]["annotations"] == EXPERT_COUNT and list(manifest["slides"]) == [str(b.id)]
    expected = kept_labels(b, [a for a, label in b.annotated.items() if label <= EXPERT_COUNT])
    for crop in manifest["crops"]:
        labels = tifffile.imread(tmp_path / "data" / "train" / "labels" / f"{crop['name']}.tif")
        box = np.s_[crop["y"]:crop["y"] + 64, crop["x"]:crop["x"] + 64]
        assert same_instances(labels, expected[box])
        for copy in (1, 2):
            image = read(tmp_path / "data" / "train" / "images" / f"{crop['name']}-aug{copy}.png")
            turned = tifffile.imread(tmp_path / "data" / "train" / "labels" / f"{crop['name']}-aug{copy}.tif")
            assert image.shape == (64, 64, 3) and sorted(np.unique(turned)) == sorted(np.unique(labels))
    assert manifest["splits"]["train"]["augmented"] == 2 * len(manifest["crops"])


@pytest.mark.parametrize("selection, message", [
    (dict(images=("empty.tif",)), "no annotations match the selection"),
    (dict(terms=("Mitosis",)), "term 'Mitosis' is not a term of project"),
    (dict(terms=(999999,)), "term '999999' is not a term of project"),
    (dict(images=("nowhere.tif",)), "image(s) nowhere.tif not in project"),
    (dict(users=(999999,)), "no annotations match the selection"),
])
def test_bad_selections_are_clear_errors(client: Cytomine, project: Project, tmp_path: Path, selection: dict,
                                         message: str) -> None:
    with pytest.raises(CysegError, match=message.replace("(", r"\(").replace(")", r"\)")):
        build_dataset(Selection(project.endpoint.project_id, **selection), DatasetConfig(), tmp_path / "data")
    assert not (tmp_path / "data").exists()


def test_annotation_outside_the_image_is_a_clear_error(client: Cytomine, project: Project, tmp_path: Path) -> None:
    """The embedded server refuses such annotations, but a real Cytomine may hold them: store one directly."""
    store = project.server.store
    c = project.slides["c.tif"]
    image = store.image(c.id)
    nucleus = to_cytomine(label_polygons(c.labels)[1], c.labels.shape[0])
    outside = affinity.translate(nucleus, 190 - nucleus.bounds[0], 0)  # sticks out of the 192-pixel wide image
    [sizes] = measures([outside])
    admin = store.user_by_public_key(project.endpoint.public_key)
    [stored] = store.add_annotations([NewAnnotation(image, admin.id, outside.wkt, (), sizes.area, sizes.perimeter,
                                                    sizes.centroid_x, sizes.centroid_y)], algo=False)
    try:
        with pytest.raises(CysegError, match=rf"annotation\(s\) {stored.id} \(bounds .*\) lie outside image {c.id}"):
            build_dataset(Selection(project.endpoint.project_id, images=("c.tif",)), DatasetConfig(),
                          tmp_path / "data")
    finally:
        store.delete_annotation(stored.id)


def test_output_folder_must_be_new_or_empty(client: Cytomine, project: Project, tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "old.txt").write_text("")
    with pytest.raises(CysegError, match="is not empty"):
        build_dataset(Selection(project.endpoint.project_id, images=("d.tif",)), DatasetConfig(), tmp_path / "data")


def test_cli(project: Project, tmp_path: Path, capsys: pytest.CaptureFixture, caplog: pytest.LogCaptureFixture) -> None:
    credentials = tmp_path / "credentials.json"
    write_credentials(credentials, project.endpoint)
    base = ["dataset", "--credentials", str(credentials), "--image", "d.tif", "--crop-size", "64"]
    assert main(base + ["--term", "Nucleus", "--out", str(tmp_path / "data")]) == 0
    manifest = json.loads((tmp_path / "data" / "manifest.json").read_text())
    assert manifest["counts"]["annotations"] == len(project.slides["d.tif"].annotated)
    assert "1 annotation(s) without an area (points or lines) skipped" in caplog.text
    assert "cyseg train --data" in capsys.readouterr().out
    assert main(base + ["--term", "Mitosis", "--out", str(tmp_path / "other")]) == 2
    assert "cyseg dataset: error: term 'Mitosis' is not a term of project" in capsys.readouterr().err
    assert main(base + ["--private-key", "wrong", "--out", str(tmp_path / "other")]) == 2
    assert "refused the keys" in capsys.readouterr().err
    assert main(["dataset", "--host", project.endpoint.host, "--out", str(tmp_path / "other")]) == 2
    assert "missing public_key, private_key, project_id" in capsys.readouterr().err
