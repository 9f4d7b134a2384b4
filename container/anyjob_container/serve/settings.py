"""Serving settings from the environment, checked before anything starts.

A garbage value is a configuration mistake, not a model problem: ``serve`` refuses to
start with one line naming the variable (exit 1), instead of a gunicorn traceback.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

from ..errors import ConfigError

DEFAULT_HOST = "0.0.0.0"  # noqa: S104 - SageMaker sends traffic to the container's address
DEFAULT_PORT = 8080
DEFAULT_TIMEOUT = 60
DEFAULT_ACCEPT = "application/json"

#: gunicorn worker classes we support; the first is the default (why: see server.py).
WORKER_CLASSES = ("sync", "gthread")

_MEDIA_TYPE = re.compile(r"[A-Za-z0-9!#$&^_.+-]+/[A-Za-z0-9!#$&^_.+*-]+")


def cpu_count() -> int:
    """CPUs this process may run on (a container's CPU set, not the host's)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _whole_number(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, not {raw!r}") from None
    if not low <= value <= high:
        raise ConfigError(f"{name} must be between {low} and {high}, not {value}")
    return value


@dataclass(frozen=True)
class Settings:
    host: str
    port: int
    workers: int
    timeout: int
    default_accept: str
    worker_class: str
    program: str
    submit_directory: str
    region: str
    unix: str = ""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read and check every serving variable; raises ``ConfigError`` naming the bad one."""
        env = os.environ if environ is None else environ
        host = env.get("ANYJOB_BIND_HOST", "").strip() or DEFAULT_HOST
        if any(c.isspace() or c in "/[]" for c in host.strip("[]")):
            raise ConfigError(f"ANYJOB_BIND_HOST must be a host name or IP address, not {host!r}")
        accept = env.get("SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT", "").strip() or DEFAULT_ACCEPT
        if not _MEDIA_TYPE.fullmatch(accept) or accept.startswith("*"):
            raise ConfigError(
                f"SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT must be a media type such as "
                f"application/json, not {accept!r}"
            )
        worker_class = env.get("ANYJOB_SERVE_WORKER_CLASS", "").strip() or WORKER_CLASSES[0]
        if worker_class not in WORKER_CLASSES:
            raise ConfigError(
                f"ANYJOB_SERVE_WORKER_CLASS must be one of {', '.join(WORKER_CLASSES)}, not {worker_class!r}"
            )
        return cls(
            host=host,
            port=_whole_number(env, "SAGEMAKER_BIND_TO_PORT", DEFAULT_PORT, 1, 65535),
            workers=_whole_number(env, "SAGEMAKER_MODEL_SERVER_WORKERS", cpu_count(), 1, 1024),
            timeout=_whole_number(env, "SAGEMAKER_MODEL_SERVER_TIMEOUT", DEFAULT_TIMEOUT, 1, 86_400),
            default_accept=accept.lower(),
            worker_class=worker_class,
            program=env.get("SAGEMAKER_PROGRAM", "").strip(),
            # The copy anyjob's local backend staged (an s3:// bundle of its embedded S3), if any.
            submit_directory=(
                env.get("ANYJOB_STAGED_SUBMIT_DIRECTORY", "").strip()
                or env.get("SAGEMAKER_SUBMIT_DIRECTORY", "").strip()
            ),
            region=env.get("SAGEMAKER_REGION", "").strip(),
            unix=_unix_socket(env),
        )

    @property
    def bind(self) -> str:
        """gunicorn's ``host:port``, with IPv6 addresses in brackets; or ``unix:PATH``."""
        if self.unix:
            return f"unix:{self.unix}"
        host = self.host
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"{host}:{self.port}"


def _unix_socket(env: Mapping[str, str]) -> str:
    """``ANYJOB_BIND_UNIX``: serve on this unix socket instead of TCP (anyjob's local backend
    reaches a sandboxed server this way only, so nothing else on the machine can). Not part
    of SageMaker's contract; unset on AWS."""
    path = env.get("ANYJOB_BIND_UNIX", "").strip()
    if path and (not path.startswith("/") or len(path.encode()) > 100 or "\0" in path):
        raise ConfigError(f"ANYJOB_BIND_UNIX must be an absolute path of at most 100 bytes, not {path!r}")
    return path
