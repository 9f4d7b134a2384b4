"""bench/train_overhead: time from ``train`` start to the user script's first line.

The code comes as a ``file://`` tar.gz and as ``s3://`` on a loopback S3 server (moto),
each compared with baselines measured in the same run: ``python -c pass`` (interpreter
start) and ``python -c "import boto3; boto3.client('s3')"`` (what any S3 access costs).
Targets (excluding requirements installation): ≤ 300 ms for file://, ≤ 700 ms for s3://.

Run: ``make bench`` or ``.venv/bin/python bench/train_overhead.py [--runs N]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.container.support import container_env, make_tar_gz, write_config  # noqa: E402
from tests.servers import moto_s3_server  # noqa: E402

FIRST_LINE = "import time; T = time.time()\nopen('first-line', 'w').write(repr(T))\n"


def timed_command(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def time_to_first_line(source: str, env_extra: dict[str, str]) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "ml"
        write_config(base, {"sagemaker_program": "train.py", "sagemaker_submit_directory": source})
        env = container_env(base, env_extra)
        start = time.time()
        subprocess.run(
            [sys.executable, "-m", "anyjob_container", "train"],
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        first = float((base / "code" / "first-line").read_text())
        return first - start


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp, moto_s3_server() as endpoint:
        archive = make_tar_gz(Path(tmp) / "sourcedir.tar.gz", {"train.py": FIRST_LINE})
        aws = {
            "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL_S3": endpoint,
        }
        os.environ.update(aws)
        import boto3

        s3 = boto3.client("s3")
        s3.create_bucket(Bucket="bench")
        s3.upload_file(str(archive), "bench", "job/source/sourcedir.tar.gz")

        py = sys.executable
        results: dict[str, list[float]] = {
            k: [] for k in ("python -c pass", "import boto3 + client", "file://", "s3://")
        }
        # Interleave the measurements so background noise hits every series alike.
        for _ in range(args.runs):
            results["python -c pass"].append(timed_command([py, "-c", "pass"]))
            results["import boto3 + client"].append(
                timed_command([py, "-c", "import boto3; boto3.client('s3')"])
            )
            results["file://"].append(time_to_first_line(f"file://{archive}", {}))
            results["s3://"].append(time_to_first_line("s3://bench/job/source/sourcedir.tar.gz", aws))

    base_py = median_ms(results["python -c pass"])
    base_boto = median_ms(results["import boto3 + client"])
    file_ms = median_ms(results["file://"])
    s3_ms = median_ms(results["s3://"])
    print(f"train_overhead: median of {args.runs} runs each (ms)")
    print(f"  baseline python -c pass                 {base_py:8.1f}")
    print(f"  baseline import boto3 + s3 client       {base_boto:8.1f}")
    print(
        f"  train → first line, code from file://   {file_ms:8.1f}  = {file_ms / base_py:.2f}× python -c pass"
        f"   (target ≤ 300 ms: {'met' if file_ms <= 300 else 'MISSED'})"
    )
    print(
        f"  train → first line, code from s3://     {s3_ms:8.1f}  = {s3_ms / base_boto:.2f}× boto3 baseline"
        f"   (target ≤ 700 ms: {'met' if s3_ms <= 700 else 'MISSED'})"
    )
    print(
        json.dumps(
            {
                "python_pass_ms": round(base_py, 1),
                "boto3_client_ms": round(base_boto, 1),
                "file_ms": round(file_ms, 1),
                "s3_ms": round(s3_ms, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
