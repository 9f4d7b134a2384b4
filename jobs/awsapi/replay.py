"""Refusing a replayed state-changing request (the reasoning is in ``jobs.awsapi.sigv4``'s docstring).

``guard(signed, operation)`` claims the request's signature before the handler runs when the
operation is ``guarded`` (it changes something, is not idempotent, is not S3's); the claim
stays only if the handler says ``succeeded()``, so a request that failed (and botocore's retry
of it, possibly with the same signature) is not held against the client. A second request
with a claimed signature is ``AuthError("replayed")``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from django.db import IntegrityError, transaction
from django.utils import timezone

from jobs.awsapi.sigv4 import MAX_SKEW, AuthError, SignedRequest

#: Operations that only read: repeating one changes nothing (waiters and log tails repeat them).
READ_PREFIXES = (
    "Describe", "List", "Get", "Head", "Search", "Filter", "Simulate", "BatchDescribe", "BatchGet",
)  # fmt: skip
#: Writes whose repeat AWS answers as it answered the first (the same state either way).
IDEMPOTENT = frozenset({"AddTags", "DeleteTags"})
#: Services none of whose calls are guarded: S3 answers a repeated PUT, DELETE or part upload
#: (and botocore's retry after a lost answer, same second, same signature) normally.
UNGUARDED_SERVICES = frozenset({"s3"})
#: A claim is kept this long: past the clock-skew window the request is refused as expired anyway.
KEEP = MAX_SKEW * 2


def changes_state(operation: str) -> bool:
    return not operation.startswith(READ_PREFIXES)


def guarded(service: str, operation: str) -> bool:
    """Whether a second request with the same signature is refused: a state-changing call
    that is not idempotent, of a service whose repeats are not ordinary."""
    return service not in UNGUARDED_SERVICES and operation not in IDEMPOTENT and changes_state(operation)


class Outcome:
    def __init__(self) -> None:
        self.ok = False

    def succeeded(self) -> None:
        self.ok = True


@contextlib.contextmanager
def guard(signed: SignedRequest, operation: str) -> Iterator[Outcome]:
    outcome = Outcome()
    if not guarded(signed.credential.service, operation):
        yield outcome
        return
    from jobs.awsapi.models import SeenSignature

    now = timezone.now()
    try:
        with transaction.atomic():
            SeenSignature.objects.create(signature=signed.signature, seen_at=now)
    except IntegrityError:
        raise AuthError(
            "replayed",
            "This request was already received and answered: a request that changes something is "
            "accepted once. Sign it again (botocore does for every call).",
            service=signed.credential.service,
            access_key_id=signed.credential.access_key_id,
        ) from None
    SeenSignature.objects.filter(seen_at__lt=now - KEEP).delete()
    try:
        yield outcome
    finally:
        if not outcome.ok:
            SeenSignature.objects.filter(signature=signed.signature).delete()
