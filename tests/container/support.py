"""Helpers for container tests: lay out a base directory and run the real entry points."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CONTAINER_SRC = REPO / "container"
EXAMPLES = CONTAINER_SRC / "examples"


def container_env(base: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """A clean environment for ``python -m anyjob_container`` against ``base``."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("SM_", "SAGEMAKER_", "ANYJOB_", "PYTEST_"))
    }
    env["PYTHONPATH"] = str(CONTAINER_SRC)
    env["SAGEMAKER_BASE_DIR"] = str(base)
    env.update(extra or {})
    return env


def write_config(
    base: Path,
    hyperparameters: dict | None = None,
    channels: dict[str, dict] | None = None,
    resource: dict | None = None,
) -> None:
    """Write the three config files as the platform does (channels get their directories)."""
    config = base / "input" / "config"
    config.mkdir(parents=True, exist_ok=True)
    (config / "hyperparameters.json").write_text(json.dumps(hyperparameters or {}))
    data_config = {}
    for name, extra in (channels or {}).items():
        data_config[name] = {
            "TrainingInputMode": "File",
            "S3DistributionType": "FullyReplicated",
            "RecordWrapperType": "None",
            **extra,
        }
        (base / "input" / "data" / name).mkdir(parents=True, exist_ok=True)
    (config / "inputdataconfig.json").write_text(json.dumps(data_config))
    resource = resource or {
        "current_host": "algo-1",
        "hosts": ["algo-1"],
        "current_instance_type": "ml.m5.large",
        "current_group_name": "homogeneousCluster",
        "instance_groups": [
            {"instance_group_name": "homogeneousCluster", "instance_type": "ml.m5.large", "hosts": ["algo-1"]}
        ],
        "network_interface_name": "eth0",
    }
    (config / "resourceconfig.json").write_text(json.dumps(resource))


def make_tar_gz(path: Path, files: dict[str, str | bytes], mode: int = 0o644) -> Path:
    """Write a .tar.gz holding ``files`` (name → content)."""
    with tarfile.open(path, "w:gz") as tf:
        for name, content in files.items():
            data = content.encode() if isinstance(content, str) else content
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = mode
            tf.addfile(info, io.BytesIO(data))
    return path


def run_container(
    base: Path, command: str = "train", extra_env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "anyjob_container", command],
        env=container_env(base, extra_env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def make_wheel(directory: Path, name: str, version: str, module_source: str) -> Path:
    """Build a minimal pure-Python wheel by hand (one module), so pip can install offline."""
    import base64
    import hashlib
    import zipfile

    directory.mkdir(parents=True, exist_ok=True)
    dist_info = f"{name}-{version}.dist-info"
    files = {
        f"{name}.py": module_source.encode(),
        f"{dist_info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{dist_info}/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: anyjob-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    record = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{dist_info}/RECORD,,")
    files[f"{dist_info}/RECORD"] = ("\n".join(record) + "\n").encode()
    wheel = directory / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for path, data in files.items():
            zf.writestr(path, data)
    return wheel
