"""Whether an invocation's answer meets a saved test's expectation (with the reason, in words)."""

from __future__ import annotations

import json
import math
import re
from typing import Any

import regex

PATTERN_TIMEOUT_SECONDS = 1.0
_STEP = re.compile(r"\.?([^.\[\]]+)|\[(-?\d+)\]")


class PathError(ValueError):
    pass


def parse_path(path: str) -> list[str | int]:
    """``predictions[0].score`` (or ``$.predictions[0].score``) → ``["predictions", 0, "score"]``."""
    text = path.strip().removeprefix("$")
    steps: list[str | int] = []
    pos = 0
    while pos < len(text):
        m = _STEP.match(text, pos)
        if not m or m.end() == pos:
            raise PathError(f"{path!r} is not a path like predictions[0].score")
        steps.append(m[1] if m[1] is not None else int(m[2]))
        pos = m.end()
    return steps


def value_at(document: Any, path: str) -> Any:
    value = document
    for step in parse_path(path):
        if isinstance(step, int):
            if not isinstance(value, list) or not -len(value) <= step < len(value):
                raise PathError(f"no item [{step}] at {path!r}")
        elif not isinstance(value, dict) or step not in value:
            raise PathError(f"no key {step!r} at {path!r}")
        value = value[step]
    return value


def _expected(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def _close(actual: Any, expected: Any, tolerance: float | None) -> bool:
    numbers = (int, float)
    if isinstance(actual, numbers) and isinstance(expected, numbers) and not isinstance(actual, bool):
        return math.isclose(actual, expected, rel_tol=0, abs_tol=tolerance or 0)
    if isinstance(actual, list) and isinstance(expected, list) and len(actual) == len(expected):
        return all(_close(a, e, tolerance) for a, e in zip(actual, expected, strict=True))
    return actual == expected


def check(test: Any, status_code: int | None, body: bytes, error: str = "") -> tuple[bool, str]:
    """``(passed, why)`` for an answer (``status_code`` None: no answer at all)."""
    if status_code is None:
        return False, f"no answer: {error or 'the request failed'}"
    kind = test.expect
    if kind == "none":
        return True, f"answered {status_code}"
    if kind == "status":
        ok = status_code == test.expected_status
        return ok, f"status {status_code}" + ("" if ok else f", expected {test.expected_status}")
    text = body.decode("utf-8", errors="replace")
    if kind == "regex":
        try:
            found = regex.search(test.pattern, text, timeout=PATTERN_TIMEOUT_SECONDS)
        except TimeoutError:
            return False, "the pattern took too long to match"
        except regex.error as exc:
            return False, f"the pattern is not valid: {exc}"
        return bool(found), ("the body matches" if found else f"the body does not match {test.pattern!r}")
    if kind == "json":
        try:
            document = json.loads(text)
        except ValueError:
            return False, "the body is not JSON"
        try:
            actual = value_at(document, test.json_path)
        except PathError as exc:
            return False, str(exc)
        expected = _expected(test.expected_value)
        ok = _close(actual, expected, test.tolerance)
        shown = json.dumps(actual)[:200]
        tol = f" ± {test.tolerance:g}" if test.tolerance else ""
        return ok, f"{test.json_path} = {shown}" + ("" if ok else f", expected {test.expected_value}{tol}")
    return False, f"unknown expectation {kind!r}"
