"""A client of the local App Engine that validates every request and response against the App
Engine's own OpenAPI spec (app-engine-openapi.v0.1.0.yml, a copy of Cytomine's) with openapi-core.

Two readings of the spec, applied to the whole document, not to particular answers:
- its `oneOf` lists overlap (an integer is also a `number`, a Polygon is both `Polygon.json` and
  `Geometry.json`, any string is both an `enum_item` and a `string`), so no value satisfies them as
  written; they are read as `anyOf`;
- it refers to GeoJSON's schemas on geojson.org, which this offline machine cannot fetch; those
  references are read as "a JSON object" (geometries are checked by `cyseg.task.io` and its tests).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import requests
import yaml
from openapi_core import OpenAPI
from openapi_core.contrib.requests import RequestsOpenAPIRequest, RequestsOpenAPIResponse

from cyseg.task.client import APP_ENGINE_PATH

SPEC_PATH = Path(__file__).with_name("app-engine-openapi.v0.1.0.yml")


def _relaxed(node: Any) -> Any:
    if isinstance(node, dict):
        if str(node.get("$ref", "")).startswith("https://geojson.org/"):
            return {"type": "object"}
        return {("anyOf" if key == "oneOf" else key): _relaxed(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_relaxed(item) for item in node]
    return node


def app_engine_spec(base_url: str) -> OpenAPI:
    spec = _relaxed(yaml.safe_load(SPEC_PATH.read_text()))
    spec["servers"] = [{"url": base_url}]
    return OpenAPI.from_dict(spec)


class CheckedClient:
    """Requests to the local App Engine, each request and response checked against the spec."""

    def __init__(self, host: str, token: str) -> None:
        self.base_url = host + APP_ENGINE_PATH
        self.spec = app_engine_spec(self.base_url)
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"

    def __call__(self, method: str, path: str, expect: int = 200, off_spec: bool = False,
                 **options: Any) -> requests.Response:
        """The response, checked; `off_spec`: the request itself breaks the spec on purpose (not checked)."""
        response = self.session.request(method, self.base_url + path, timeout=120, **options)
        assert response.status_code == expect, (method, path, response.status_code, response.text[:500])
        request = RequestsOpenAPIRequest(response.request)
        if not off_spec:
            self.spec.validate_request(request)
        self.spec.validate_response(request, RequestsOpenAPIResponse(response))
        return response

    def wait(self, run_id: str, timeout_s: float = 600) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while True:
            run = self("GET", f"/task-runs/{run_id}").json()
            if run["state"] in ("FINISHED", "FAILED") or time.monotonic() > deadline:
                return run
            time.sleep(0.3)
