"""The server's stored objects, as plain immutable records (one per SQLite table row).

Ids come from one sequence shared by every kind of object, as in Cytomine, so an id names
exactly one object and a mixed-up id is a 404 rather than the wrong object.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class User:
    id: int
    username: str
    public_key: str
    private_key: str
    job: int | None  # the job this user runs as (a Cytomine "user job"), None for people
    created: int

    @property
    def algo(self) -> bool:
        return self.job is not None


@dataclass(frozen=True, slots=True)
class Ontology:
    id: int
    name: str
    created: int


@dataclass(frozen=True, slots=True)
class Term:
    id: int
    ontology: int
    name: str
    color: str
    parent: int | None
    created: int


@dataclass(frozen=True, slots=True)
class Project:
    id: int
    name: str
    ontology: int
    created: int


@dataclass(frozen=True, slots=True)
class Image:
    """An image instance in a project, with its abstract image and its single (reference) slice."""
    id: int
    project: int
    base_image: int
    slice: int
    path: str  # absolute path of the slide file on this machine
    filename: str  # name relative to the slides folder
    ims_path: str  # unique opaque path the tile protocols address the slide by
    width: int
    height: int
    resolution: float | None  # micrometres per pixel
    magnification: int | None
    created: int


@dataclass(frozen=True, slots=True)
class Software:
    id: int
    name: str
    version: str | None
    created: int


@dataclass(frozen=True, slots=True)
class SoftwareParameter:
    id: int
    software: int
    name: str
    type: str
    default_value: str | None
    required: bool
    set_by_server: bool
    index: int
    human_name: str
    value_key: str | None
    command_line_flag: str | None


@dataclass(frozen=True, slots=True)
class Job:
    id: int
    project: int
    software: int
    number: int
    user_job: int
    creator: int
    status: int
    status_comment: str | None
    progress: int
    created: int
    updated: int | None


@dataclass(frozen=True, slots=True)
class JobParameter:
    id: int
    job: int
    software_parameter: int
    value: str | None
    created: int


@dataclass(frozen=True, slots=True)
class Annotation:
    id: int
    image: int
    slice: int
    project: int
    user: int
    algo: bool
    location: str  # WKT exactly as uploaded, Cytomine coordinates (origin bottom-left)
    terms: tuple[int, ...]
    area: float  # pixels²
    perimeter: float  # pixels
    centroid_x: float
    centroid_y: float
    created: int


@dataclass(frozen=True, slots=True)
class NewAnnotation:
    """A validated annotation about to be stored."""
    image: Image
    user: int
    location: str
    terms: tuple[int, ...]
    area: float
    perimeter: float
    centroid_x: float
    centroid_y: float


@dataclass(frozen=True, slots=True)
class Property:
    id: int
    domain_class: str
    domain_ident: int
    key: str
    value: str | None
    created: int


@dataclass(frozen=True, slots=True)
class AttachedFile:
    id: int
    domain_class: str
    domain_ident: int
    filename: str
    size: int
    created: int


# Cytomine's domain class names, used in JSON (`class`) and to address properties and attached files.
PROJECT_CLASS = "be.cytomine.project.Project"
IMAGE_CLASS = "be.cytomine.image.ImageInstance"
SLICE_CLASS = "be.cytomine.image.SliceInstance"
USER_CLASS = "be.cytomine.security.User"
USER_JOB_CLASS = "be.cytomine.security.UserJob"
ONTOLOGY_CLASS = "be.cytomine.ontology.Ontology"
TERM_CLASS = "be.cytomine.ontology.Term"
USER_ANNOTATION_CLASS = "be.cytomine.ontology.UserAnnotation"
ALGO_ANNOTATION_CLASS = "be.cytomine.ontology.AlgoAnnotation"
SOFTWARE_CLASS = "be.cytomine.processing.Software"
SOFTWARE_PARAMETER_CLASS = "be.cytomine.processing.SoftwareParameter"
JOB_CLASS = "be.cytomine.processing.Job"
JOB_PARAMETER_CLASS = "be.cytomine.processing.JobParameter"
PROPERTY_CLASS = "be.cytomine.meta.Property"
ATTACHED_FILE_CLASS = "be.cytomine.meta.AttachedFile"
