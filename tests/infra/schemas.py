"""Resource bodies in infra/ against the published resource schemas (Azure/bicep-types-az), offline.

data/resource-schemas.json is an extract of the generated types of exactly the resource types and API versions
infra/ uses, cut down to what the templates reach: for each object type a body reaches, all its property names,
which of them are read-only, and the type of each (another extracted object type, an array of one, or a scalar).
`problems` walks a body through it: an unknown or read-only property fails, which is what `az deployment` would
refuse or silently ignore. extract_schemas.py rebuilds the extract from a bicep-types-az checkout when a template
starts using another type, API version or nested object (the check says so).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from typing import Any

from tests.infra.bicep import BICEP_FILES, INFRA, key, tree, unwrap

EXTRACT = Path(__file__).resolve().parent / "data" / "resource-schemas.json"
SCALAR = "scalar"
# Bicep keywords in a resource body, not properties of the resource.
BICEP_ONLY = frozenset({"parent", "scope", "dependsOn"})
# A schema type: (properties: name -> (child type, read-only), type of additional properties or None).
ObjectSchema = tuple[dict[str, tuple[str, bool]], str | None]
Lookup = Callable[[str], ObjectSchema | None]


def resource_bodies() -> Iterator[tuple[str, str, str, Any]]:
    """(file, symbolic name, type@apiVersion, body) of every resource infra/ deploys (`existing` ones excluded)."""
    for path in BICEP_FILES:
        relative = path.relative_to(INFRA).as_posix()
        for name, decl in tree(relative).get("resources", {}).items():
            if not decl["existing"]:
                yield relative, name, f"{decl['type']}@{decl['api_version']}", unwrap(decl["config"])


@cache
def extract() -> dict[str, Any]:
    return dict(json.loads(EXTRACT.read_text()))


def from_extract(type_id: str) -> ObjectSchema | None:
    found = extract()["types"].get(type_id)
    if found is None:
        return None
    properties = {name: (child, read_only) for name, (child, read_only) in found["properties"].items()}
    return properties, found.get("additional")


def _node(value: Any, kind: str) -> dict[str, Any] | None:
    """pycep's {"operator": {...}} / {"function": {...}} expression node (not an object with such a property)."""
    if isinstance(value, dict) and set(value) == {kind} and isinstance(value[kind], dict) and "type" in value[kind]:
        return dict(value[kind])
    return None


def _is_expression(value: dict[str, Any]) -> bool:
    return bool(_node(value, "operator") or _node(value, "function")) or ("loop_type" in value and "config" in value)


def _alternatives(value: Any) -> list[Any]:
    """The literal shapes an expression can take: both branches of a condition, every part of concat/union."""
    operator, call = _node(value, "operator"), _node(value, "function")
    if operator and operator["type"] == "conditional":
        operands = operator["operands"]
        return _alternatives(operands["true_value"]) + _alternatives(operands["false_value"])
    if call and call["type"] in ("concat", "union"):
        return [shape for arg in call["parameters"].values() for shape in _alternatives(arg)]
    if isinstance(value, dict) and "loop_type" in value and "config" in value:
        return _alternatives(value["config"])
    return [value]


def walk_body(value: Any, type_: str, path: str, lookup: Lookup) -> Iterator[str]:
    """Problems of a value against a schema type; lookup gives an object type's schema (None: not extracted)."""
    for shape in _alternatives(value):
        if type_.startswith("[]"):
            for index, item in enumerate(shape if isinstance(shape, list) else []):
                yield from walk_body(item, type_[2:], f"{path}[{index}]", lookup)
            continue
        if type_ == SCALAR or not isinstance(shape, dict) or _is_expression(shape):
            continue  # a value, or an expression the templates compute: nothing to check statically
        schema = lookup(type_)
        if schema is None:
            yield f"{path}: type {type_} is not in {EXTRACT.name}; rebuild it with tests/infra/extract_schemas.py"
            continue
        properties, additional = schema
        for raw_name, child in shape.items():
            name = key(raw_name)
            if name in properties:
                child_type, read_only = properties[name]
                if read_only:
                    yield f"{path}.{name}: read-only in the published schema"
                yield from walk_body(child, child_type, f"{path}.{name}", lookup)
            elif additional is not None:
                yield from walk_body(child, additional, f"{path}.{name}", lookup)
            else:
                yield f"{path}.{name}: no such property in the published schema"


def problems(root: str, body: dict[str, Any], path: str, lookup: Lookup) -> list[str]:
    """Problems of a resource body whose schema type is root."""
    shape = {name: value for name, value in body.items() if key(name) not in BICEP_ONLY}
    return list(walk_body(shape, root, path, lookup))


def resource_problems(resource_type: str, body: dict[str, Any], path: str) -> list[str]:
    """Problems of a resource body against the extract."""
    root = extract()["resources"].get(resource_type)
    if root is None:
        return [f"{path}: {resource_type} is not in {EXTRACT.name}; rebuild it with tests/infra/extract_schemas.py"]
    return problems(root, body, path, from_extract)
