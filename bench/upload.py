"""bench/upload: a 100 MB code bundle to the loopback S3 server, like against like.

anyjob stores a bundle with ``jobs.storage.put_bytes`` (boto3's managed transfer: multipart,
concurrent parts, the sha256 as metadata), and a second store of the same code is skipped.
Two comparisons, each alternating its two sides run by run in the same run, medians compared:

- cold processes: a ``python -c`` process doing anyjob's upload from nothing (interpreter start,
  imports, client, reading the file, ``storage.put_bytes``) against the AWS CLI (v1, from PyPI,
  in its own virtualenv under ``var/bench-tools/``) copying the same file: ``aws s3 cp``;
- warm, in this process: ``storage.put_bytes`` (its cached client) against boto3's own
  ``upload_file`` (s3transfer) on a client of the same botocore config (``jobs.aws``'s) with the
  same ``TransferConfig`` (boto3's default, which anyjob uses) and the same metadata, both
  after one warm-up upload.

Both go to the same server (moto's server mode on 127.0.0.1). Target: ≥ 0.9× the baseline's
throughput in each comparison.

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


COLD_ANYJOB = """
import sys
from pathlib import Path
from jobs import storage
path, uri, sha256 = sys.argv[1:4]
storage.put_bytes(Path(path).read_bytes(), uri, sha256=sha256)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    aws = awscli()

    from tests.servers import moto_s3_server

    with moto_s3_server() as endpoint, tempfile.TemporaryDirectory() as tmp:
        os.environ.update({**FAKE, "AWS_ENDPOINT_URL_S3": endpoint})
        import boto3.session
        from boto3.s3.transfer import TransferConfig

        from jobs import aws as aws_clients
        from jobs import bundles, storage

        aws_clients.reset()
        aws_clients.client("s3").create_bucket(Bucket="bench")
        bundle = bundles.build({"train.py": b"print(1)\n", "weights.bin": os.urandom(args.mb * 1024 * 1024)})
        path = Path(tmp) / "sourcedir.tar.gz"
        path.write_bytes(bundle.data)
        size_mb = len(bundle.data) / 1e6
        env = {**os.environ, **FAKE, "PYTHONPATH": str(REPO)}
        meta = {"Metadata": {"sha256": bundle.sha256}}
        plain = boto3.session.Session().client("s3", config=aws_clients.DEFAULT_CONFIG)
        transfer = TransferConfig()  # what put_bytes's upload_fileobj uses when given none

        def cold_ours(run: int) -> None:
            uri = f"s3://bench/cold-ours/{run}/sourcedir.tar.gz"
            argv = [sys.executable, "-c", COLD_ANYJOB, str(path), uri, bundle.sha256]
            subprocess.run(argv, check=True, env=env, cwd=tmp)

        def cold_cli(run: int) -> None:
            uri = f"s3://bench/cold-cli/{run}/sourcedir.tar.gz"
            argv = [str(aws), "s3", "cp", str(path), uri, "--endpoint-url", endpoint, "--only-show-errors"]
            subprocess.run([*argv, "--metadata", f"sha256={bundle.sha256}"], check=True, env=env, cwd=tmp)

        def warm_ours(run: int) -> None:
            storage.put_bytes(
                bundle.data, f"s3://bench/warm-ours/{run}/sourcedir.tar.gz", sha256=bundle.sha256
            )

        def warm_boto3(run: int) -> None:
            key = f"warm-boto3/{run}/sourcedir.tar.gz"
            plain.upload_file(str(path), "bench", key, ExtraArgs=meta, Config=transfer)

        warm_ours(-1), warm_boto3(-1)  # clients, connections and thread pools made
        times: dict[str, list[float]] = {
            name: [] for name in ("cold_ours", "cold_cli", "warm_ours", "warm_boto3")
        }
        for run in range(args.runs):
            for name, fn in (
                ("cold_ours", cold_ours),
                ("cold_cli", cold_cli),
                ("warm_ours", warm_ours),
                ("warm_boto3", warm_boto3),
            ):
                started = time.perf_counter()
                fn(run)
                times[name].append(time.perf_counter() - started)
        # Integrity of each of anyjob's uploads, and the skip: the same code again uploads nothing.
        for prefix in ("cold-ours", "warm-ours"):
            stored = storage.read_bytes(f"s3://bench/{prefix}/0/sourcedir.tar.gz", len(bundle.data))
            assert hashlib.sha256(stored).hexdigest() == bundle.sha256, prefix
            assert storage.stored_sha256(f"s3://bench/{prefix}/0/sourcedir.tar.gz") == bundle.sha256
        store = "s3://bench/store"
        bundles.store(bundle, store)
        started = time.perf_counter()
        bundles.store(bundle, store)
        skip_ms = (time.perf_counter() - started) * 1000

    def mbs(name: str) -> float:
        return size_mb / statistics.median(times[name])

    print(f"upload: a {size_mb:.0f} MB bundle to a loopback S3 server, {args.runs} runs each, alternating")
    print(f"  {'':46} {'median s':>8} {'MB/s':>7}")
    rows = [
        ("cold process: python -c storage.put_bytes", "cold_ours"),
        (f"cold process: aws s3 cp ({AWSCLI})", "cold_cli"),
        ("warm in-process: storage.put_bytes", "warm_ours"),
        ("warm in-process: boto3 upload_file", "warm_boto3"),
    ]
    for label, name in rows:
        print(f"  {label:46} {statistics.median(times[name]):8.2f} {mbs(name):7.1f}")
    for what, ours, base, against in (
        ("cold", "cold_ours", "cold_cli", "aws s3 cp"),
        ("warm", "warm_ours", "warm_boto3", "boto3 upload_file"),
    ):
        ratio = mbs(ours) / mbs(base)
        verdict = "PASS" if ratio >= 0.9 else "MISS"
        print(f"  ratio anyjob/{against} throughput, {what}: {ratio:.2f}x (target >= 0.9: {verdict})")
    print(f"  the same bundle stored again: skipped in {skip_ms:.1f} ms (one HEAD request)")


if __name__ == "__main__":
    main()
