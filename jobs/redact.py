"""Secret environment variables: sent with the request, never shown again.

A job or an endpoint keeps the names of its secret variables in ``secret_environment``; their
values stay in ``environment`` (the worker needs them to build the request) and every page,
fragment, export and code snippet shows what ``Secrets.redact`` makes of them. It is the one
place that decides what a secret looks like on screen.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

#: What a secret's value becomes wherever the dashboard shows a request or an environment.
PLACEHOLDER = "<secret: set at submit>"
#: Said next to a request shown with secrets in it (boto3 code, CLI JSON).
SECRET_NOTE = f"{PLACEHOLDER} stands for a secret value: put it in before running this."
#: A secret's value found in other text (a log line, an error) is hidden too, from this length
#: on: hiding "1" or "on" everywhere would make the text unreadable and hide nothing.
MIN_SCRUBBED_CHARS = 4


@dataclass(frozen=True)
class Secrets:
    """The secret keys of one job or endpoint, and their values (to find them in text)."""

    keys: frozenset[str] = frozenset()
    values: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.keys)

    def __or__(self, other: Secrets) -> Secrets:
        return Secrets(self.keys | other.keys, _longest_first([*self.values, *other.values]))

    def redact(self, value: Any) -> Any:
        """A copy of ``value`` (a request, a describe answer, log events, any JSON-like data or
        text) without the secrets: in every ``Environment`` map a secret key's value becomes
        ``PLACEHOLDER``, and a secret's value inside any other string is replaced by it too."""
        if not self:
            return value
        if isinstance(value, str):
            if self._pattern is None:
                return value
            # One pass, around the placeholders already there: redacting twice changes nothing.
            parts = value.split(PLACEHOLDER)
            return PLACEHOLDER.join(self._pattern.sub(PLACEHOLDER, part) for part in parts)
        if isinstance(value, Mapping):
            return {
                k: self.environment(v) if k == "Environment" and isinstance(v, Mapping) else self.redact(v)
                for k, v in value.items()
            }
        if isinstance(value, list | tuple):
            return [self.redact(v) for v in value]
        return value

    @cached_property
    def _pattern(self) -> re.Pattern[str] | None:
        return re.compile("|".join(map(re.escape, self.values))) if self.values else None

    def environment(self, environment: Mapping[str, Any], shown: str = PLACEHOLDER) -> dict[str, Any]:
        """An environment map with each secret key's value replaced by ``shown``."""
        if not self:
            return dict(environment)
        return {k: shown if k in self.keys else self.redact(v) for k, v in environment.items()}


def _longest_first(values: Iterable[str]) -> tuple[str, ...]:
    # The longest first, so that a secret containing another one is hidden whole.
    unique = {v for v in values if isinstance(v, str) and len(v) >= MIN_SCRUBBED_CHARS}
    return tuple(sorted(unique, key=len, reverse=True))


def secrets_in(environment: Mapping[str, Any] | None, keys: Iterable[str] | None) -> Secrets:
    """The secrets of an environment map given the names of its secret keys."""
    environment = environment if isinstance(environment, Mapping) else {}
    names = frozenset(str(k) for k in keys or () if isinstance(k, str))
    return Secrets(names, _longest_first(str(environment[k]) for k in names if k in environment))


def secrets_of(obj: Any) -> Secrets:
    """The secrets of a ``TrainingJob`` or an ``Endpoint`` (anything with ``environment`` and
    ``secret_environment``)."""
    return secrets_in(getattr(obj, "environment", None), getattr(obj, "secret_environment", None))
