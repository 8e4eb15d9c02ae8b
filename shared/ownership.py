"""Tenants: each client's objects are its own.

An object created through the gateway is recorded with its owner. Another client naming it gets exactly
the 404 of an unknown id, so nothing tells it the id exists; lists show only the caller's objects.
Objects whose owner is unknown (created outside the gateway, before ownership was recorded, or found
again after their record was lost) are reachable only by clients marked `"admin": true`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from shared.affinity import Home
from shared.auth import Caller
from shared.errors import GatewayError

_NOUNS = {"vector_store": "vector store", "thread.run": "run", "thread.message": "message"}


def may_reach(caller: Caller, home: Home) -> bool:
    return caller.admin or (home.owner is not None and home.owner == caller.owner)


def not_found(kind: str, object_id: str) -> GatewayError:
    """The one answer for an object that does not exist and for one that is someone else's."""
    return GatewayError(404, "not_found", f"No {_NOUNS.get(kind, kind)} found with id {object_id!r}.")


def visible(items: Sequence[Mapping[str, Any]], owned: set[str] | None) -> list[Mapping[str, Any]]:
    """The items of a list page the caller may see; `owned` None: all of them (an admin)."""
    return [item for item in items if owned is None or item.get("id") in owned]
