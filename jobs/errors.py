"""One line for a person from whatever a backend or boto3 raised."""

from __future__ import annotations

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
    ParamValidationError,
    PartialCredentialsError,
    ReadTimeoutError,
)

from jobs import storage

MAX_CHARS = 1000
EXPIRED = {"ExpiredToken", "ExpiredTokenException", "RequestExpired", "TokenRefreshRequired"}
BAD_CREDENTIALS = {"UnrecognizedClientException", "InvalidClientTokenId", "InvalidSignatureException"}
DENIED = {"AccessDenied", "AccessDeniedException"}
AGAIN = "then Resubmit"
#: Errors worth trying again: the service is busy or the network failed.
THROTTLING_CODES = {"ThrottlingException", "Throttling", "TooManyRequestsException", "RequestLimitExceeded"}


def code_of(exc: BaseException) -> str:
    return exc.response.get("Error", {}).get("Code", "") if isinstance(exc, ClientError) else ""


def one_line(exc: BaseException) -> str:
    """``exc``'s message on one line (at most ``MAX_CHARS`` characters), or its type's name."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:MAX_CHARS]


def transient(exc: BaseException) -> bool:
    """Whether a backend call that raised ``exc`` may succeed when tried again (throttling,
    network)."""
    if isinstance(exc, ClientError):
        return code_of(exc) in THROTTLING_CODES
    network = EndpointConnectionError | ConnectionClosedError | ReadTimeoutError | ConnectTimeoutError
    return isinstance(exc, network)


def _words(exc: BaseException) -> str:
    if isinstance(exc, ClientError):
        return exc.response.get("Error", {}).get("Message", "") or code_of(exc)
    return " ".join(str(exc).split()) or type(exc).__name__


def explain(exc: BaseException) -> str:
    """What went wrong and what to do, in one line (at most ``MAX_CHARS`` characters)."""
    code, words = code_of(exc), _words(exc)
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        text = (
            "No AWS credentials: give the workers credentials (AWS_PROFILE, AWS_ACCESS_KEY_ID and "
            f"AWS_SECRET_ACCESS_KEY, or an instance role), {AGAIN}."
        )
    elif isinstance(exc, NoRegionError):
        text = f"No AWS region: set AWS_REGION for the web server and the workers, {AGAIN}."
    elif code in EXPIRED:
        text = f"The AWS session token has expired ({words}): refresh the workers' credentials, {AGAIN}."
    elif code in BAD_CREDENTIALS:
        text = f"AWS does not recognise the workers' credentials ({code}: {words}); fix them, {AGAIN}."
    elif code in DENIED:
        text = f"AWS denied it ({code}: {words}). Check the IAM permissions, {AGAIN}."
    elif code == "ResourceLimitExceeded":
        text = (
            f"An AWS quota is reached ({words}). Wait for running jobs to end or raise the quota "
            f"in Service Quotas, {AGAIN}."
        )
    elif code in ("ValidationException", "ValidationError"):
        text = f"AWS refused the request: {words}"
    elif code:
        text = f"{code}: {words}"
    elif isinstance(exc, ParamValidationError):
        text = f"The request is not valid: {words}"
    elif isinstance(exc, EndpointConnectionError | ConnectTimeoutError | ReadTimeoutError):
        text = f"AWS could not be reached ({words}); check the network and the region, {AGAIN}."
    elif isinstance(exc, storage.StorageError | BotoCoreError | ValueError):
        text = words
    else:
        text = f"{type(exc).__name__}: {words}"
    return text if len(text) <= MAX_CHARS else text[: MAX_CHARS - 1] + "…"
