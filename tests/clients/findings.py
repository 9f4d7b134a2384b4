"""Checking what a client script found (``scripts/common.py``), every mismatch at once."""

from __future__ import annotations

import json


def no_errors(found: dict, output: str = "") -> None:
    """No step of the script raised (each one that did is shown whole, with the end of what the
    client printed, such as the job's log an SDK followed)."""
    rest = {k: v for k, v in found.items() if k != "errors"}
    assert not found["errors"], (
        json.dumps(found["errors"], indent=1)
        + "\n--- the rest of what it found ---\n"
        + json.dumps(rest, default=str)[:4000]
        + (f"\n--- the client printed (end) ---\n{output[-4000:]}" if output else "")
    )


def expect(found: dict, **wanted) -> None:
    """Every finding against what AWS answers (a value, or a predicate), all mismatches at once."""
    wrong = {}
    for key, want in wanted.items():
        got = found.get(key, "<missing>")
        if not (want(got) if callable(want) else got == want):
            wrong[key] = {"got": got, "want": "(see test)" if callable(want) else want}
    assert not wrong, json.dumps(wrong, indent=1, default=str)
