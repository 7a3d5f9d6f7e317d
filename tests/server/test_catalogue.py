"""The remaining resources the client models read: ontologies, terms, software and job lists, slices."""
from __future__ import annotations

from pathlib import Path

from cytomine.models import (AttachedFile, ImageInstance, Job, JobCollection, JobParameter, OntologyCollection,
                             Project, Property, SliceInstance, Software, SoftwareCollection, Term, TermCollection)

from cyseg.server.runner import Endpoint

from .helpers import PNG_NAME, GeneratedSlides, read_picture


def test_ontology_and_terms(client, server: Endpoint) -> None:
    project = Project().fetch(server.project_id)
    ontologies = OntologyCollection().fetch()
    assert [o.id for o in ontologies] == [project.ontology]
    assert {c["name"] for c in ontologies[0].children} >= {"Nucleus", "ROI"}
    assert {t.name: t.id for t in TermCollection().fetch_with_filter("project", project.id)} == server.terms
    created = Term("Mitosis", project.ontology, "#0000ff").save()
    assert created.id and Term().fetch(created.id).color == "#0000ff"
    assert "Mitosis" in {t.name for t in TermCollection().fetch_with_filter("ontology", project.ontology)}
    assert Term("Mitosis", project.ontology, "#0000ff").save() is False  # duplicate name


def test_software_and_jobs_lists(client, server: Endpoint) -> None:
    assert server.software_id in {s.id for s in SoftwareCollection().fetch()}
    assert server.software_id in {s.id for s in SoftwareCollection(filters={"project": server.project_id}).fetch()}
    jobs = JobCollection(project=server.project_id).fetch()
    assert all(job.project == server.project_id for job in jobs)


def test_job_parameter_fetch(client, server: Endpoint) -> None:
    job = Job(server.project_id, server.software_id).save()
    threshold = next(p for p in Software().fetch(server.software_id).parameters if p["name"] == "threshold")
    saved = JobParameter(job.id, threshold["id"], 0.25).save()
    assert JobParameter().fetch(saved.id).value == "0.25"


def test_slice_instance_window_and_thumb(client, server: Endpoint, generated_slides: GeneratedSlides,
                                         tmp_path: Path) -> None:
    image = ImageInstance().fetch(server.images[PNG_NAME])
    reference = image.reference_slice()
    assert SliceInstance().fetch(reference.id).image == image.id
    assert reference.window(5, 6, 20, 10, dest_pattern=str(tmp_path / "w.png"))
    assert (read_picture(tmp_path / "w.png") == generated_slides.png[6:16, 5:25]).all()
    assert reference.dump(str(tmp_path / "t.jpg"), max_size=100)
    assert read_picture(tmp_path / "t.jpg").shape == (77, 100, 3)


def test_property_update_and_attached_file_delete(client, server: Endpoint, tmp_path: Path) -> None:
    image = ImageInstance().fetch(server.images[PNG_NAME])
    prop = Property(image, key="stain", value="HE").save()
    prop.value = "IHC"
    assert prop.update().value == "IHC"
    assert Property(image).fetch(prop.id).value == "IHC"
    source = tmp_path / "a.txt"
    source.write_text("x")
    attached = AttachedFile(image, file=str(source), filename="a.txt").upload()
    assert client.delete(f"attachedfile/{attached.id}.json")
    assert AttachedFile(image).fetch(attached.id) is False
