"""Helpers for local-backend tests: requests as the dashboard builds them, and waiting."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

from tests.container.support import EXAMPLES

FINAL = {"Completed", "Failed", "Stopped"}

#: Scripts the tests run as jobs, in one code directory.
SCRIPTS = {
    "sleep_forever.py": "import time\nprint('sleeping', flush=True)\ntime.sleep(3600)\n",
    "graceful.py": (
        "import os, signal, sys, time\n"
        "def stop(signum, frame):\n"
        "    open('/opt/ml/model/saved-on-stop', 'w').write('checkpoint')\n"
        "    print('saved on stop', flush=True)\n"
        "    sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, stop)\n"
        "print('ready', flush=True)\n"
        "time.sleep(3600)\n"
    ),
    "probe.py": (
        "import json, os, socket, sys\n"
        "results = {}\n"
        "def attempt(name, fn):\n"
        "    try:\n"
        "        results[name] = repr(fn())[:200]\n"
        "    except Exception as exc:\n"
        "        results[name] = 'refused: ' + type(exc).__name__\n"
        "def read(t):\n"
        "    return os.listdir(t) if os.path.isdir(t) else open(t, 'rb').read(20)\n"
        "for target in json.loads(os.environ.get('PROBE_READ', '[]')):\n"
        "    attempt('read ' + target, lambda t=target: read(t))\n"
        "for target in json.loads(os.environ.get('PROBE_WRITE', '[]')):\n"
        "    attempt('write ' + target, lambda t=target: open(t, 'w').write('x'))\n"
        "port = os.environ.get('PROBE_PORT')\n"
        "if port:\n"
        "    address = ('127.0.0.1', int(port))\n"
        "    attempt('connect', lambda: socket.create_connection(address, timeout=2).close())\n"
        "open('/opt/ml/model/probe.json', 'w').write(json.dumps(results))\n"
        "print(json.dumps(results), flush=True)\n"
    ),
}


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def training_request(
    name: str,
    code: Path | str,
    program: str,
    output: Path,
    channels: dict[str, str] | None = None,
    hyperparameters: dict[str, str] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    source = code if isinstance(code, str) else code.as_uri()
    if channels:  # AWS refuses an empty list: a job without data has no InputDataConfig
        extra["InputDataConfig"] = [
            {
                "ChannelName": channel,
                "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": uri}},
                "ContentType": "text/csv",
            }
            for channel, uri in channels.items()
        ]
    return {
        "TrainingJobName": name,
        "AlgorithmSpecification": {"TrainingImage": "anyjob/generic:latest", "TrainingInputMode": "File"},
        "RoleArn": "arn:aws:iam::000000000000:role/anyjob-local",
        "HyperParameters": {
            "sagemaker_program": f'"{program}"',
            "sagemaker_submit_directory": f'"{source}"',
            **(hyperparameters or {}),
        },
        "OutputDataConfig": {"S3OutputPath": output.as_uri()},
        "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 1},
        "StoppingCondition": {"MaxRuntimeInSeconds": 600},
        **extra,
    }


def wait_for(backend, name: str, statuses: set[str] = FINAL, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job = backend.describe_training_job(name)
        if job["TrainingJobStatus"] in statuses:
            return job
        assert time.monotonic() < deadline, (
            f"{name} still {job['TrainingJobStatus']}/{job['SecondaryStatus']}"
        )
        time.sleep(0.1)


def wait_for_log(backend, name: str, text: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not any(text in e["message"] for e in backend.get_training_logs(name)["events"]):
        assert time.monotonic() < deadline, f"{text!r} never appeared in the log of {name}"
        time.sleep(0.1)


def linear_example() -> tuple[Path, Path]:
    return EXAMPLES / "linear", EXAMPLES / "linear" / "data"


SCRIPTS["flood.py"] = (
    "for i in range(100_000):\n    print(f'line {i} ' + 'x' * 40)\nprint('done', flush=True)\n"
)
SCRIPTS["hello.py"] = (
    "import os\nopen(os.environ['SM_MODEL_DIR'] + '/hello', 'w').write('hi')\nprint('hello')\n"
)
