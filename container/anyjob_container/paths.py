"""The ``/opt/ml`` layout, moved by ``SAGEMAKER_BASE_DIR`` as the official toolkit allows.

Nothing here touches the disk at import time: paths are computed from the environment
each time they are asked for, so tests can point the container at any folder.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_BASE = "/opt/ml"


@dataclass(frozen=True)
class Layout:
    base: Path

    @classmethod
    def from_env(cls, environ: os._Environ | dict | None = None) -> Layout:
        env = os.environ if environ is None else environ
        return cls(Path(env.get("SAGEMAKER_BASE_DIR") or DEFAULT_BASE))

    def resolve(self, location: str) -> str:
        """A plain path under ``/opt/ml`` (an isolated job's ``sagemaker_submit_directory``,
        ``/opt/ml/input/data/code/sourcedir.tar.gz``) as it lies under the moved base; any
        other location as it is."""
        prefix = DEFAULT_BASE + "/"
        if location.startswith(prefix) and self.base != Path(DEFAULT_BASE):
            return str(self.base / location[len(prefix) :])
        return location

    @property
    def input_dir(self) -> Path:
        return self.base / "input"

    @property
    def config_dir(self) -> Path:
        return self.input_dir / "config"

    @property
    def data_dir(self) -> Path:
        return self.input_dir / "data"

    def channel_dir(self, name: str) -> Path:
        return self.data_dir / name

    @property
    def code_dir(self) -> Path:
        return self.base / "code"

    @property
    def model_dir(self) -> Path:
        return self.base / "model"

    @property
    def output_dir(self) -> Path:
        return self.base / "output"

    @property
    def output_data_dir(self) -> Path:
        return self.output_dir / "data"

    @property
    def output_intermediate_dir(self) -> Path:
        return self.output_dir / "intermediate"

    @property
    def failure_file(self) -> Path:
        return self.output_dir / "failure"

    @property
    def full_failure_file(self) -> Path:
        return self.output_data_dir / "failure"

    @property
    def success_file(self) -> Path:
        return self.output_dir / "success"

    @property
    def checkpoint_dir(self) -> Path:
        return self.base / "checkpoints"
