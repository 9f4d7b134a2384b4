"""Fixtures for the local backend's tests: the image environment, built once per session."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from jobs.backends.local import image

REPO = Path(__file__).resolve().parents[2]
#: Kept across runs (var/ is ignored by git; `make clean` removes it); a fresh clone builds it.
IMAGE_ENV_ROOT = Path(os.environ.get("ANYJOB_IMAGE_ENV_ROOT") or REPO / "var" / "test-cache" / "image")


@pytest.fixture(scope="session")
def image_python() -> Path:
    """The image environment's python (built on first use: ~15 s here, then instant)."""
    started = time.monotonic()
    python = image.ensure_image_env(IMAGE_ENV_ROOT)
    took = time.monotonic() - started
    if took > 1:
        print(f"\nbuilt the image environment {python.parent.parent} in {took:.1f} s")
    return python


@pytest.fixture
def backend(image_python: Path):
    """The local backend, with the image environment already built (the first build takes a
    while)."""
    from jobs.backends.local.backend import LocalBackend

    return LocalBackend()


@pytest.fixture
def output(tmp_path: Path) -> Path:
    """Where a test's jobs put their artifacts (file://)."""
    return tmp_path / "artifacts"
