"""What every API route needs: the store, the slides, this server's URLs, the signed-in user, the body."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fastapi import Depends, Request

from cyseg.server.auth import check_signature, parse_authorization
from cyseg.server.cytomine_json import Urls
from cyseg.server.errors import BadRequest, Forbidden, Unauthorized
from cyseg.server.records import Job, User
from cyseg.server.slides import SlideLibrary
from cyseg.server.store import Store


def get_store(request: Request) -> Store:
    return request.app.state.store


def get_slides(request: Request) -> SlideLibrary:
    return request.app.state.slides


def get_urls(request: Request) -> Urls:
    return Urls(str(request.base_url).rstrip("/"))


def authenticated(request: Request, store: Store = Depends(get_store)) -> User:
    """The user whose key signed this request; 401 for a missing, unknown or wrong signature."""
    public_key, sent = parse_authorization(request.headers.get("authorization"))
    user = store.user_by_public_key(public_key)
    if user is None:
        raise Unauthorized("unknown public key")
    date = request.headers.get("date")
    if not date:
        raise Unauthorized("missing Date header")
    path = request.scope["raw_path"].decode("latin-1")
    query = request.scope["query_string"].decode("latin-1")
    check_signature(user.private_key, sent, request.method, request.headers.get("content-md5", ""),
                    request.headers.get("content-type", ""), date, f"{path}?{query}" if query else path)
    return user


async def json_body(request: Request) -> Any:
    """The request body parsed as JSON; 400 when it is not JSON."""
    raw = await request.body()
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BadRequest(f"request body is not valid JSON: {error}") from error


def as_id(value: Any, field: str) -> int:
    """An id from a JSON body or query field (an integer or a string of digits); 400 otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise BadRequest(f"'{field}' must be an id, got {value!r}")
    try:
        return int(value)
    except ValueError:
        raise BadRequest(f"'{field}' must be an id, got {value!r}") from None


def id_list(text: str | None, field: str) -> tuple[int, ...]:
    """Ids of a comma-separated query parameter (`users=1,2`); empty when absent."""
    if not text:
        return ()
    return tuple(as_id(part.strip(), field) for part in text.split(",") if part.strip())


def text_value(value: Any) -> str | None:
    """A JSON value stored as Cytomine stores parameter and property values: as text."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def require_human(user: User, action: str) -> None:
    """403 for job users doing what only people may do."""
    if user.algo:
        raise Forbidden(f"a job user may not {action}")


def may_run(user: User, job: Job) -> None:
    """403 unless `user` is a person or the job's own user."""
    if user.algo and user.id != job.user_job:
        raise Forbidden(f"user {user.id} may not act for job {job.id}")


def get_files_dir(request: Request) -> Path:
    """Where attached files are kept, each named by its id."""
    return request.app.state.files_dir
