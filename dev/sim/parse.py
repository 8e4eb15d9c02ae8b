"""Reading requests: JSON and multipart bodies, api-version, the deployment a model operation names."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web
from multidict import MultiDictProxy

from dev.sim.errors import bad_request, missing_api_version
from dev.sim.surfaces import on_v1

Json = dict[str, Any]
Form = MultiDictProxy[str | bytes | bytearray | web.FileField]


def api_version(request: web.Request) -> str:
    """The query's api-version on the classic surface (required there); "v1" on v1."""
    if on_v1(request.path):
        return "v1"
    version = request.query.get("api-version")
    if not version:
        raise missing_api_version()
    return version


async def json_body(request: web.Request) -> Json:
    try:
        body = json.loads(await request.read())
    except (ValueError, UnicodeDecodeError) as error:
        raise bad_request(f"We could not parse the JSON body of your request. ({error})") from None
    if not isinstance(body, dict):
        raise bad_request("The request body must be a JSON object.")
    return body


async def form(request: web.Request) -> Form:
    if not request.content_type.startswith("multipart/"):
        raise bad_request("This operation needs a multipart/form-data body.")
    return await request.post()


def upload(fields: Form, name: str) -> web.FileField:
    part = fields.get(name)
    if not isinstance(part, web.FileField):
        raise bad_request(f"Missing required multipart file field {name!r}.")
    return part


def deployment(request: web.Request, model: object) -> str:
    """Classic: the path's deployment; v1: the body's (or form's) `model`."""
    if "deployment" in request.match_info:
        return request.match_info["deployment"]
    if not isinstance(model, str) or not model:
        raise bad_request("'model' is a required property.")
    return model


def positive_int(value: object, name: str, default: int) -> int:
    """A JSON integer >= 1 (a multipart form sends it as digits)."""
    if value is None:
        return default
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise bad_request(f"'{name}' must be a positive integer.")
    return value


def flag(value: object) -> bool:
    """`stream: true` in JSON, `stream=true` in a form."""
    return value is True or value == "true"


def ids(value: object, name: str) -> list[str]:
    """An optional list of object ids."""
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise bad_request(f"'{name}' must be an array of ids.")
    return list(value)
