"""The CytomineJob life cycle through the real client, and the software registered from the descriptor."""
from __future__ import annotations

import pytest
from cytomine import CytomineJob
from cytomine.models import (Annotation, AnnotationCollection, Job, JobParameterCollection, Software,
                             SoftwareParameterCollection, User)

from cyseg.server.runner import Endpoint

from .helpers import PNG_NAME


def test_software_from_descriptor(client, server: Endpoint) -> None:
    software = Software().fetch(server.software_id)
    assert software.name == "cyseg-test"
    parameters = {p["name"]: p for p in software.parameters}
    assert parameters["threshold"]["defaultParamValue"] == "0.5"
    assert parameters["threshold"]["type"] == "Number" and parameters["threshold"]["required"] is False
    assert parameters["cytomine_host"]["setByServer"] is True
    listed = SoftwareParameterCollection(filters={"software": server.software_id}).fetch()
    assert "cytomine_host" not in {p.name for p in listed}
    with_server_set = SoftwareParameterCollection(filters={"software": server.software_id},
                                                  withSetByServer=True).fetch()
    assert [p.name for p in with_server_set] == list(parameters)


def run_job(server: Endpoint, *arguments: str) -> CytomineJob:
    return CytomineJob.from_cli(server.cli_arguments() + list(arguments), configure_logging=False)


def test_job_life_cycle(client, server: Endpoint) -> None:
    human = client.current_user.id
    image_id = server.images[PNG_NAME]
    with run_job(server, "--threshold", "0.7") as cytomine_job:
        assert cytomine_job.current_user.algo is True
        job = cytomine_job.job
        assert Job().fetch(job.id).status == Job.RUNNING
        assert cytomine_job.parameters.threshold == 0.7 and cytomine_job.parameters.model == "unet"
        made = Annotation(location="POLYGON ((1 1, 9 1, 9 9, 1 9, 1 1))", id_image=image_id).save()
        assert made.user == job.userJob
        cytomine_job.job_logger().update("half way", current=1, total=2)
        during = Job().fetch(job.id)
        assert (during.progress, during.statusComment, during.status) == (50, "half way", Job.RUNNING)

    done = Job().fetch(job.id)
    assert (done.status, done.statusComment) == (Job.TERMINATED, "Job successfully terminated")
    values = {p.name: p.value for p in JobParameterCollection(filters={"job": job.id}).fetch()}
    assert values["threshold"] == "0.7" and values["model"] == "unet" and values["simplify"] == "true"
    assert values["cytomine_host"] == server.host

    job_user = User().fetch(job.userJob)
    assert job_user.id != human and job_user.publicKey != server.public_key
    # Algo annotations: hidden from default listings, shown with includeAlgo or by job/user.
    visible = AnnotationCollection(image=image_id).fetch()
    assert made.id not in {a.id for a in visible}
    assert made.id in {a.id for a in AnnotationCollection(image=image_id, includeAlgo=True).fetch()}
    assert [a.id for a in AnnotationCollection(job=job.id).fetch()] == [made.id]
    assert [a.id for a in AnnotationCollection(user=job.userJob).fetch()] == [made.id]
    assert Annotation().fetch(made.id).class_ == "be.cytomine.ontology.AlgoAnnotation"


def test_failing_job_reports_failed_with_message(client, server: Endpoint) -> None:
    with pytest.raises(RuntimeError, match="segmentation exploded"):
        with run_job(server) as cytomine_job:
            job_id = cytomine_job.job.id
            raise RuntimeError("segmentation exploded")
    failed = Job().fetch(job_id)
    assert (failed.status, failed.statusComment) == (Job.FAILED, "segmentation exploded")


def test_job_user_limits(client, server: Endpoint) -> None:
    """A job user may not start jobs, and job updates are validated."""
    with run_job(server) as cytomine_job:
        nested = cytomine_job._post("job.json", Job(server.project_id, server.software_id).to_json())
        assert nested.status_code == 403
        bad_status = cytomine_job._put(f"job/{cytomine_job.job.id}.json", '{"status": 42}')
        assert bad_status.status_code == 400 and "status" in bad_status.json()["message"]
        bad_progress = cytomine_job._put(f"job/{cytomine_job.job.id}.json", '{"progress": 101}')
        assert bad_progress.status_code == 400


def test_a_job_users_array_is_answered_with_algo_annotations(client, server: Endpoint) -> None:
    """Cytomine core names the created class in a bulk answer: a job user's annotations are algo annotations."""
    with run_job(server) as cytomine_job:
        batch = AnnotationCollection()
        batch.extend(Annotation(location=f"POLYGON (({x} 1, {x + 5} 1, {x + 5} 6, {x} 6, {x} 1))",
                                id_image=server.images[PNG_NAME]) for x in (1, 11))
        response = cytomine_job._post("annotation.json", batch.to_json())
        made = sorted(a.id for a in AnnotationCollection(job=cytomine_job.job.id).fetch())
    assert response.status_code == 200 and len(made) == 2
    assert response.json() == {"message": f"algoannotations {made[0]},{made[1]} added"}
