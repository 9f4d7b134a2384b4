from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.servers import moto_s3_server

FAKE_AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """Endpoint URL of a real S3-protocol server on 127.0.0.1 (shared by the session)."""
    with moto_s3_server() as url:
        yield url


@pytest.fixture
def s3_env(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Environment pointing boto3 (in this process and in children) at the loopback S3."""
    env = {**FAKE_AWS, "AWS_ENDPOINT_URL_S3": s3_endpoint}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


@pytest.fixture
def local_role(settings) -> str:
    """The local placeholder role mapped to ``FAKE_AWS``'s keys (``ANYJOB_LOCAL_ROLES``): local
    jobs under it may then name s3:// locations, staged and uploaded with those keys."""
    import json

    role = "arn:aws:iam::000000000000:role/anyjob-local"
    keys = {
        "access_key_id": FAKE_AWS["AWS_ACCESS_KEY_ID"],
        "secret_access_key": FAKE_AWS["AWS_SECRET_ACCESS_KEY"],
        "session_token": FAKE_AWS["AWS_SESSION_TOKEN"],
    }
    settings.ANYJOB_LOCAL_ROLES = json.dumps({role: keys})
    return role


@pytest.fixture
def s3_client(s3_env: dict[str, str]):
    import boto3

    return boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL_S3"], region_name="us-east-1")


# The team of the view tests, as in healthchecks: alice owns jobs, bob is her teammate,
# charlie is staff.
@pytest.fixture
def alice():
    from django.contrib.auth import get_user_model

    return get_user_model().objects.create_user("alice", password="wonderland")


@pytest.fixture
def bob():
    from django.contrib.auth import get_user_model

    return get_user_model().objects.create_user("bob", password="builder")


@pytest.fixture
def charlie():
    from django.contrib.auth import get_user_model

    return get_user_model().objects.create_user("charlie", password="chocolate", is_staff=True)
