"""What every router shares: the deployment handle, role checks, the one error shape and its OpenAPI entries.

Every 4xx body has one shape, `{"detail": [{"loc": [...], "msg": str, "type": str, "value": ...}]}`, whether
pydantic, a route, the core or an actor raised it (market rows add their `row`, `field` and `reason`).
"""
from __future__ import annotations

import json
from typing import Any

from fastapi import Depends, HTTPException, Request
from pydantic import BaseModel, ConfigDict

from edgeray.auth import Identity

KEY_HEADER = "X-API-Key"


class Body(BaseModel):
    """Request bodies: strict types (no "100.0" or true for a price) and no unknown fields. FastAPI validates the
    parsed JSON in Python mode, where strict enums and datetimes want objects: those fields say strict=False."""
    model_config = ConfigDict(strict=True, extra="forbid")


class ErrorItem(BaseModel):
    loc: list[str | int]
    msg: str
    type: str
    value: Any = None


class ErrorBody(BaseModel):
    detail: list[ErrorItem]


_DESCRIPTIONS = {400: "Malformed request", 401: "Missing or unknown X-API-Key", 403: "The key's role may not do this",
                 404: "No such resource", 409: "Conflicts with the current state", 413: "Request body too large",
                 422: "Invalid input: each item names the field (loc) and the value",
                 503: "A backing actor is restarting or unavailable; retry"}


def responses(*codes: int) -> dict[int | str, dict]:
    return {code: {"model": ErrorBody, "description": _DESCRIPTIONS[code]} for code in codes}


def json_safe(value: Any, limit: int = 500) -> Any:
    """A rejected value as JSON, cut to `limit` characters so an error never echoes a whole body back."""
    try:
        text = json.dumps(value, default=str)
    except (TypeError, ValueError):
        text = json.dumps(str(value))
    if len(text) <= limit:
        return json.loads(text)
    return text[:limit] + "...(truncated)"


def error(status: int, loc: list | tuple | str, msg: str, type_: str, value: Any = None) -> HTTPException:
    loc = [loc] if isinstance(loc, str) else list(loc)
    return HTTPException(status_code=status, detail=[{"loc": loc, "msg": msg, "type": type_, "value": json_safe(value)}])


def validation_items(errors: list[dict]) -> list[dict]:
    """pydantic's errors in the API's error shape (HTTP bodies and WebSocket messages alike)."""
    return [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"], "value": json_safe(e.get("input"))} for e in errors]


def detail_items(status: int, detail: Any) -> list[dict]:
    """Normalise any HTTPException detail into the error shape. A message `field: text` (the core's
    convention for ValueErrors) puts `field` in loc."""
    if isinstance(detail, list) and all(isinstance(d, dict) and "msg" in d for d in detail):
        return detail
    if isinstance(detail, list):
        return [{"loc": [], "msg": str(d), "type": f"http_{status}", "value": None} for d in detail]
    text = str(detail)
    head, sep, _ = text.partition(": ")
    loc = [head] if sep and " " not in head and len(head) <= 80 else []
    return [{"loc": loc, "msg": text, "type": f"http_{status}", "value": None}]


class Replica:
    """The deployment instance and key ring of this replica process, set by its __init__. (Not app.state:
    Serve serves a cloudpickled copy of the FastAPI app, so state set on the class's app object is not seen.)"""
    api = None
    keyring = None


def get_api():
    if Replica.api is None:
        raise error(503, [], "the API is starting", "unavailable")
    return Replica.api


def identify(request: Request, key: str | None) -> Identity:
    if Replica.keyring is None:
        raise error(503, [], "the API is starting", "unavailable")
    who = Replica.keyring.identify(key)
    if who is None:
        raise error(401, ["header", KEY_HEADER], "missing or unknown X-API-Key", "unauthorized")
    return who


def require(permission: str):
    """Dependency: the caller's key must carry `permission` (read, trade, admin or feed; see edgeray.auth)."""
    def check(request: Request) -> Identity:
        who = identify(request, request.headers.get(KEY_HEADER))
        if not who.may(permission):
            raise error(403, ["header", KEY_HEADER], f"role {who.role!r} may not do this; it needs {permission!r}",
                        "forbidden", who.role)
        return who
    check.edgeray_permission = permission  # read by the OpenAPI pass that documents 401/403
    return Depends(check)
