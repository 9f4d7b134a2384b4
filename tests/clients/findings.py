"""Checking what a client script found (``scripts/common.py``), every mismatch at once."""

from __future__ import annotations

import json


def no_errors(found: dict) -> None:
    """No step of the script raised (each one that did is shown whole)."""
    assert not found["errors"], json.dumps(found["errors"], indent=1)


def expect(found: dict, **wanted) -> None:
    """Every finding against what AWS answers (a value, or a predicate), all mismatches at once."""
    wrong = {}
    for key, want in wanted.items():
        got = found.get(key, "<missing>")
        if not (want(got) if callable(want) else got == want):
            wrong[key] = {"got": got, "want": "(see test)" if callable(want) else want}
    assert not wrong, json.dumps(wrong, indent=1, default=str)
