"""Projects, ontologies and terms."""
from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from cyseg.server import cytomine_json as cj
from cyseg.server.errors import BadRequest
from cyseg.server.records import Project, User
from cyseg.server.routes.deps import as_id, authenticated, get_store, json_body, require_human
from cyseg.server.store import Store

router = APIRouter()


def project_json(store: Store, project: Project) -> cj.JsonObject:
    return cj.project(project, store.ontology(project.ontology).name, len(store.images(project.id)),
                      store.annotation_counts("project", project.id))


@router.get("/project.json")
def list_projects(store: Store = Depends(get_store)) -> cj.JsonObject:
    return cj.collection([project_json(store, p) for p in store.projects()])


@router.get("/project/{project_id}.json")
def get_project(project_id: int, store: Store = Depends(get_store)) -> cj.JsonObject:
    return project_json(store, store.project(project_id))


@router.get("/ontology.json")
def list_ontologies(store: Store = Depends(get_store)) -> cj.JsonObject:
    return cj.collection([cj.ontology(o, store.terms(o.id)) for o in store.ontologies()])


@router.get("/ontology/{ontology_id}.json")
def get_ontology(ontology_id: int, store: Store = Depends(get_store)) -> cj.JsonObject:
    return cj.ontology(store.ontology(ontology_id), store.terms(ontology_id))


@router.get("/term.json")
def list_terms(store: Store = Depends(get_store)) -> cj.JsonObject:
    return cj.collection([cj.term(t) for t in store.terms()])


@router.get("/ontology/{ontology_id}/term.json")
def ontology_terms(ontology_id: int, store: Store = Depends(get_store)) -> cj.JsonObject:
    return cj.collection([cj.term(t) for t in store.terms(store.ontology(ontology_id).id)])


@router.get("/project/{project_id}/term.json")
def project_terms(project_id: int, store: Store = Depends(get_store)) -> cj.JsonObject:
    return cj.collection([cj.term(t) for t in store.terms(store.project(project_id).ontology)])


@router.get("/term/{term_id}.json")
def get_term(term_id: int, store: Store = Depends(get_store)) -> cj.JsonObject:
    return cj.term(store.term(term_id))


@router.post("/term.json")
def create_term(payload: Any = Depends(json_body), user: User = Depends(authenticated),
                store: Store = Depends(get_store)) -> cj.JsonObject:
    require_human(user, "create terms")
    if not isinstance(payload, dict) or not isinstance(payload.get("name"), str) or not payload["name"].strip():
        raise BadRequest("a term needs a 'name' and an 'ontology'")
    ontology = store.ontology(as_id(payload.get("ontology"), "ontology"))
    parent = payload.get("parent")
    if parent is not None:
        parent = store.term(as_id(parent, "parent")).id
    color = payload.get("color") or "#ff0000"
    return cj.created("Term", cj.term(store.create_term(ontology.id, payload["name"].strip(), str(color), parent)))
