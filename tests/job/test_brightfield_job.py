"""The job on a brightfield slide with every parameter at its default: labelled H&E tiles (patients the
brightfield model was not trained on) served as one slide by the embedded server; `model=auto` picks
the brightfield model, and the annotations it uploads match the labels."""
from __future__ import annotations

from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import shapely
import tifffile
from cytomine.models import Job, JobCollection
from skimage.draw import polygon as fill_polygon

from cyseg.coordinates import from_cytomine
from cyseg.job.descriptor import command_line, load_descriptor
from cyseg.server.runner import LocalServer
from metrics import match_instances
from tests.job.helpers import connect, JobOutcome
from tests.job.test_end_to_end import summary

ROOT = Path(__file__).resolve().parents[2]
TILES = ["monuseg_TCGA-21-5784-01Z-00-DX1", "monuseg_TCGA-KB-A93J-01A-01-TS1"]  # lung, stomach: validation patients
PIXEL_SIZE_UM = 0.25
MIN_F1 = 0.7  # F1 at IoU >= 0.5 of the uploaded annotations against the labels (see the model card)


def write_slide(shared_data: Path, path: Path) -> np.ndarray:
    """The tiles side by side as one tiled TIFF at 0.25 µm/px; their labels, offset alike."""
    images = [tifffile.imread(shared_data / "he_train" / "images" / f"{stem}.tif") for stem in TILES]
    labels = [tifffile.imread(shared_data / "he_train" / "labels" / f"{stem}.tif").astype(np.int32) for stem in TILES]
    offset = np.cumsum([0] + [int(label.max()) for label in labels[:-1]])
    truth = np.concatenate([np.where(label > 0, label + o, 0) for label, o in zip(labels, offset)], axis=1)
    tifffile.imwrite(path, np.concatenate(images, axis=1), tile=(256, 256), photometric="rgb", compression="zlib",
                     resolution=(1e4 / PIXEL_SIZE_UM, 1e4 / PIXEL_SIZE_UM), resolutionunit="CENTIMETER")
    return truth


def rasterised(annotations: list, shape: tuple[int, int]) -> np.ndarray:
    """The annotations as a label image (a pixel belongs to a polygon that holds its centre)."""
    labels = np.zeros(shape, dtype=np.int32)
    for number, annotation in enumerate(annotations, start=1):
        outline = from_cytomine(shapely.from_wkt(annotation.location), shape[0])
        for part in getattr(outline, "geoms", [outline]):
            cols, rows = np.asarray(part.exterior.coords).T
            rr, cc = fill_polygon(rows - 0.5, cols - 0.5, shape)
            labels[rr, cc] = number
    return labels


def test_the_default_job_finds_the_nuclei_of_an_he_slide(shared_data: Path, run_module: ModuleType, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch):
    slides = tmp_path / "slides"
    slides.mkdir()
    truth = write_slide(shared_data, slides / "he.tif")
    monkeypatch.setenv("CYSEG_OUTPUT_DIR", str(tmp_path / "results"))
    with LocalServer(slides, tmp_path / "server", ROOT / "descriptor.json").in_thread() as endpoint:
        values = {"cytomine_host": endpoint.host, "cytomine_public_key": endpoint.public_key,
                  "cytomine_private_key": endpoint.private_key, "cytomine_id_project": endpoint.project_id,
                  "cytomine_id_software": endpoint.software_id}
        exit_code = run_module.main(command_line(load_descriptor(), values)[2:])
        client = connect(endpoint)
        job = Job().fetch(max(j.id for j in JobCollection(project=endpoint.project_id).fetch()))
        annotations = JobOutcome(exit_code, job, client).annotations()
    assert exit_code == 0
    rows = summary(tmp_path / "results")
    assert rows[0]["model"] == "he" and "brightfield" in rows[0]["model_choice"]
    assert "0.25 µm/px" in rows[0]["model_choice"]
    matching = match_instances(rasterised(annotations, truth.shape), truth)
    f1 = 2 * matching.tp / (2 * matching.tp + matching.fp + matching.fn)
    assert f1 >= MIN_F1, f"F1 {f1:.3f} ({matching.tp} matched, {matching.fp} false, {matching.fn} missed)"
