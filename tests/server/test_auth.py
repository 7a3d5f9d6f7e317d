"""Authentication: the 2.x client's HMAC signature is accepted, anything else is a 401 with a message."""
from __future__ import annotations

import requests
from cytomine.cytomine import Cytomine, CytomineAuth

from cyseg.server.auth import signature
from cyseg.server.runner import Endpoint


def test_signature_matches_the_client() -> None:
    prepared = requests.Request("GET", "http://h:1/api/project/3.json", params={"max": 0, "x": "a,b"},
                                headers=Cytomine._headers()).prepare()
    signed = CytomineAuth("pub", "secret", "http://h:1/api/", "/api/")(prepared)
    expected = signature("secret", "GET", "", "", prepared.headers["date"], "/api/project/3.json?max=0&x=a%2Cb")
    assert signed.headers["authorization"] == f"CYTOMINE pub:{expected}"


def test_client_connects_with_the_right_keys(client: Cytomine, server: Endpoint) -> None:
    assert client.current_user.username == "admin"
    assert client.current_user.algo is False
    assert client.current_user.publicKey == server.public_key


def test_wrong_keys_are_rejected(server: Endpoint, connect) -> None:
    wrong_private = connect(server, private_key="not-the-key")
    assert wrong_private.current_user is False
    response = wrong_private._get("project/{}.json".format(server.project_id), None)
    assert response.status_code == 401
    assert response.json()["message"] == "bad request signature"

    unknown_public = connect(server, public_key="nobody", private_key="x")
    response = unknown_public._get("project.json", None)
    assert (response.status_code, response.json()["message"]) == (401, "unknown public key")


def test_unsigned_and_tampered_requests_are_rejected(client: Cytomine, server: Endpoint) -> None:
    unsigned = requests.get(f"{server.host}/api/project.json")
    assert unsigned.status_code == 401
    assert "Authorization" in unsigned.json()["message"]

    # A signature for one query does not authorise another.
    prepared = requests.Request("GET", f"{server.host}/api/annotation.json", params={"project": 1},
                                headers=Cytomine._headers()).prepare()
    CytomineAuth(server.public_key, server.private_key, f"{server.host}/api/", "/api/")(prepared)
    prepared.url = prepared.url.replace("project=1", "project=2")
    assert requests.Session().send(prepared).status_code == 401

    missing_date = requests.get(f"{server.host}/api/project.json",
                                headers={"Authorization": f"CYTOMINE {server.public_key}:abc"})
    assert missing_date.status_code == 401


def test_ping_needs_no_signature(server: Endpoint) -> None:
    assert requests.get(f"{server.host}/server/ping").json() == {"alive": True}
