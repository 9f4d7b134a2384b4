"""STS and IAM, as far as SageMaker clients ask: who am I, and may this role run SageMaker jobs.

- ``sts:GetCallerIdentity``: the key's user as an IAM user of anyjob's account (the account
  of ``ANYJOB_ROLE_ARN``, or ``ANYJOB_ACCOUNT_ID``).
- ``iam:GetRole``: the roles anyjob knows, ``ANYJOB_ROLE_ARN`` and those of
  ``ANYJOB_LOCAL_ROLES`` (names only, never their credentials), each trusting
  ``sagemaker.amazonaws.com`` as a SageMaker execution role does; SDK v3 refuses a role whose
  trust policy does not name it. The policy document is URL-encoded JSON, as IAM returns it.
- ``iam:SimulatePrincipalPolicy``: a known role (or the caller) is allowed what a SageMaker
  execution role is given (``ALLOWED_SERVICES``), nothing else (``implicitDeny``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from django.conf import settings

from jobs.awsapi.registry import ApiError, Context, operation

ROLE_ARN = re.compile(r"arn:aws[a-z-]*:iam::(\d{12}):role/((?:[\w+=,.@-]+/)*)([\w+=,.@-]{1,64})")
DEFAULT_ACCOUNT = "000000000000"
#: What a SageMaker execution role may do here: the services a training job or an endpoint
#: calls. ``iam:PassRole`` is what the caller needs to hand a role to SageMaker.
ALLOWED_SERVICES = ("sagemaker", "s3", "logs", "cloudwatch", "ecr")
#: The EC2 actions are those SageMaker's execution-role policy grants for jobs in a VPC (network
#: interfaces, and describing the VPC they join); SDK v3's ``ModelTrainer`` checks every one of
#: them and refuses a role denied any.
ALLOWED_ACTIONS = (
    "iam:passrole",
    "iam:getrole",
    "sts:getcalleridentity",
    "ec2:createnetworkinterface",
    "ec2:createnetworkinterfacepermission",
    "ec2:deletenetworkinterface",
    "ec2:deletenetworkinterfacepermission",
    "ec2:describenetworkinterfaces",
    "ec2:describevpcs",
    "ec2:describedhcpoptions",
    "ec2:describesubnets",
    "ec2:describesecuritygroups",
)
MAX_ACTIONS = 128
#: A fixed creation date: the roles are configuration, not resources created through the API.
ROLE_CREATED = datetime(2024, 1, 1, tzinfo=UTC)
TRUST_POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Principal": {"Service": "sagemaker.amazonaws.com"},
            "Action": "sts:AssumeRole",
        }
    ],
}


def account_id() -> str:
    explicit = getattr(settings, "ANYJOB_ACCOUNT_ID", "")
    if explicit:
        return explicit
    match = ROLE_ARN.fullmatch(settings.ANYJOB_ROLE_ARN or "")
    return match.group(1) if match else DEFAULT_ACCOUNT


def _unique_id(prefix: str, text: str) -> str:
    """An IAM-style unique id (``AIDA…`` for users, ``AROA…`` for roles), stable per name."""
    digest = hashlib.sha256(f"anyjob:{prefix}:{text}".encode()).digest()
    return prefix + base64.b32encode(digest).decode()[:17]


def user_arn(user) -> str:
    return f"arn:aws:iam::{account_id()}:user/{user.get_username()}"


def known_roles() -> dict[str, str]:
    """Role name → ARN, for every role anyjob knows (the default first)."""
    arns = [settings.ANYJOB_ROLE_ARN]
    try:
        from jobs.backends.local import roles

        arns += list(roles.configured())
    except Exception:  # noqa: S110 - a malformed ANYJOB_LOCAL_ROLES is the system check's to report
        pass
    out: dict[str, str] = {}
    for arn in arns:
        match = ROLE_ARN.fullmatch(arn or "")
        if match:
            out.setdefault(match.group(3), arn)
    return out


@operation("sts", "GetCallerIdentity")
def get_caller_identity(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    return {
        "UserId": _unique_id("AIDA", str(ctx.user.pk)),
        "Account": account_id(),
        "Arn": user_arn(ctx.user),
    }


@operation("iam", "GetRole")
def get_role(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    name = str(params.get("RoleName") or "")
    if not re.fullmatch(r"[\w+=,.@-]{1,64}", name):
        raise ApiError(
            "ValidationError",
            f"The specified value for roleName is invalid. It must contain only alphanumeric characters "
            f"and/or the following: +=,.@_- (1 validation error detected: Value '{name[:64]}' at 'roleName')",
        )
    arn = known_roles().get(name)
    if arn is None:
        raise ApiError("NoSuchEntity", f"The role with name {name} cannot be found.", 404)
    match = ROLE_ARN.fullmatch(arn)
    assert match is not None
    return {
        "Role": {
            "Path": "/" + match.group(2),
            "RoleName": name,
            "RoleId": _unique_id("AROA", arn),
            "Arn": arn,
            "CreateDate": ROLE_CREATED,
            "AssumeRolePolicyDocument": quote(json.dumps(TRUST_POLICY, separators=(",", ":")), safe=""),
            "Description": "A SageMaker execution role known to anyjob.",
            "MaxSessionDuration": 3600,
        }
    }


def _null(field: str) -> str:
    return (
        f"1 validation error detected: Value null at '{field}' failed to satisfy constraint: "
        "Member must not be null"
    )


def allowed(action: str) -> bool:
    service, _, name = action.lower().partition(":")
    return bool(name) and (service in ALLOWED_SERVICES or action.lower() in ALLOWED_ACTIONS)


@operation("iam", "SimulatePrincipalPolicy")
def simulate_principal_policy(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    source = str(params.get("PolicySourceArn") or "")
    actions = params.get("ActionNames") or []
    if not source:
        raise ApiError("ValidationError", _null("policySourceArn"))
    if not actions:
        raise ApiError("ValidationError", _null("actionNames"))
    if len(actions) > MAX_ACTIONS:
        raise ApiError(
            "ValidationError", f"Too many actions: at most {MAX_ACTIONS} may be simulated at once."
        )
    if source not in known_roles().values() and source != user_arn(ctx.user):
        raise ApiError("NoSuchEntity", f"Entity {source[:2048]} does not exist.", 404)
    resources = params.get("ResourceArns") or ["*"]
    results = []
    for action in actions:
        for resource in resources:
            decision = "allowed" if allowed(str(action)) else "implicitDeny"
            results.append(
                {
                    "EvalActionName": str(action),
                    "EvalResourceName": str(resource),
                    "EvalDecision": decision,
                    "MatchedStatements": [],
                    "MissingContextValues": [],
                }
            )
    return {"EvaluationResults": results, "IsTruncated": False}
