"""jobs.aws: the one place that makes boto3 clients."""

from __future__ import annotations

import threading
import uuid

from botocore.config import Config

from jobs import aws


def test_clients_retry_adaptively_with_bounded_timeouts(s3_env):
    s3 = aws.client("s3")
    # botocore counts max_attempts=10 as 10 retries after the first attempt.
    assert s3.meta.config.retries == {"mode": "adaptive", "total_max_attempts": 11}
    assert (s3.meta.config.connect_timeout, s3.meta.config.read_timeout) == (10, 60)


def test_a_caller_config_is_merged_over_the_defaults(s3_env):
    config = Config(read_timeout=5)
    s3 = aws.client("s3", config=config)
    assert s3.meta.config.read_timeout == 5
    assert s3.meta.config.retries["mode"] == "adaptive"


def test_the_s3_endpoint_variable_is_honoured(s3_env, s3_client, s3_endpoint):
    name = f"bkt-{uuid.uuid4().hex[:12]}"
    s3_client.create_bucket(Bucket=name)
    s3 = aws.client("s3")  # no endpoint_url passed: boto3 reads AWS_ENDPOINT_URL_S3 itself
    assert s3.meta.endpoint_url == s3_endpoint
    assert name in [b["Name"] for b in s3.list_buckets()["Buckets"]]


def test_the_general_endpoint_variable_is_honoured(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    sagemaker = aws.client("sagemaker")
    assert sagemaker.meta.endpoint_url == "http://127.0.0.1:9"
    assert sagemaker.meta.region_name == "eu-west-1"


def test_clients_are_cached_per_service_and_region(s3_env):
    assert aws.client("s3") is aws.client("s3")
    assert aws.client("s3") is not aws.client("s3", region="eu-west-1")
    assert aws.client("s3", region="eu-west-1").meta.region_name == "eu-west-1"
    assert aws.client("sagemaker") is not aws.client("s3")


def test_a_changed_environment_or_a_reset_gives_a_new_client(s3_env, monkeypatch):
    before = aws.client("s3")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9")
    after = aws.client("s3")
    assert after is not before and after.meta.endpoint_url == "http://127.0.0.1:9"
    aws.reset()
    assert aws.client("s3") is not after


def test_a_forked_child_builds_its_own_client(s3_env, monkeypatch):
    parent = aws.client("s3")
    monkeypatch.setattr(aws.os, "getpid", lambda: -1)
    assert aws.client("s3") is not parent


def test_threads_share_one_client(s3_env):
    aws.reset()
    seen = []
    barrier = threading.Barrier(8)

    def build():
        barrier.wait()
        seen.append(aws.client("s3"))

    threads = [threading.Thread(target=build) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({id(c) for c in seen}) == 1
