"""Users: the signed-in user and users by id (a job user's keys are shown to people and to itself)."""
from __future__ import annotations

from fastapi import APIRouter, Depends

from cyseg.server import cytomine_json as cj
from cyseg.server.records import User
from cyseg.server.routes.deps import authenticated, get_store
from cyseg.server.store import Store

router = APIRouter()


@router.get("/user/current.json")
def current_user(user: User = Depends(authenticated)) -> cj.JsonObject:
    return cj.user(user, with_keys=True)


@router.get("/user/{user_id}.json")
def get_user(user_id: int, user: User = Depends(authenticated), store: Store = Depends(get_store)) -> cj.JsonObject:
    target = store.user(user_id)
    return cj.user(target, with_keys=target.id == user.id or not user.algo)
