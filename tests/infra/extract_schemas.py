"""Rebuild tests/infra/data/resource-schemas.json from a checkout of github.com/Azure/bicep-types-az.

    .venv/bin/python -m tests.infra.extract_schemas /path/to/bicep-types-az [commit]

For every type@apiVersion a resource in infra/ deploys, it reads generated/<provider>/<namespace>/<version>/
types.json and keeps the object types the resource bodies reach, each with all of its properties, nothing else
(the full files are megabytes). Run it after a template starts using another type, version or nested object.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from tests.infra.schemas import EXTRACT, SCALAR, ObjectSchema, problems, resource_bodies

READ_ONLY = 2  # bicep-types property flag


class Types:
    """The generated types of one types.json, addressed as '<namespace>/<version>#<index>'."""

    def __init__(self, path: Path, prefix: str) -> None:
        self.nodes: list[dict[str, Any]] = json.loads(path.read_text())
        self.prefix = prefix

    def type_of(self, ref: dict[str, str]) -> str:
        index = int(ref["$ref"].removeprefix("#/"))
        node = self.nodes[index]
        if node["$type"] in ("ObjectType", "DiscriminatedObjectType"):
            return f"{self.prefix}#{index}"
        if node["$type"] == "ArrayType":
            return "[]" + self.type_of(node["itemType"])
        return SCALAR

    def schema(self, index: int) -> ObjectSchema:
        node = self.nodes[index]
        if node["$type"] == "DiscriminatedObjectType":
            fields = dict(node["baseProperties"])
            for element in node["elements"].values():
                fields.update(self.nodes[int(element["$ref"].removeprefix("#/"))]["properties"])
            fields.setdefault(node["discriminator"], {"type": {"$ref": "#/0"}, "flags": 0})
        else:
            fields = node.get("properties", {})
        properties = {
            name: (self.type_of(field["type"]), bool(field["flags"] & READ_ONLY)) for name, field in fields.items()
        }
        additional = node.get("additionalProperties")
        return properties, self.type_of(additional) if additional else None


def main(checkout: Path, commit: str) -> None:
    loaded: dict[str, Types] = {}
    resources: dict[str, str] = {}
    reached: dict[str, ObjectSchema] = {}

    def lookup(type_id: str) -> ObjectSchema:
        prefix, index = type_id.split("#")
        schema = loaded[prefix].schema(int(index))
        reached[type_id] = schema
        return schema

    for _, _, resource_type, body in sorted(resource_bodies(), key=lambda item: item[2]):
        name, version = resource_type.split("@")
        namespace = name.split("/")[0].lower()
        for path in sorted(checkout.glob(f"generated/*/{namespace}/{version}/types.json")):
            prefix = f"{path.parts[-4]}/{version}"
            types = loaded.setdefault(prefix, Types(path, prefix))
            for node in types.nodes:
                if node["$type"] == "ResourceType" and node["name"].lower() == resource_type.lower():
                    resources[resource_type] = types.type_of(node["body"])
        root = resources.get(resource_type)
        assert root is not None, f"{resource_type} is not in {checkout}"
        problems(root, body, resource_type, lookup)  # only to reach the types; the test reports problems

    document = {
        "source": f"github.com/Azure/bicep-types-az @ {commit}, generated/*/<namespace>/<version>/types.json",
        "resources": dict(sorted(resources.items())),
        "types": {
            type_id: {"properties": {name: list(field) for name, field in sorted(properties.items())}}
            | ({"additional": additional} if additional else {})
            for type_id, (properties, additional) in sorted(reached.items())
        },
    }
    EXTRACT.write_text(json.dumps(document, indent=1, sort_keys=False) + "\n")
    print(f"{EXTRACT}: {len(resources)} resource types, {len(reached)} object types")


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else "unknown commit")
