"""Django system checks of anyjob's settings (``manage.py check``; also shown on the new-job page).

A wrong setting is reported here, in words, rather than as a traceback in a worker's log. The
AWS settings are warnings, not errors, so that the web server still starts (Django refuses to
run with errors) and the new-job page can say what to fix; it refuses to submit meanwhile.
``manage.py check --fail-level WARNING`` makes them fatal, e.g. in a deployment pipeline.

The local backend's security settings are errors: a sandbox that cannot run here (the backend
then refuses to start code: it fails closed) and an unreadable ``ANYJOB_LOCAL_ROLES``.
``problems()`` are what stop the new-job and deploy pages from submitting; ``advisories()``
are warnings that do not (``ANYJOB_SANDBOX=off``, shown as a banner on every page instead).
"""

from __future__ import annotations

import functools
import os
import re
from typing import Any

from django.conf import settings
from django.core import checks

ROLE_ARN = re.compile(r"arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]{1,512}")
ECR_IMAGE = re.compile(
    r"\d{12}\.dkr\.ecr(-fips)?\.[a-z0-9-]+\.amazonaws\.com(\.cn)?/[a-z0-9][a-z0-9._/-]*"
    r"(:[\w][\w.-]{0,127}|@sha256:[0-9a-f]{64})?"
)
SUBNET = re.compile(r"subnet-[0-9a-f]{8,17}")
SECURITY_GROUP = re.compile(r"sg-[0-9a-f]{8,17}")
KMS_KEY = re.compile(
    r"(arn:aws[a-z-]*:kms:[a-z0-9-]+:\d{12}:(key|alias)/[\w/-]+|alias/[\w/-]+|[0-9a-f-]{36})"
)
LOCAL_ROLE = "arn:aws:iam::000000000000:role/anyjob-local"


def problems() -> list[checks.CheckMessage]:
    """Every problem of the current settings (errors and warnings)."""
    from jobs.api_limits import enum_values
    from jobs.backends import BACKENDS

    found: list[checks.CheckMessage] = []

    def error(n: int, msg: str, hint: str) -> None:
        found.append(checks.Error(msg, hint=hint, id=f"anyjob.E{n:03d}"))

    backend = settings.ANYJOB_BACKEND
    if backend not in BACKENDS:
        error(
            1, f"ANYJOB_BACKEND={backend!r} is not a backend.", f"Use one of {', '.join(sorted(BACKENDS))}."
        )
    types = enum_values("TrainingInstanceType")
    unknown = [t for t in settings.ANYJOB_INSTANCE_TYPES if t not in types]
    if unknown:
        error(
            2, f"ANYJOB_INSTANCE_TYPES names unknown instance types: {', '.join(unknown)}.", "Use ml.* types."
        )
    allowed = settings.ANYJOB_INSTANCE_TYPES or types
    if settings.ANYJOB_DEFAULT_INSTANCE_TYPE not in allowed:
        error(
            3,
            f"ANYJOB_DEFAULT_INSTANCE_TYPE={settings.ANYJOB_DEFAULT_INSTANCE_TYPE!r} is not an allowed type.",
            "Pick one of ANYJOB_INSTANCE_TYPES (or of the API's list).",
        )
    if backend == "sagemaker":
        found += _sagemaker_problems()
    if backend == "local":
        found += _sandbox_problems() + _role_problems()
    return found


def configuration_problems() -> list[str]:
    """The system checks' findings as sentences, for the pages that start work (a person can
    act on them)."""
    return [f"{p.msg} {p.hint or ''}".strip() for p in problems()]


#: What to do when the sandbox cannot run, for the check's hint and the pages.
SANDBOX_FIX = (
    "Install bubblewrap: apt-get install bubblewrap; run anyjob as root so each job gets its own "
    "uid; or set ANYJOB_SANDBOX=off on a single-user laptop (jobs then run unsandboxed, as the "
    "service user)."
)


def _sandbox_problems() -> list[checks.CheckMessage]:
    from jobs.backends.local import sandbox

    try:
        problem = sandbox.isolation_problem()  # None when it can run, or when it is off
    except sandbox.SandboxError as exc:  # ANYJOB_SANDBOX itself is wrong
        return [
            checks.Error(_sentence(exc), hint="Set ANYJOB_SANDBOX=on (the default) or off.", id="anyjob.E030")
        ]
    if problem is None:
        return []
    return [
        checks.Error(
            _sentence(
                f"The local backend cannot sandbox jobs on this machine, so it refuses to run any: {problem}"
            ),
            hint=SANDBOX_FIX,
            id="anyjob.E031",
        )
    ]


def _role_problems() -> list[checks.CheckMessage]:
    from jobs.backends.local import roles

    try:
        mapped = roles.parse(settings.ANYJOB_LOCAL_ROLES)
    except roles.RolesError as exc:
        return [
            checks.Error(
                _sentence(exc),
                hint='Map role ARNs to {"profile": "name"} or {"access_key_id": ..., '
                '"secret_access_key": ...} (see README, Security model).',
                id="anyjob.E020",
            )
        ]
    found: list[checks.CheckMessage] = []
    profiles = {arn: role.profile for arn, role in mapped.items() if role.profile}
    if profiles:
        import boto3.session

        available = set(boto3.session.Session().available_profiles)
        for arn, profile in sorted(profiles.items()):
            if profile not in available:
                found.append(
                    checks.Error(
                        f"ANYJOB_LOCAL_ROLES maps {arn} to the AWS profile {profile!r}, which the server's "
                        "AWS config files do not have.",
                        hint="Add the profile to ~/.aws/config (or AWS_CONFIG_FILE) of the user anyjob "
                        "runs as, or map the role to keys.",
                        id="anyjob.E021",
                    )
                )
    store = settings.ANYJOB_ARTIFACT_STORE
    if store.startswith("s3://") and settings.ANYJOB_ROLE_ARN not in mapped:
        found.append(
            checks.Warning(
                f"ANYJOB_ARTIFACT_STORE is on S3, but local jobs run as ANYJOB_ROLE_ARN="
                f"{settings.ANYJOB_ROLE_ARN!r}, which has no credentials here: they could not read their "
                "code or write their artifacts.",
                hint="Add the role to ANYJOB_LOCAL_ROLES, or use a file:// artifact store.",
                id="anyjob.W022",
            )
        )
    return found


def advisories() -> list[checks.CheckMessage]:
    """Warnings that do not stop submissions (``manage.py check`` shows them)."""
    if settings.ANYJOB_BACKEND != "local":
        return []
    from jobs.backends.local import roles

    found: list[checks.CheckMessage] = []
    if sandbox_off():
        found.append(
            checks.Warning(
                "ANYJOB_SANDBOX=off: local jobs and endpoints run unsandboxed, as the service user, and "
                "can read and change everything anyjob can (its database, secret key and credentials).",
                hint="Only on a single-user laptop. On a shared machine remove ANYJOB_SANDBOX (on is the "
                "default).",
                id="anyjob.W031",
            )
        )
    raw = settings.ANYJOB_LOCAL_ROLES.strip()
    if raw and not raw.startswith("{"):
        try:
            mode = os.stat(os.path.expanduser(raw)).st_mode
        except OSError:
            mode = 0  # E020 says it cannot be read
        if mode & 0o077:
            found.append(
                checks.Warning(
                    f"The {roles.SETTING} file {raw} is readable by other users of this machine; it may "
                    "hold secret keys.",
                    hint=f"chmod 600 {raw}",
                    id="anyjob.W023",
                )
            )
    return found


def _sentence(text: object) -> str:
    return str(text).rstrip().rstrip(".") + "."


def sandbox_off() -> bool:
    """Whether the local backend runs jobs without the sandbox, deliberately (``ANYJOB_SANDBOX=off``)."""
    from jobs.backends.local import sandbox

    if settings.ANYJOB_BACKEND != "local":
        return False
    try:
        return sandbox.sandbox_mode() == "off"
    except sandbox.SandboxError:
        return False  # a wrong value is an error of its own (E030), and runs nothing


def _sagemaker_problems() -> list[checks.CheckMessage]:
    found: list[checks.CheckMessage] = []

    def error(n: int, msg: str, hint: str) -> None:
        found.append(checks.Warning(msg, hint=hint, id=f"anyjob.W{n:03d}"))

    region = settings.ANYJOB_REGION
    if region not in _regions():
        error(
            10,
            f"AWS_REGION={region!r} is not a region where SageMaker runs.",
            "Set AWS_REGION, e.g. eu-west-1.",
        )
    role = settings.ANYJOB_ROLE_ARN
    if role == LOCAL_ROLE or not ROLE_ARN.fullmatch(role):
        error(
            11,
            f"ANYJOB_ROLE_ARN={role!r} is not an IAM role ARN of your account.",
            "Set it to the SageMaker execution role, like arn:aws:iam::123456789012:role/SageMakerRole.",
        )
    image = settings.ANYJOB_TRAINING_IMAGE
    if not ECR_IMAGE.fullmatch(image):
        error(
            12,
            f"ANYJOB_TRAINING_IMAGE={image!r} is not an ECR image URI.",
            "Push container/ to ECR and set it, like 123456789012.dkr.ecr.eu-west-1.amazonaws.com/anyjob:1.",
        )
    elif f".{region}." not in image:
        found.append(
            checks.Warning(
                f"ANYJOB_TRAINING_IMAGE is in another region than AWS_REGION={region}.",
                hint="SageMaker pulls images from ECR in its own region (or needs cross-region access).",
                id="anyjob.W013",
            )
        )
    store = settings.ANYJOB_ARTIFACT_STORE
    if not re.fullmatch(r"s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?", store):
        error(
            14,
            f"ANYJOB_ARTIFACT_STORE={store!r} is not an s3:// bucket/prefix.",
            "Set it, like s3://my-bucket/anyjob.",
        )
    if settings.ANYJOB_KMS_KEY_ID and not KMS_KEY.fullmatch(settings.ANYJOB_KMS_KEY_ID):
        error(15, "ANYJOB_KMS_KEY_ID is not a KMS key id, key ARN or alias.", "Leave it empty or set a key.")
    subnets, groups = settings.ANYJOB_VPC_SUBNETS, settings.ANYJOB_VPC_SECURITY_GROUPS
    if bool(subnets) != bool(groups):
        error(
            16, "A VPC needs both ANYJOB_VPC_SUBNETS and ANYJOB_VPC_SECURITY_GROUPS.", "Set both, or neither."
        )
    bad = [s for s in subnets if not SUBNET.fullmatch(s)] + [
        g for g in groups if not SECURITY_GROUP.fullmatch(g)
    ]
    if bad:
        error(17, f"Not subnet or security group ids: {', '.join(bad)}.", "Use subnet-… and sg-… ids.")
    if len(subnets) > 16 or len(groups) > 5:
        error(18, "A VPC config takes at most 16 subnets and 5 security groups.", "Name fewer.")
    return found


@functools.cache
def _regions() -> frozenset[str]:
    import boto3.session

    session = boto3.session.Session()
    regions: set[str] = set()
    for partition in session.get_available_partitions():
        regions.update(session.get_available_regions("sagemaker", partition_name=partition))
    return frozenset(regions)


@checks.register(checks.Tags.compatibility)
def anyjob_settings(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    return problems() + advisories()
