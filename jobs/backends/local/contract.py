"""What a local training job's container runs, as SageMaker decides it for any image.

SageMaker starts a training image as ``docker run IMAGE train``. ``AlgorithmSpecification``
may override that as Docker would: ``ContainerEntrypoint`` replaces the image's ENTRYPOINT
(and then the command is ``ContainerEntrypoint + ContainerArguments``), ``ContainerArguments``
alone replaces ``train`` after the image's own ENTRYPOINT. SageMaker SDK v3 relies on it: its
``ModelTrainer`` runs ``/bin/bash -c "… sm_train.sh"`` from an ``sm_drivers`` channel instead of
any ``sagemaker_*`` hyperparameter. Locally every image is anyjob's one generic image
(``container/``, stood in for by the image environment, ``image.py``), whose ENTRYPOINT is
``python -m anyjob_container``; whatever the command, it runs in the job's sandbox like
``train`` does, so an entrypoint is just another command inside it.

No Django imports here: the executor uses this before Django is set up.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

#: ``container/Dockerfile``'s ENTRYPOINT, after the image's ``python``.
IMAGE_ENTRYPOINT_ARGS = ["-m", "anyjob_container"]

#: Accepted (SDK v2 adds both to every job) but not emulated: said once on the job.
IGNORED = {
    "DebugHookConfig": "SageMaker Debugger",
    "ProfilerConfig": "SageMaker Profiler",
    "ProfilerRuleConfigurations": "SageMaker Profiler rules",
    "DebugRuleConfigurations": "SageMaker Debugger rules",
}


def overrides_command(request: Mapping[str, Any]) -> bool:
    """Whether the request replaces the image's ``train`` command."""
    spec = request.get("AlgorithmSpecification") or {}
    return bool(spec.get("ContainerEntrypoint") or spec.get("ContainerArguments"))


def container_command(request: Mapping[str, Any], python: Path) -> list[str]:
    """The argv the container runs: ``python -m anyjob_container train`` unless the request
    says otherwise (see the module docstring)."""
    spec = request.get("AlgorithmSpecification") or {}
    entrypoint = [str(a) for a in spec.get("ContainerEntrypoint") or []]
    arguments = [str(a) for a in spec.get("ContainerArguments") or []]
    if entrypoint:
        return [*entrypoint, *arguments]
    return [str(python), *IMAGE_ENTRYPOINT_ARGS, *(arguments or ["train"])]


def notes(request: Mapping[str, Any], generic_image: str) -> list[str]:
    """What the job page should say about the request's image and the parts it ignores."""
    found = []
    spec = request.get("AlgorithmSpecification") or {}
    image = spec.get("TrainingImage")
    if image and image != generic_image:
        found.append(
            f"TrainingImage {image} runs on anyjob's generic image here: the local backend has "
            "one image for every job (its Python, pip and /bin/bash); the sagemaker backend "
            "runs the image named."
        )
    if overrides_command(request):
        shown = " ".join(container_command(request, Path("python"))[:8])
        found.append(
            f"the container runs ContainerEntrypoint/ContainerArguments instead of train: {shown[:300]}"
        )
    ignored = [what for key, what in IGNORED.items() if request.get(key)]
    if ignored:
        keys = ", ".join(key for key in IGNORED if request.get(key))
        found.append(f"{keys} accepted and ignored: the local backend has no {' or '.join(ignored)}.")
    return found


def command_problems(request: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """What an argv cannot hold (a NUL byte), as ``(path, error code, message)``; AWS's own
    limits (at most 100 entries of at most 256 characters) are ``jobs.api_limits``'s."""
    spec = request.get("AlgorithmSpecification") or {}
    problems = []
    for key in ("ContainerEntrypoint", "ContainerArguments"):
        for i, value in enumerate(spec.get(key) or []):
            if isinstance(value, str) and "\0" in value:
                problems.append(
                    (
                        f"AlgorithmSpecification.{key}[{i}]",
                        "ValidationException",
                        f"AlgorithmSpecification.{key}[{i}] contains a NUL character, which no "
                        "command line can hold.",
                    )
                )
    return problems
