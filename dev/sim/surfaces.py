"""The two surfaces of the Azure OpenAI data plane.

Classic: `/openai/...?api-version=...` (what `AzureOpenAI(api_version=...)` calls; model operations under
`/openai/deployments/{deployment}/...`). v1: `/openai/v1/...` (what `OpenAI(base_url=".../openai/v1/")` calls;
the deployment is the body's `model`, no api-version).
"""

from __future__ import annotations

from collections.abc import Sequence

CLASSIC = "/openai/"
V1 = "/openai/v1/"
BOTH = (CLASSIC, V1)
DEPLOYMENT = "deployments/{deployment}/"  # where classic model operations live

Surfaces = Sequence[str]


def on_v1(path: str) -> bool:
    return path.startswith(V1)


def model_paths(operation: str, surfaces: Surfaces = BOTH) -> list[str]:
    """The paths of a model operation: by deployment on classic, by body `model` on v1."""
    return [prefix + (DEPLOYMENT if prefix == CLASSIC else "") + operation for prefix in surfaces]
