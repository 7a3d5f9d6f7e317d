"""Records rendered as the JSON objects Cytomine answers with (the fields the 2.x client reads)."""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from cyseg.server import records as r
from cyseg.server.regions import max_zoom

JsonObject = dict[str, Any]

JOB_STATUS_NAMES = ("NOT LAUNCH", "IN QUEUE", "RUNNING", "SUCCESS", "FAILED", "INDETERMINATE", "WAIT",
                    "PREVIEWED", "KILLED")
THUMB_SIZE = 512


@dataclass(frozen=True, slots=True)
class Urls:
    """Absolute URLs of this server as the client addressed it (so the client signs them correctly)."""
    base: str  # e.g. http://127.0.0.1:8080

    @property
    def api(self) -> str:
        return f"{self.base}/api"

    @property
    def image_server(self) -> str:
        """The tile protocols (IIP, Zoomify, PIMS) live under /api so the client signs their requests."""
        return f"{self.api}/ims"


def _time(ms: int | None) -> str | None:
    return None if ms is None else str(ms)


def collection(items: Sequence[JsonObject], total: int | None = None, offset: int = 0, per_page: int = 0
               ) -> JsonObject:
    """A Cytomine list: `collection` plus paging fields."""
    total = len(items) if total is None else total
    return {"collection": list(items), "size": total, "offset": offset, "perPage": per_page or total,
            "totalPages": (-(-total // per_page) if per_page else 1)}


def created(kind: str, body: JsonObject) -> JsonObject:
    """The answer to a create/update: the object under its callback key, as the client expects."""
    return {kind.lower(): body, "message": f"{kind} {body.get('id')} saved", "printMessage": True,
            "success": True}


def added(class_name: str, ids: Iterable[int]) -> JsonObject:
    """The answer to a bulk creation (a JSON array), as Cytomine core's `ModelService.addMultiple` gives it:
    only a message naming the new ids, such as 'algoannotations 12,13 added' (the objects are not echoed)."""
    return {"message": f"{class_name.rsplit('.', 1)[-1].lower()}s {','.join(map(str, ids))} added"}


def user(record: r.User, with_keys: bool) -> JsonObject:
    body: JsonObject = {
        "id": record.id, "class": r.USER_JOB_CLASS if record.algo else r.USER_CLASS,
        "username": record.username, "firstname": record.username, "lastname": "", "email": "",
        "created": _time(record.created), "algo": record.algo, "admin": not record.algo,
        "guest": False, "isSwitched": False, "job": record.job}
    if record.algo:
        body["humanUsername"] = record.username
    if with_keys:
        body.update(publicKey=record.public_key, privateKey=record.private_key)
    return body


def term(record: r.Term) -> JsonObject:
    return {"id": record.id, "class": r.TERM_CLASS, "name": record.name, "color": record.color,
            "ontology": record.ontology, "parent": record.parent, "created": _time(record.created)}


def ontology(record: r.Ontology, terms: Iterable[r.Term]) -> JsonObject:
    children = [term(t) | {"title": t.name, "key": t.id, "isFolder": False, "children": []} for t in terms]
    return {"id": record.id, "class": r.ONTOLOGY_CLASS, "name": record.name, "title": record.name,
            "created": _time(record.created), "isFolder": True, "key": record.id, "children": children,
            "attr": {"id": record.id, "type": r.ONTOLOGY_CLASS}, "projects": []}


def project(record: r.Project, ontology_name: str, images: int, counts: tuple[int, int]) -> JsonObject:
    return {"id": record.id, "class": r.PROJECT_CLASS, "name": record.name, "ontology": record.ontology,
            "ontologyName": ontology_name, "created": _time(record.created), "updated": None,
            "numberOfImages": images, "numberOfSlides": images, "numberOfAnnotations": counts[0],
            "numberOfJobAnnotations": counts[1], "numberOfReviewedAnnotations": 0, "isClosed": False,
            "isReadOnly": False, "blindMode": False, "hideUsersLayers": False, "hideAdminsLayers": False,
            "mode": "CLASSIC", "retrievalDisable": True, "retrievalAllOntology": False}


def image(record: r.Image, counts: tuple[int, int], urls: Urls) -> JsonObject:
    thumb = f"{urls.api}/imageinstance/{record.id}/thumb.png?maxSize={THUMB_SIZE}"
    return {"id": record.id, "class": r.IMAGE_CLASS, "baseImage": record.base_image, "project": record.project,
            "user": None, "created": _time(record.created), "updated": None,
            "originalFilename": record.filename, "instanceFilename": record.filename,
            "filename": record.filename, "path": record.ims_path, "fullPath": record.ims_path,
            "mime": "image/pyrtiff", "contentType": "image/pyrtiff", "width": record.width,
            "height": record.height, "depth": 1, "duration": 1, "channels": 3, "samplePerPixel": 3,
            "bitPerSample": 8, "colorspace": "RGB", "physicalSizeX": record.resolution,
            "physicalSizeY": record.resolution, "physicalSizeZ": None, "fps": None,
            "resolution": record.resolution, "magnification": record.magnification,
            "zoom": max_zoom(record.width, record.height), "thumb": thumb, "preview": thumb,
            "macroURL": None, "numberOfAnnotations": counts[0], "numberOfJobAnnotations": counts[1],
            "numberOfReviewedAnnotations": 0, "reviewed": False, "inReview": False}


def slice_instance(record: r.Image, urls: Urls) -> JsonObject:
    return {"id": record.slice, "class": r.SLICE_CLASS, "image": record.id, "project": record.project,
            "baseSlice": record.slice, "imageServerUrl": urls.image_server, "mime": "image/pyrtiff",
            "path": record.ims_path, "channel": 0, "zStack": 0, "time": 0, "rank": 0,
            "created": _time(record.created)}


def software_parameter(record: r.SoftwareParameter) -> JsonObject:
    return {"id": record.id, "class": r.SOFTWARE_PARAMETER_CLASS, "software": record.software,
            "name": record.name, "type": record.type, "defaultParamValue": record.default_value,
            "defaultValue": record.default_value, "required": record.required,
            "setByServer": record.set_by_server, "serverParameter": record.set_by_server,
            "index": record.index, "humanName": record.human_name, "valueKey": record.value_key,
            "commandLineFlag": record.command_line_flag, "uri": None, "uriPrintAttribut": None,
            "uriSortAttribut": None}


def software(record: r.Software, parameters: Iterable[r.SoftwareParameter], jobs: Sequence[r.Job]
             ) -> JsonObject:
    body: JsonObject = {
        "id": record.id, "class": r.SOFTWARE_CLASS, "name": record.name, "fullName": record.name,
        "softwareVersion": record.version, "created": _time(record.created), "deprecated": False,
        "executable": True, "resultName": None, "executeCommand": None, "pullingCommand": None,
        "parameters": [software_parameter(p) for p in parameters], "numberOfJob": len(jobs)}
    for status, name in enumerate(("NotLaunch", "InQueue", "Running", "Success", "Failed", "Indeterminate",
                                   "Wait")):
        body[f"numberOf{name}"] = sum(1 for job in jobs if job.status == status)
    return body


def job_parameter(record: r.JobParameter, parameter: r.SoftwareParameter) -> JsonObject:
    return {"id": record.id, "class": r.JOB_PARAMETER_CLASS, "job": record.job,
            "softwareParameter": record.software_parameter, "value": record.value, "name": parameter.name,
            "humanName": parameter.human_name, "type": parameter.type, "index": parameter.index,
            "created": _time(record.created)}


def job(record: r.Job, software_name: str, username: str, parameters: Sequence[JsonObject]) -> JsonObject:
    return {"id": record.id, "class": r.JOB_CLASS, "software": record.software, "softwareName": software_name,
            "project": record.project, "number": record.number, "userJob": record.user_job,
            "username": username, "status": record.status, "statusComment": record.status_comment,
            "progress": record.progress, "created": _time(record.created), "updated": _time(record.updated),
            "algoType": "job", "rate": None, "dataDeleted": False, "favorite": False,
            "jobParameters": list(parameters)}


@dataclass(frozen=True, slots=True)
class AnnotationFields:
    """Which optional field groups a listing shows (Cytomine's show* flags)."""
    meta: bool = True
    wkt: bool = True
    gis: bool = True
    term: bool = True


def annotation(record: r.Annotation, image_record: r.Image, urls: Urls,
               fields: AnnotationFields = AnnotationFields()) -> JsonObject:
    body: JsonObject = {"id": record.id,
                        "class": r.ALGO_ANNOTATION_CLASS if record.algo else r.USER_ANNOTATION_CLASS}
    if fields.meta:
        body.update(image=record.image, slice=record.slice, project=record.project, user=record.user,
                    created=_time(record.created), updated=None, geometryCompression=0.0,
                    cropURL=f"{urls.api}/annotation/{record.id}/crop.png", x=record.centroid_x,
                    y=record.centroid_y)
    if fields.wkt:
        body["location"] = record.location
    if fields.term:
        body["term"] = list(record.terms)
        body["userByTerm"] = [{"term": t, "user": [record.user]} for t in record.terms]
    if fields.gis:
        resolution = image_record.resolution
        body.update(centroid={"x": record.centroid_x, "y": record.centroid_y},
                    area=record.area * resolution ** 2 if resolution else record.area,
                    areaUnit="micron²" if resolution else "pixels²",
                    perimeter=record.perimeter * resolution / 1000 if resolution else record.perimeter,
                    perimeterUnit="mm" if resolution else "pixels")
    return body


def property_(record: r.Property) -> JsonObject:
    return {"id": record.id, "class": r.PROPERTY_CLASS, "domainClassName": record.domain_class,
            "domainIdent": record.domain_ident, "key": record.key, "value": record.value,
            "created": _time(record.created)}


def attached_file(record: r.AttachedFile, urls: Urls) -> JsonObject:
    return {"id": record.id, "class": r.ATTACHED_FILE_CLASS, "domainClassName": record.domain_class,
            "domainIdent": record.domain_ident, "filename": record.filename, "size": record.size,
            "url": f"{urls.api}/attachedfile/{record.id}/download", "created": _time(record.created)}
