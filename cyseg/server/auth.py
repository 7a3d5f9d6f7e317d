"""Cytomine's request signature (2.x clients): HMAC-SHA1 of the request line, base64-encoded.

The client signs `METHOD\\nCONTENT-MD5\\nCONTENT-TYPE\\nDATE\\n/api/PATH?QUERY` with its private key
and sends `Authorization: CYTOMINE <public key>:<signature>`.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import uuid

from cyseg.server.errors import Unauthorized

SCHEME = "CYTOMINE"


def signature(private_key: str, method: str, content_md5: str, content_type: str, date: str,
              path_and_query: str) -> str:
    """The base64 HMAC-SHA1 signature of one request, as the client computes it."""
    token = f"{method}\n{content_md5}\n{content_type}\n{date}\n{path_and_query}"
    digest = hmac.new(private_key.encode("utf-8"), token.encode("utf-8"), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def parse_authorization(header: str | None) -> tuple[str, str]:
    """Split `CYTOMINE pub:signature` into (public key, signature); 401 when malformed or absent."""
    if not header:
        raise Unauthorized("missing Authorization header (expected 'CYTOMINE public_key:signature')")
    scheme, _, credentials = header.partition(" ")
    public_key, sep, sent = credentials.strip().partition(":")
    if scheme != SCHEME or not sep or not public_key or not sent:
        raise Unauthorized("malformed Authorization header (expected 'CYTOMINE public_key:signature')")
    return public_key, sent


def check_signature(private_key: str, sent: str, method: str, content_md5: str, content_type: str,
                    date: str, path_and_query: str) -> None:
    """Raise 401 unless `sent` is the signature of this request under `private_key`."""
    expected = signature(private_key, method, content_md5, content_type, date, path_and_query)
    if not hmac.compare_digest(expected, sent):
        raise Unauthorized("bad request signature")


def new_key_pair() -> tuple[str, str]:
    """A fresh (public, private) key pair in Cytomine's UUID format."""
    return str(uuid.UUID(bytes=secrets.token_bytes(16), version=4)), str(
        uuid.UUID(bytes=secrets.token_bytes(16), version=4))
