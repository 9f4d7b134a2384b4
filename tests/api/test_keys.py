"""Access keys: the settings page (own keys only, the secret shown once, CSRF) and
``manage.py create_access_key`` (its lines ``eval``-ed by bash, then boto3 with only them)."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap

import pytest
from django.test import Client

from tests.api.conftest import NO_PROXY_ENV

pytestmark = pytest.mark.django_db


def create(client: Client, description: str = "laptop"):
    return client.post("/settings/keys/", {"description": description})


def test_the_page_needs_a_signed_in_user(client: Client) -> None:
    response = client.get("/settings/keys/")
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")
    assert client.post("/settings/keys/1/revoke/").status_code == 302


def test_a_new_keys_secret_is_shown_once_and_stored_encrypted(client: Client, alice) -> None:
    from jobs.awsapi.models import AccessKey

    client.force_login(alice)
    response = create(client)
    assert response.status_code == 201
    assert "no-store" in response["Cache-Control"]
    page = response.content.decode()
    key = AccessKey.objects.get(user=alice)
    secret = re.search(r"export AWS_SECRET_ACCESS_KEY=(\S+)", page).group(1)
    assert key.secret() == secret and len(secret) == 40
    assert f"export AWS_ACCESS_KEY_ID={key.access_key_id}" in page
    assert "export AWS_ENDPOINT_URL=http://127.0.0.1:8000/aws" in page
    assert re.fullmatch(r"AKIA[A-Z2-7]{16}", key.access_key_id)
    # Not in clear in the database, and not on the page again.
    assert secret not in key.encrypted_secret
    listing = client.get("/settings/keys/").content.decode()
    assert key.access_key_id in listing and secret not in listing and "laptop" in listing


def test_the_ciphertext_is_bound_to_its_key(alice) -> None:
    from cryptography.exceptions import InvalidTag

    from jobs.awsapi.models import AccessKey

    first, _ = AccessKey.create_for(alice)
    second, _ = AccessKey.create_for(alice)
    second.encrypted_secret = first.encrypted_secret  # moved to another row
    with pytest.raises(InvalidTag):
        second.secret()


def test_revoke_and_someone_elses_key(client: Client, alice, bob) -> None:
    from jobs.awsapi.models import AccessKey

    theirs, _ = AccessKey.create_for(bob)
    client.force_login(alice)
    create(client)
    mine = AccessKey.objects.get(user=alice)
    listing = client.get("/settings/keys/").content.decode()
    assert theirs.access_key_id not in listing
    # Bob's key by id: not found, and still active.
    assert client.post(f"/settings/keys/{theirs.pk}/revoke/").status_code == 404
    theirs.refresh_from_db()
    assert theirs.revoked_at is None
    # A GET does not revoke.
    assert client.get(f"/settings/keys/{mine.pk}/revoke/").status_code == 405
    response = client.post(f"/settings/keys/{mine.pk}/revoke/", follow=True)
    mine.refresh_from_db()
    assert mine.revoked_at is not None
    assert f"Access key {mine.access_key_id} is revoked" in response.content.decode()


def test_forms_need_the_csrf_token(alice) -> None:
    from jobs.awsapi.models import AccessKey

    key, _ = AccessKey.create_for(alice)
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    assert client.post("/settings/keys/", {"description": "x"}).status_code == 403
    assert client.post(f"/settings/keys/{key.pk}/revoke/").status_code == 403
    assert AccessKey.objects.filter(user=alice).count() == 1
    key.refresh_from_db()
    assert key.revoked_at is None
    page = client.get("/settings/keys/").content.decode()
    assert page.count('name="csrfmiddlewaretoken"') >= 2


def test_active_keys_are_bounded(client: Client, alice) -> None:
    from jobs.awsapi.models import MAX_ACTIVE_KEYS_PER_USER, AccessKey

    client.force_login(alice)
    for _ in range(MAX_ACTIVE_KEYS_PER_USER):
        assert create(client).status_code == 201
    response = create(client)
    assert response.status_code == 200
    assert "revoke one you no longer use first" in response.content.decode()
    assert AccessKey.objects.filter(user=alice).count() == MAX_ACTIVE_KEYS_PER_USER
    AccessKey.objects.filter(user=alice).first().revoke()
    assert create(client).status_code == 201
    assert create(client, "y" * 201).status_code == 200  # the description's limit


def test_the_nav_links_to_the_page(client: Client, alice) -> None:
    client.force_login(alice)
    assert 'href="/settings/keys/"' in client.get("/jobs/").content.decode()


def test_the_command_refuses_an_unknown_user(capsys) -> None:
    from django.core.management import CommandError, call_command

    with pytest.raises(CommandError, match="There is no user named 'nobody'"):
        call_command("create_access_key", "nobody")


BOTO3_WITH_ENV_ONLY = textwrap.dedent(
    """
    import boto3
    identity = boto3.client("sts").get_caller_identity()
    role = boto3.client("iam").get_role(RoleName="anyjob-local")["Role"]
    print(identity["Arn"], role["AssumeRolePolicyDocument"]["Statement"][0]["Principal"]["Service"])
    """
)


@pytest.mark.slow
def test_create_access_key_lines_evaled_in_bash_work_through_gunicorn(web_server, tmp_path) -> None:
    done = web_server.manage("create_access_key", "admin")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert [line.split("=", 1)[0] for line in lines] == [
        "export AWS_ENDPOINT_URL",
        "export AWS_ACCESS_KEY_ID",
        "export AWS_SECRET_ACCESS_KEY",
        "export AWS_DEFAULT_REGION",
    ]
    assert lines[0] == f"export AWS_ENDPOINT_URL={web_server.url}/aws"
    assert lines[3] == "export AWS_DEFAULT_REGION=us-east-1"
    # Only the four variables (and the closed proxy): nothing else of this process's AWS setup.
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), **NO_PROXY_ENV}
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1"
    exports = done.stdout
    run = subprocess.run(
        ["bash", "-c", f'eval "$1" && exec "{sys.executable}" -c "$2"', "bash", exports, BOTO3_WITH_ENV_ONLY],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/",
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["arn:aws:iam::000000000000:user/admin", "sagemaker.amazonaws.com"]
    # A revoked key: the same lines stop working.
    key_id = lines[1].split("=", 1)[1]
    revoke = web_server.manage(
        "shell",
        "-c",
        f"from jobs.awsapi.models import AccessKey; AccessKey.objects.get(access_key_id='{key_id}').revoke()",
    )
    assert revoke.returncode == 0, revoke.stderr
    run = subprocess.run(
        ["bash", "-c", f'eval "$1" && exec "{sys.executable}" -c "$2"', "bash", exports, BOTO3_WITH_ENV_ONLY],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/",
    )
    assert run.returncode != 0 and "InvalidClientTokenId" in run.stderr
