"""Execution roles on the local backend: the setting, the credentials a role stands for, what a
job's container gets, and the system checks that report a wrong setting."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from jobs import checks, storage
from jobs.backends.local import roles

ROLE = "arn:aws:iam::123456789012:role/ml-team"
OTHER = "arn:aws:iam::123456789012:role/nobody"
KEYS = {
    "access_key_id": "AKIAROLEKEY",
    "secret_access_key": "role-secret-value",
    "session_token": "role-token",
}
SERVER = {
    "AWS_ACCESS_KEY_ID": "AKIASERVERKEY",
    "AWS_SECRET_ACCESS_KEY": "server-secret-value",
    "AWS_SESSION_TOKEN": "server-token",
    "AWS_DEFAULT_REGION": "ap-south-1",
    "AWS_REGION": "ap-south-1",
}


@pytest.fixture
def server_env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The server's own credentials and region, which no role may fall back to."""
    for key, value in SERVER.items():
        monkeypatch.setenv(key, value)
    for key in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    return SERVER


@pytest.fixture
def mapped(settings) -> dict[str, dict[str, str]]:
    table = {ROLE: {**KEYS, "region": "eu-west-1"}}
    settings.ANYJOB_LOCAL_ROLES = json.dumps(table)
    return table


@pytest.fixture
def profiles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """AWS config files of the server with one profile that has keys and one that has none."""
    credentials = tmp_path / "credentials"
    credentials.write_text(
        "[ml-team]\naws_access_key_id = AKIAPROFILEKEY\naws_secret_access_key = profile-secret\n"
    )
    config = tmp_path / "config"
    config.write_text("[profile ml-team]\nregion = eu-central-1\n[profile empty]\nregion = eu-north-1\n")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance role to find, quickly
    return tmp_path


def errors(raw: str) -> str:
    with pytest.raises(roles.RolesError) as caught:
        roles.parse(raw)
    return str(caught.value)


# -- the setting -------------------------------------------------------------------------------


def test_it_reads_json_a_file_or_nothing(tmp_path: Path) -> None:
    text = json.dumps({ROLE: {"profile": "ml-team", "region": "eu-west-1"}})
    path = tmp_path / "roles.json"
    path.write_text(text)
    assert roles.parse("") == roles.parse("  ") == {}
    assert roles.parse(text) == roles.parse(str(path))
    role = roles.parse(text)[ROLE]
    assert (role.profile, role.region, role.access_key_id) == ("ml-team", "eu-west-1", None)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ('{"arn": ', "is not valid JSON (line 1, column"),
        ("[]", "must be a JSON object mapping role ARNs"),
        ('{"ml-team": {"profile": "x"}}', "'ml-team' is not an IAM role ARN"),
        (json.dumps({ROLE: "ml-team"}), f"the role {ROLE} must map to an object"),
        (json.dumps({ROLE: {"secret_key": "role-secret-value"}}), "unknown keys 'secret_key'"),
        (json.dumps({ROLE: {"profile": "p", **KEYS}}), "names a profile and keys"),
        (json.dumps({ROLE: {"access_key_id": "AKIAROLEKEY"}}), "both access_key_id and secret_access_key"),
        (json.dumps({ROLE: {"profile": ""}}), "profile must be a non-empty string"),
        (json.dumps({ROLE: {"profile": "p", "region": "Mars"}}), "region 'Mars' is not a region name"),
        ("/nonexistent/roles.json", "='/nonexistent/roles.json' is neither JSON (starting with {) nor a"),
        ('"arn:aws:iam::1:role/x": {"secret_access_key": "role-secret-value"}', "is neither JSON"),
    ],
)
def test_a_wrong_setting_says_what_is_wrong_and_never_quotes_a_secret(value: str, message: str) -> None:
    text = errors(value)
    assert message in text
    assert "ANYJOB_LOCAL_ROLES" in text
    assert "role-secret-value" not in text


def test_secrets_stay_out_of_reprs(mapped) -> None:
    credentials = roles.credentials_for(ROLE)
    source = roles.configured()[ROLE]
    for text in (repr(credentials), repr(source)):
        assert "AKIAROLEKEY" in text
        assert "role-secret-value" not in text and "role-token" not in text


# -- credentials -------------------------------------------------------------------------------


def test_a_mapped_role_has_its_keys_and_an_unmapped_one_none(mapped, server_env) -> None:
    assert roles.credentials_for(ROLE) == roles.Credentials(
        "AKIAROLEKEY", "role-secret-value", "role-token", "eu-west-1"
    )
    assert roles.credentials_for(OTHER) is None
    assert roles.credentials_for(None) is None
    assert roles.is_mapped(ROLE) and not roles.is_mapped(OTHER)


def test_a_profile_gives_its_own_keys_never_the_servers(settings, server_env, profiles) -> None:
    settings.ANYJOB_LOCAL_ROLES = json.dumps({ROLE: {"profile": "ml-team"}, OTHER: {"profile": "empty"}})
    credentials = roles.credentials_for(ROLE)
    assert credentials == roles.Credentials("AKIAPROFILEKEY", "profile-secret", None, "eu-central-1")
    # A profile without keys of its own must not borrow the server's (boto3 would: the
    # environment, the instance role).
    with pytest.raises(roles.RolesError, match="gives no credentials of its own"):
        roles.credentials_for(OTHER)


def test_storage_gets_the_roles_credentials_for_s3_and_nothing_for_files(mapped) -> None:
    assert roles.storage_credentials(OTHER, "file:///data/train") is None
    assert roles.storage_credentials(ROLE, "s3://bucket/train/").access_key_id == "AKIAROLEKEY"
    with pytest.raises(roles.NotMapped) as caught:
        roles.storage_credentials(OTHER, "s3://bucket/train/")
    assert isinstance(caught.value, storage.StorageError)  # fails the step it was for
    assert str(caught.value) == (
        f"The role {OTHER} is not mapped to credentials on this anyjob server: add it to "
        "ANYJOB_LOCAL_ROLES (see README, Security model) or use file:// locations."
    )


def test_a_client_for_a_role_signs_with_the_roles_keys(mapped, server_env) -> None:
    client = roles.client(ROLE, "s3")
    frozen = client._request_signer._credentials.get_frozen_credentials()
    assert (frozen.access_key, frozen.secret_key, frozen.token) == (
        "AKIAROLEKEY",
        "role-secret-value",
        "role-token",
    )
    assert client.meta.region_name == "eu-west-1"
    with pytest.raises(roles.NotMapped):
        roles.client(OTHER, "s3")


# -- what a job's container gets ---------------------------------------------------------------


def test_a_job_gets_exactly_its_roles_variables(mapped, server_env) -> None:
    assert roles.job_environment(ROLE, isolated=False) == {
        "AWS_ACCESS_KEY_ID": "AKIAROLEKEY",
        "AWS_SECRET_ACCESS_KEY": "role-secret-value",
        "AWS_SESSION_TOKEN": "role-token",
        "AWS_DEFAULT_REGION": "eu-west-1",
        "AWS_REGION": "eu-west-1",
    }


def test_without_a_region_the_role_takes_the_servers(settings, server_env) -> None:
    settings.ANYJOB_LOCAL_ROLES = json.dumps(
        {ROLE: {"access_key_id": "AKIAROLEKEY", "secret_access_key": "s"}}
    )
    env = roles.job_environment(ROLE, isolated=False)
    assert sorted(env) == ["AWS_ACCESS_KEY_ID", "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_SECRET_ACCESS_KEY"]
    assert env["AWS_REGION"] == env["AWS_DEFAULT_REGION"] == "ap-south-1"


def test_an_unmapped_role_or_isolation_gets_nothing(mapped, server_env) -> None:
    assert roles.job_environment(OTHER, isolated=False) == {}
    assert roles.job_environment(None, isolated=False) == {}
    assert roles.job_environment(ROLE, isolated=True) == {}


def test_a_role_whose_credentials_cannot_be_had_gets_nothing(settings, server_env, profiles) -> None:
    settings.ANYJOB_LOCAL_ROLES = json.dumps({ROLE: {"profile": "empty"}})
    assert roles.job_environment(ROLE, isolated=False) == {}


@pytest.mark.parametrize(
    ("url", "passed"),
    [
        ("http://127.0.0.1:9000", False),
        ("http://localhost:9000", False),
        ("http://[::1]:9000", False),
        ("http://169.254.169.254", False),
        ("http://0.0.0.0:9000", False),
        ("https://minio.internal.example:9000", True),
        ("http://10.1.2.3:9000", True),
    ],
)
def test_the_s3_endpoint_is_passed_on_only_where_a_job_can_reach_it(
    mapped, server_env, monkeypatch, url: str, passed: bool
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", url)
    env = roles.job_environment(ROLE, isolated=False)
    assert ("AWS_ENDPOINT_URL_S3" in env) is passed
    assert roles.job_environment(ROLE, isolated=True) == {}


def test_a_jobs_process_reads_the_setting_from_its_environment(monkeypatch) -> None:
    """Before Django is set up (a job's process starts without it), the variable is the source."""
    import subprocess
    import sys

    code = (
        "import json; from jobs.backends.local import roles\n"
        f"print(json.dumps(roles.job_environment({ROLE!r}, isolated=False)))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_") and k != "DJANGO_SETTINGS_MODULE"}
    env["ANYJOB_LOCAL_ROLES"] = json.dumps({ROLE: KEYS})
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True, timeout=60
    )
    assert json.loads(out.stdout)["AWS_ACCESS_KEY_ID"] == "AKIAROLEKEY"


# -- system checks -----------------------------------------------------------------------------


def ids(messages) -> list[str]:
    return [m.id for m in messages]


def test_a_malformed_setting_is_a_check_error(settings) -> None:
    settings.ANYJOB_LOCAL_ROLES = '{"arn:aws:iam::123456789012:role/x": {"secret_access_key": "hunter2"}'
    [problem] = [m for m in checks.problems() if m.id == "anyjob.E020"]
    assert problem.level == 40  # ERROR
    assert "ANYJOB_LOCAL_ROLES" in problem.msg and "not valid JSON" in problem.msg
    assert "hunter2" not in problem.msg + problem.hint


def test_a_missing_profile_is_a_check_error(settings, profiles) -> None:
    settings.ANYJOB_LOCAL_ROLES = json.dumps({ROLE: {"profile": "ml-team"}, OTHER: {"profile": "gone"}})
    found = [m for m in checks.problems() if m.id == "anyjob.E021"]
    assert [m.msg for m in found] == [
        f"ANYJOB_LOCAL_ROLES maps {OTHER} to the AWS profile 'gone', which the server's AWS config "
        "files do not have."
    ]


def test_a_roles_file_others_can_read_is_a_warning(settings, tmp_path: Path) -> None:
    path = tmp_path / "roles.json"
    path.write_text(json.dumps({ROLE: KEYS}))
    settings.ANYJOB_LOCAL_ROLES = str(path)
    path.chmod(0o644)
    assert "anyjob.W023" in ids(checks.advisories())
    assert "anyjob.W023" not in ids(checks.problems())  # it does not stop submissions
    path.chmod(0o600)
    assert "anyjob.W023" not in ids(checks.advisories())
    assert not {"anyjob.E020", "anyjob.E021"} & set(ids(checks.problems()))


def test_an_s3_artifact_store_under_an_unmapped_role_is_a_warning(settings) -> None:
    settings.ANYJOB_ARTIFACT_STORE = "s3://team-artifacts/anyjob"
    settings.ANYJOB_LOCAL_ROLES = ""
    [problem] = [m for m in checks.problems() if m.id == "anyjob.W022"]
    assert settings.ANYJOB_ROLE_ARN in problem.msg and "ANYJOB_LOCAL_ROLES" in problem.hint
    settings.ANYJOB_LOCAL_ROLES = json.dumps({settings.ANYJOB_ROLE_ARN: KEYS})
    assert "anyjob.W022" not in ids(checks.problems())


def test_error_reports_hide_the_setting(settings) -> None:
    from django.views.debug import get_default_exception_reporter_filter

    settings.ANYJOB_LOCAL_ROLES = json.dumps({ROLE: KEYS})
    safe = get_default_exception_reporter_filter().get_safe_settings()
    assert "role-secret-value" not in safe["ANYJOB_LOCAL_ROLES"]
    assert set(safe["ANYJOB_LOCAL_ROLES"]) == {"*"}
