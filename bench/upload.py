"""bench/upload: a 100 MB code bundle to the loopback S3 server, against ``aws s3 cp``.

anyjob stores a bundle with ``jobs.storage.put_bytes`` (boto3's managed transfer: multipart,
concurrent parts, the sha256 as metadata), and a second store of the same code is skipped.
The baseline, in the same run, is the AWS CLI (v1, from PyPI, in its own virtualenv under
``var/bench-tools/``) copying the same file to the same server. Runs alternate; medians are
compared. Target: ≥ 0.9× the CLI's throughput.

Run: ``make bench`` or ``.venv/bin/python bench/upload.py [--mb 100 --runs 3]``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
AWSCLI = "awscli==1.46.3"
TOOLS = REPO / "var" / "bench-tools" / "awscli"
FAKE = {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def awscli() -> Path:
    """The ``aws`` command of the pinned AWS CLI, installed once in its own virtualenv."""
    aws = TOOLS / "bin" / "aws"
    marker = TOOLS / f".{AWSCLI}"
    if not marker.exists():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(TOOLS)], check=True)
        subprocess.run(
            [
                str(TOOLS / "bin" / "python"),
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                AWSCLI,
            ],
            check=True,
        )
        marker.touch()
    return aws


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    aws = awscli()

    from tests.servers import moto_s3_server

    with moto_s3_server() as endpoint, tempfile.TemporaryDirectory() as tmp:
        os.environ.update({**FAKE, "AWS_ENDPOINT_URL_S3": endpoint})
        from jobs import aws as aws_clients
        from jobs import bundles, storage

        aws_clients.reset()
        aws_clients.client("s3").create_bucket(Bucket="bench")
        bundle = bundles.build({"train.py": b"print(1)\n", "weights.bin": os.urandom(args.mb * 1024 * 1024)})
        path = Path(tmp) / "sourcedir.tar.gz"
        path.write_bytes(bundle.data)
        size_mb = len(bundle.data) / 1e6
        env = {**os.environ, **FAKE}
        ours, cli = [], []
        for run in range(args.runs):
            started = time.perf_counter()
            storage.put_bytes(bundle.data, f"s3://bench/ours/{run}/sourcedir.tar.gz", sha256=bundle.sha256)
            ours.append(time.perf_counter() - started)
            started = time.perf_counter()
            subprocess.run(
                [
                    str(aws),
                    "s3",
                    "cp",
                    str(path),
                    f"s3://bench/cli/{run}/sourcedir.tar.gz",
                    "--endpoint-url",
                    endpoint,
                    "--only-show-errors",
                ],
                check=True,
                env=env,
            )
            cli.append(time.perf_counter() - started)
        # Integrity, and the skip: the same code again uploads nothing.
        stored = storage.read_bytes("s3://bench/ours/0/sourcedir.tar.gz", len(bundle.data))
        assert hashlib.sha256(stored).hexdigest() == bundle.sha256
        store = "s3://bench/store"
        bundles.store(bundle, store)
        started = time.perf_counter()
        bundles.store(bundle, store)
        skip_ms = (time.perf_counter() - started) * 1000

    ours_mbs, cli_mbs = size_mb / statistics.median(ours), size_mb / statistics.median(cli)
    print(f"upload: a {size_mb:.0f} MB bundle to a loopback S3 server, {args.runs} runs each")
    print(f"  anyjob (storage.put_bytes):  median {statistics.median(ours):6.2f} s  {ours_mbs:7.1f} MB/s")
    print(f"  aws s3 cp ({AWSCLI}): median {statistics.median(cli):6.2f} s  {cli_mbs:7.1f} MB/s")
    print(
        f"  ratio anyjob/cli throughput: {ours_mbs / cli_mbs:.2f}x (target >= 0.9: "
        f"{'PASS' if ours_mbs / cli_mbs >= 0.9 else 'MISS'})"
    )
    print(f"  the same bundle stored again: skipped in {skip_ms:.1f} ms (one HEAD request)")


if __name__ == "__main__":
    main()
