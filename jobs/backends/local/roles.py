"""Execution roles on the local backend: the credentials a ``RoleArn`` stands for here.

On AWS a training job (or an endpoint) gets its execution role's credentials, and nothing
else. The emulator does the same with a map the admin writes, ``ANYJOB_LOCAL_ROLES``: role
ARN → where its credentials come from. The setting is JSON, or the path of a file holding
the JSON (keep it ``chmod 600``)::

    {
      "arn:aws:iam::123456789012:role/ml-team": {"profile": "ml-team", "region": "eu-west-1"},
      "arn:aws:iam::000000000000:role/anyjob-local": {
        "access_key_id": "AKIA...", "secret_access_key": "...", "session_token": "..."
      }
    }

``profile`` names a profile of the server's AWS config files (``~/.aws/config``,
``~/.aws/credentials``: SSO, ``credential_process``, assume-role all work); the keys are a
static pair (``session_token`` optional). ``region`` is optional (default: the profile's,
else the server's ``AWS_REGION``). Secret values are never put in a message, a log line, a
page or a plan file.

Who uses what:

- ``job_environment`` — the variables a job's container gets: the role's keys and region, or
  nothing (an unmapped role, or ``EnableNetworkIsolation``: on AWS an isolated container
  gets no credentials either). The server's own ``AWS_*`` never reach a job.
- ``storage_credentials`` — what anyjob's own processes use to stage a job's ``s3://``
  channels, upload its artifacts and download a model: the role's credentials, never the
  server's; an unmapped role stages nothing from S3 (``NotMapped``), except from anyjob's
  embedded S3, which anyjob's processes reach in-process without credentials.
- ``LocalBackend`` refuses, at the form and at ``CreateTrainingJob``/``CreateModel``, a
  request that names ``s3://`` locations under an unmapped role (``unmapped_message``),
  unless ``s3://`` is the embedded store.

The source is read where it is needed: in a Django process from ``settings``, in a job's
process (before Django is set up) from the environment variable, which the backend sets to
the setting's value when it starts the process. No Django import at module level.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import logging
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from jobs.storage import StorageError

log = logging.getLogger("anyjob.local.roles")

SETTING = "ANYJOB_LOCAL_ROLES"
ROLE_ARN = re.compile(r"arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]{1,512}")
REGION = re.compile(r"[a-z]{2}(-[a-z]+)+-\d")
DEFAULT_REGION = "us-east-1"
_KEYS = {"profile", "access_key_id", "secret_access_key", "session_token", "region"}
#: How boto3 found credentials when a profile has none of its own: the server's own
#: (environment, instance or container role), which a role must never fall back to.
_SERVER_METHODS = {"env", "iam-role", "container-role", "boto-config", "ec2-credentials-file"}
#: The S3 endpoint variables a job may get (not credentials: where S3 is).
_ENDPOINT_VARS = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")


class RolesError(ValueError):
    """``ANYJOB_LOCAL_ROLES`` cannot be read, or a role's credentials cannot be had. The
    message names the setting and the role, never a secret."""


class NotMapped(StorageError):
    """A job under an unmapped role names an ``s3://`` location (a ``StorageError``, so it
    fails the staging, upload or download it was for, with ``unmapped_message``)."""


@dataclass(frozen=True)
class RoleSource:
    """Where one role's credentials come from: a ``profile``, or a static key pair."""

    arn: str
    profile: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)
    region: str | None = None


@dataclass(frozen=True)
class Credentials:
    """A role's credentials as resolved now (the secret parts stay out of ``repr``)."""

    access_key_id: str
    secret_access_key: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)
    region: str | None = None


# -- the setting -----------------------------------------------------------------------------


def source() -> str:
    """The setting's raw value: ``settings.ANYJOB_LOCAL_ROLES`` once Django's settings are
    loaded in this process, else the environment variable (a job's process, early on)."""
    conf = sys.modules.get("django.conf")
    if conf is not None and conf.settings.configured:
        return getattr(conf.settings, SETTING, "") or ""
    return os.environ.get(SETTING, "")


def parse(raw: str) -> dict[str, RoleSource]:
    """The role map from the setting's raw value: JSON text (starting with ``{``), or the
    path of a file holding it; empty means no role is mapped. Raises ``RolesError``."""
    raw = (raw or "").strip()
    if not raw:
        return {}
    if raw.startswith(("{", "[")):
        return _parse_text(raw, f"{SETTING} (JSON in the environment)")
    path = Path(raw).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        # Named only when it looks like a path: a JSON typo must not put keys in a message.
        shown = f"={raw!r}" if len(raw) <= 300 and not set(raw) & set('{}":, ') else ""
        raise RolesError(
            f"{SETTING}{shown} is neither JSON (starting with {{) nor a readable file: {exc.strerror or exc}"
        ) from None
    return _parse_text(text, f"{SETTING} file {path}")


def configured() -> dict[str, RoleSource]:
    """The role map of this process's setting (``RolesError`` when it is malformed)."""
    return parse(source())


@functools.lru_cache(maxsize=8)
def _parse_text(text: str, where: str) -> dict[str, RoleSource]:
    try:
        data = json.loads(text)
    except ValueError as exc:
        # The position, not the text: the text may hold secrets.
        raise RolesError(
            f"{where} is not valid JSON (line {getattr(exc, 'lineno', '?')}, column "
            f"{getattr(exc, 'colno', '?')})"
        ) from None
    if not isinstance(data, dict):
        raise RolesError(f"{where} must be a JSON object mapping role ARNs to credential sources")
    roles: dict[str, RoleSource] = {}
    for arn, entry in data.items():
        if not ROLE_ARN.fullmatch(arn):
            raise RolesError(
                f"{where}: {arn[:200]!r} is not an IAM role ARN (like arn:aws:iam::123456789012:role/name)"
            )
        roles[arn] = _entry(arn, entry, where)
    return roles


def _entry(arn: str, entry: Any, where: str) -> RoleSource:
    if not isinstance(entry, dict):
        raise RolesError(
            f'{where}: the role {arn} must map to an object, like {{"profile": "name"}} or '
            '{"access_key_id": "...", "secret_access_key": "..."}'
        )
    unknown = sorted(set(entry) - _KEYS)
    if unknown:
        raise RolesError(
            f"{where}: the role {arn} has unknown keys {', '.join(map(repr, unknown))} "
            f"(use {', '.join(sorted(_KEYS))})"
        )
    for key, value in entry.items():
        if not isinstance(value, str) or not value.strip():
            raise RolesError(f"{where}: the role {arn}: {key} must be a non-empty string")
    region = entry.get("region")
    if region is not None and not REGION.fullmatch(region):
        raise RolesError(f"{where}: the role {arn}: region {region!r} is not a region name")
    keys = {"access_key_id", "secret_access_key"}
    if "profile" in entry:
        if keys & set(entry) or "session_token" in entry:
            raise RolesError(f"{where}: the role {arn} names a profile and keys: give one or the other")
        return RoleSource(arn, profile=entry["profile"], region=region)
    if not keys <= set(entry):
        raise RolesError(
            f"{where}: the role {arn} needs a profile, or both access_key_id and secret_access_key"
        )
    return RoleSource(
        arn,
        access_key_id=entry["access_key_id"],
        secret_access_key=entry["secret_access_key"],
        session_token=entry.get("session_token"),
        region=region,
    )


def is_mapped(role_arn: str | None) -> bool:
    """Whether ``role_arn`` has a credential source here (a malformed setting maps nothing:
    the system check says why)."""
    try:
        return bool(role_arn) and role_arn in configured()
    except RolesError:
        return False


def unmapped_message(role_arn: str | None) -> str:
    """Why a request naming ``s3://`` locations under ``role_arn`` is refused, and the fix."""
    return (
        f"The role {role_arn or '(none)'} is not mapped to credentials on this anyjob server: add it "
        f"to {SETTING} (see README, Security model) or use file:// locations."
    )


# -- credentials -----------------------------------------------------------------------------


def credentials_for(role_arn: str | None) -> Credentials | None:
    """The role's credentials now, or None for an unmapped role.

    A profile is resolved through boto3 on each call (so temporary credentials are fresh);
    a profile that has no credentials of its own is refused rather than let boto3 fall back
    to the server's (environment, instance role). Raises ``RolesError``.
    """
    if not role_arn:
        return None
    role = configured().get(role_arn)
    if role is None:
        return None
    if role.profile is None:
        assert role.access_key_id is not None and role.secret_access_key is not None
        return Credentials(role.access_key_id, role.secret_access_key, role.session_token, role.region)
    import boto3.session
    from botocore.exceptions import BotoCoreError

    try:
        session = boto3.session.Session(profile_name=role.profile)
        found = session.get_credentials()
        method = getattr(found, "method", "") if found is not None else ""
        frozen = found.get_frozen_credentials() if found is not None else None
    except BotoCoreError as exc:
        raise RolesError(f"{SETTING}: the role {role_arn}: profile {role.profile!r}: {exc}") from None
    if frozen is None or method in _SERVER_METHODS or not frozen.access_key or not frozen.secret_key:
        raise RolesError(
            f"{SETTING}: the role {role_arn}: the profile {role.profile!r} gives no credentials of "
            "its own in the server's AWS config files"
        )
    # The profile's own region (not the server's AWS_REGION, which boto3 would put first).
    region = role.region or session._session.get_scoped_config().get("region")
    return Credentials(frozen.access_key, frozen.secret_key, frozen.token, region)


def client(role_arn: str | None, service: str = "s3") -> Any:
    """A boto3 client (``jobs.aws``'s policy) with the role's credentials; ``NotMapped`` for
    an unmapped role (never the server's own credentials)."""
    from jobs import aws

    credentials = credentials_for(role_arn)
    if credentials is None:
        raise NotMapped(unmapped_message(role_arn))
    return aws.client(service, credentials=credentials)


def storage_credentials(role_arn: str | None, uri: str) -> Credentials | None:
    """What ``jobs.storage`` should use for ``uri`` on behalf of a job under ``role_arn``:
    nothing for ``file://`` (no client is made), the role's credentials for ``s3://``.
    Raises ``NotMapped`` (a ``StorageError``) for an unmapped role, unless ``s3://`` is the
    embedded store (``storage.s3_embedded()``: reached in-process, no credentials at all), and
    turns a role whose credentials cannot be had into a ``StorageError`` too, so the caller
    fails that step."""
    if not uri.startswith("s3://"):
        return None
    try:
        credentials = credentials_for(role_arn)
    except RolesError as exc:
        raise StorageError(str(exc)) from None
    if credentials is None:
        from jobs import storage

        if storage.s3_embedded():
            return None
        raise NotMapped(unmapped_message(role_arn))
    return credentials


def job_environment(role_arn: str | None, *, isolated: bool) -> dict[str, str]:
    """The AWS variables a job's (or an endpoint's) container gets, and only these.

    For a mapped role: ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
    ``AWS_SESSION_TOKEN`` (if any), ``AWS_DEFAULT_REGION`` and ``AWS_REGION`` (the role's
    region, else the server's, else us-east-1), and the server's S3 endpoint URL when a job
    can reach it (see ``_reachable_endpoints``). For an unmapped role, or with network
    isolation (``isolated``): nothing at all, as on AWS.

    Never raises: a role whose credentials cannot be had now (an expired SSO session) gives
    nothing, with a warning in the process's log; staging and uploads through
    ``storage_credentials`` fail with the reason.
    """
    if isolated or not role_arn:
        return {}
    try:
        credentials = credentials_for(role_arn)
    except RolesError as exc:
        log.warning("no credentials for the job: %s", exc)
        return {}
    if credentials is None:
        return {}
    region = (
        credentials.region
        or os.environ.get("AWS_REGION")
        or os.environ.get("AWS_DEFAULT_REGION")
        or DEFAULT_REGION
    )
    env = {
        "AWS_ACCESS_KEY_ID": credentials.access_key_id,
        "AWS_SECRET_ACCESS_KEY": credentials.secret_access_key,
        "AWS_DEFAULT_REGION": region,
        "AWS_REGION": region,
    }
    if credentials.session_token:
        env["AWS_SESSION_TOKEN"] = credentials.session_token
    env.update(_reachable_endpoints())
    return env


def _reachable_endpoints() -> dict[str, str]:
    """The server's ``AWS_ENDPOINT_URL_S3``/``AWS_ENDPOINT_URL`` (an S3-compatible server),
    unless it is on loopback or link-local.

    An endpoint URL is not a credential: a job that reads ``s3://`` itself needs the same S3
    the staging used. But a job runs in its own network namespace, which cannot reach the
    host's loopback (nor link-local addresses): a ``127.0.0.1`` or ``localhost`` endpoint is
    useless inside, and pointing the job at the host's loopback is what the namespace is
    there to prevent, so it is left out (the job then talks to AWS's own endpoints).
    """
    found = {}
    for name in _ENDPOINT_VARS:
        url = os.environ.get(name, "").strip()
        if url and not _local_address(url):
            found[name] = url
    return found


def _local_address(url: str) -> bool:
    try:
        host = (urlsplit(url).hostname or "").rstrip(".").lower()
    except ValueError:
        return True  # not a URL boto3 could use either
    if not host or host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False  # a name: resolved by the job's own DNS
    return address.is_loopback or address.is_link_local or address.is_unspecified
