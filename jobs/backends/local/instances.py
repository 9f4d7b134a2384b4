"""SageMaker's ``ml.*`` instance types as data: what one instance of each type gives a job.

The table (``instance_types.json``, beside this module) holds the vCPUs, memory and
accelerators AWS publishes for each type (an ``ml.X`` instance has the specification of EC2
type ``X``); its ``source`` entry says where the numbers come from. The local emulator holds
each job and endpoint to its type's vCPUs and memory (``resources.py``) and refuses a type the
table does not have. No Django here: the job process reads it before Django is set up.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

TABLE = Path(__file__).with_name("instance_types.json")
GIB = 1024**3


@dataclass(frozen=True)
class InstanceType:
    name: str  # e.g. "ml.m5.large"
    vcpus: int
    memory_bytes: int
    gpus: int  # accelerators of any kind (GPUs, Trainium or Inferentia chips)
    accelerator: str | None  # e.g. "NVIDIA A10G"; None without accelerators

    @property
    def memory_gib(self) -> float:
        return self.memory_bytes / GIB


@cache
def table() -> dict[str, InstanceType]:
    """Every instance type of the table by name (read once per process)."""
    raw = json.loads(TABLE.read_text())["types"]
    return {
        name: InstanceType(
            name=name,
            vcpus=int(spec["vcpus"]),
            memory_bytes=int(spec["memory_gib"] * GIB),
            gpus=int(spec["gpus"]),
            accelerator=spec["accelerator"],
        )
        for name, spec in raw.items()
    }


def lookup(name: str) -> InstanceType | None:
    """The instance type called ``name`` (e.g. ``"ml.m5.large"``), or None if the table lacks it."""
    return table().get(name)
