"""A region's deployments and the admission of a generation, in Azure's order.

A request is charged its *estimate* at arrival (prompt + max tokens x choices, or a media cost), before any
work: the 500 fault first, then the capacity fault, then the deployment's TPM/RPM windows. Only generations
are charged (chat, completions, embeddings, responses, images, audio); object reads and Assistants runs are free.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from dev.sim.errors import capacity_error, deployment_not_found, quota_error, server_error
from dev.sim.faults import Faults
from dev.sim.limiter import Limiter, SimDeployment
from dev.sim.stats import DeploymentStats
from shared.clock import Clock

# Azure's operation names, as its 429 messages quote them.
OPERATIONS = {
    "chat": "ChatCompletions_Create",
    "completions": "Completions_Create",
    "embeddings": "Embeddings_Create",
    "responses": "Responses_Create",
    "images/generations": "ImageGenerations_Create",
    "images/edits": "ImageEdits_Create",
    "audio/transcriptions": "AudioTranscriptions_Create",
    "audio/translations": "AudioTranslations_Create",
    "audio/speech": "AudioSpeech_Create",
}


class Charge(Protocol):
    """What admission needs to know of a parsed generation."""

    @property
    def op(self) -> str: ...

    @property
    def deployment(self) -> str: ...

    @property
    def api_version(self) -> str: ...

    @property
    def cost(self) -> int: ...


class Deployments:
    def __init__(self, deployments: Sequence[SimDeployment], clock: Clock, faults: Faults) -> None:
        self._clock = clock
        self._faults = faults
        self._limiters = {d.name: Limiter(d) for d in deployments}
        self.stats = {d.name: DeploymentStats() for d in deployments}

    @property
    def names(self) -> list[str]:
        return list(self._limiters)

    def check(self, name: str) -> None:
        if name not in self._limiters:
            raise deployment_not_found()

    def admit(self, charge: Charge) -> dict[str, str]:
        """Charge the estimate or raise the error to answer; returns the rate-limit headers taken right after."""
        limiter, stats = self._limiters[charge.deployment], self.stats[charge.deployment]
        operation = OPERATIONS[charge.op]
        if self._faults.error_500:
            stats.errors_500 += 1
            raise server_error()
        if self._faults.capacity_429:
            stats.throttled_capacity += 1
            raise capacity_error(operation, charge.api_version)
        throttle = limiter.admit(self._clock.now(), charge.cost)
        if throttle is not None:
            stats.throttled_quota += 1
            raise quota_error(operation, charge.api_version, throttle)
        stats.admitted_requests += 1
        stats.admitted_tokens += charge.cost
        if self._faults.no_remaining_headers:
            return {}
        tokens_left, requests_left = limiter.remaining()
        return {"x-ratelimit-remaining-tokens": str(tokens_left), "x-ratelimit-remaining-requests": str(requests_left)}

    def reset(self) -> None:
        for limiter in self._limiters.values():
            limiter.clear()
        self.stats = {name: DeploymentStats() for name in self.stats}
