"""Notes about what a request asked for that the local emulator does not do as asked, read
from the request itself (so every job shows them, made through the API or not).

SDK v2 adds ``DebugHookConfig`` and ``ProfilerConfig`` to every job, and SageMaker code names
an ECR image; the emulator accepts both, runs every job on anyjob's one generic image and has
no Debugger or Profiler. The job page shows these next to the backend's own notes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.conf import settings

#: Members the emulator accepts and ignores.
IGNORED = (
    "DebugHookConfig",
    "DebugRuleConfigurations",
    "ProfilerConfig",
    "ProfilerRuleConfigurations",
    "TensorBoardOutputConfig",
)


def request_notes(request: Mapping[str, Any], backend_name: str) -> list[str]:
    if backend_name != "local" or not request:
        return []  # on AWS, SageMaker honours them
    notes = []
    image = (request.get("AlgorithmSpecification") or {}).get("TrainingImage")
    if image and image != settings.ANYJOB_TRAINING_IMAGE:
        notes.append(
            f"TrainingImage {image} is not pulled: the local backend runs every job on anyjob's "
            "one generic image, under SageMaker's contract."
        )
    ignored = [key for key in IGNORED if request.get(key)]
    if ignored:
        notes.append(
            f"{', '.join(ignored)}: accepted and ignored (the local backend has no SageMaker "
            "Debugger, Profiler or TensorBoard output)."
        )
    return notes
