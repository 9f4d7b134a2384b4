"""Signature Version 4: who signed a request, checked exactly as AWS checks it.

Two forms, both as AWS's SigV4 documentation specifies them and as botocore signs them:

- the ``Authorization`` header, ``AWS4-HMAC-SHA256 Credential=AKID/date/region/service/
  aws4_request, SignedHeaders=…, Signature=…``, with ``X-Amz-Date``;
- presigned query parameters (``X-Amz-Algorithm``, ``X-Amz-Credential``, ``X-Amz-Date``,
  ``X-Amz-Expires``, ``X-Amz-SignedHeaders``, ``X-Amz-Signature``), what ``generate_presigned_url``
  makes for S3.

The canonical request is rebuilt from the request as it came over the wire: the path as the
client encoded it (gunicorn's ``RAW_URI``; otherwise Django's decoded ``PATH_INFO``
re-encoded from UTF-8). For S3 the path
is used as sent; for every other service it is normalised and URI-encoded once more, which is
AWS's (and botocore's) "double encoding". Query parameters are decoded, re-encoded per RFC 3986
and sorted; headers are the signed ones only, values trimmed, inner spaces collapsed.

The payload hash is ``x-amz-content-sha256`` when the client sent it, else the SHA-256 of the
body. A hex value is checked against the body (``PayloadMismatch``) by whoever reads the body:
``read_body`` here for bodies read whole, the s3 module as it streams an upload.
``UNSIGNED-PAYLOAD`` is S3's alone (as on AWS). ``STREAMING-*`` (aws-chunked) leaves the chunk
signatures to the s3 module, which gets what it needs in ``SignedRequest``: the seed signature,
the signing key, the scope and the timestamp.

Time: a header-signed request whose ``X-Amz-Date`` is more than 15 minutes from the server's
clock either way is refused (``Expired``), as AWS does. A presigned URL is good from its date
until ``X-Amz-Expires`` seconds later (at most 7 days, as AWS).

Replays. AWS refuses nothing inside the 15-minute window: a request captured on the wire can
be sent again until it expires, and after that it is ``Expired`` like any late request. anyjob
is also reached over plain HTTP on a laptop or a LAN, where capturing is easier, so it goes one
step further for the requests whose replay would change something AWS answers differently
(``jobs.awsapi.replay``): the signature of a state-changing SageMaker request (``Create*``,
``Delete*``, ``Stop*``, ``Update*``) is claimed in the database before the handler runs, and
an identical signature within the window is refused (``Replayed``). A claim is released when
the answer is not a success, so botocore's own retries — which re-sign, but may land in the
same second and so carry the same signature — go through after a 5xx or a throttle. Not
guarded, as AWS answers them normally when repeated: reads (``Describe*``, ``List*``,
``Get*``, ``Head*``, ...: SDK waiters and ``aws logs tail`` repeat them), idempotent writes
(``AddTags``, ``DeleteTags``), InvokeEndpoint, and every S3 call (an overwrite or a delete of
the same key twice, a part uploaded again, and a retry after a lost answer are ordinary S3).
Claims older than twice the window are purged. ``X-Amz-Date`` counts seconds: the same
guarded write signed twice within one second has one signature, and the second is refused
like a replay (such a duplicate would fail anyway: ``ResourceInUse``).

Secrets are compared with ``hmac.compare_digest``. Errors are ``AuthError`` with a ``kind``;
the dispatcher turns a kind into each protocol's code and status (``views.AUTH_ERRORS``).
"""

from __future__ import annotations

import hashlib
import hmac
import posixpath
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, unquote_to_bytes

ALGORITHM = "AWS4-HMAC-SHA256"
MAX_SKEW = timedelta(minutes=15)
MAX_PRESIGNED_SECONDS = 7 * 24 * 3600
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
UNSIGNED = "UNSIGNED-PAYLOAD"
STREAMING_PREFIX = "STREAMING-"
_HEX64 = re.compile(r"[0-9a-f]{64}")
_AMZ_DATE = "%Y%m%dT%H%M%SZ"
_AUTH_PART = re.compile(r"\s*([A-Za-z]+)\s*=\s*([^,\s]*)\s*")
_KEY_ID = re.compile(r"[A-Z0-9]{16,128}")
_SCOPE_PART = re.compile(r"[a-z0-9-]{1,64}")
_DATE = re.compile(r"\d{8}", re.ASCII)
_HEADER_NAME = re.compile(r"[a-z0-9-]{1,128}")
_CREDENTIAL = re.compile(r"Credential=([^,\s]+)")
_AMZ_DATE_FORM = re.compile(r"(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z", re.ASCII)
#: The answer to a SigV2 presigned URL (``AWSAccessKeyId``, ``Signature``, ``Expires``).
SIGV2_MESSAGE = (
    "This URL is signed with Signature Version 2 (AWSAccessKeyId, Signature, Expires), which anyjob "
    "does not accept: presign with Signature Version 4, from a client made with "
    'botocore.config.Config(signature_version="s3v4").'
)
#: What a header-signed request must sign besides what the client chooses.
_REQUIRED_SIGNED = {"host"}


class AuthError(Exception):
    """Why a request is not authenticated. ``kind`` is one of: ``missing`` (no signature at
    all), ``malformed`` (an Authorization header or presigned query that is not SigV4),
    ``unknown_key``, ``revoked`` (treated as unknown: a revoked key does not exist any more),
    ``bad_signature``, ``expired`` (clock skew past 15 minutes), ``presign_expired``,
    ``payload_mismatch`` (x-amz-content-sha256 differs from the body), ``replayed``."""

    def __init__(self, kind: str, message: str, *, service: str = "", access_key_id: str = "") -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.service = service
        self.access_key_id = access_key_id


@dataclass(frozen=True)
class Credential:
    access_key_id: str
    date: str  # YYYYMMDD
    region: str
    service: str

    @property
    def scope(self) -> str:
        return f"{self.date}/{self.region}/{self.service}/aws4_request"


@dataclass(frozen=True)
class Parsed:
    """What the request claims, before any key is looked up."""

    credential: Credential
    signed_headers: tuple[str, ...]
    signature: str
    amz_date: str
    timestamp: datetime
    presigned: bool
    expires: int = 0


@dataclass(frozen=True)
class SignedRequest:
    """A verified request: the key that signed it and what the s3 module needs for the chunks
    of an ``aws-chunked`` body (``seed_signature``, ``signing_key``, ``scope``, ``amz_date``)."""

    key: Any  # jobs.awsapi.models.AccessKey
    credential: Credential
    signature: str
    amz_date: str
    timestamp: datetime
    signing_key: bytes
    payload_hash: str
    presigned: bool

    @property
    def seed_signature(self) -> str:
        return self.signature

    @property
    def scope(self) -> str:
        return self.credential.scope

    @property
    def streaming(self) -> bool:
        return self.payload_hash.startswith(STREAMING_PREFIX)

    @property
    def unsigned_payload(self) -> bool:
        return self.payload_hash == UNSIGNED

    @property
    def payload_sha256(self) -> str | None:
        """The body's SHA-256 (hex) the signature vouches for, or None (unsigned/streaming)."""
        return self.payload_hash if _HEX64.fullmatch(self.payload_hash) else None


# --- the pieces of a signature ---------------------------------------------------------------


def signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    k = hmac.new(("AWS4" + secret).encode(), date.encode(), hashlib.sha256).digest()
    for part in (region, service, "aws4_request"):
        k = hmac.new(k, part.encode(), hashlib.sha256).digest()
    return k


def string_to_sign(amz_date: str, scope: str, canonical_request: str) -> str:
    digest = hashlib.sha256(canonical_request.encode()).hexdigest()
    return f"{ALGORITHM}\n{amz_date}\n{scope}\n{digest}"


def _uri_encode(raw: bytes | str, safe: str) -> str:
    return quote(raw, safe=safe)  # quote never encodes A-Za-z0-9 _.-~ ; uppercase %XX


def raw_path(meta: dict[str, Any]) -> str:
    """The request path as the client encoded it on the wire."""
    raw = meta.get("RAW_URI") or meta.get("REQUEST_URI")
    if raw:
        path = raw.split("?", 1)[0]
        if path.startswith(("http://", "https://")):  # an absolute-form request line
            path = "/" + path.split("/", 3)[3] if path.count("/") >= 3 else "/"
        return path or "/"
    # wsgiref (pytest-django's live_server)/the test client: Django has already decoded
    # PATH_INFO and SCRIPT_NAME as UTF-8 (WSGIRequest replaces the WSGI server's latin-1
    # string), so the client's bytes are the UTF-8 of the text; encode them as AWS clients do
    # (every byte but the unreserved ones and "/").
    path = meta.get("SCRIPT_NAME", "") + meta.get("PATH_INFO", "/")
    return _uri_encode(path.encode("utf-8", "surrogateescape"), safe="/~") or "/"


def canonical_uri(path: str, service: str) -> str:
    if service == "s3":
        return path
    # Other services: remove dot segments and empty segments, then encode the (already
    # encoded) path again, as botocore's SigV4Auth does.
    normalized = posixpath.normpath(path) if path else "/"
    if normalized.startswith("//"):
        normalized = "/" + normalized.lstrip("/")
    if path.endswith("/") and normalized != "/":
        normalized += "/"
    return _uri_encode(normalized, safe="/~")


def _query_pairs(query_string: str) -> list[tuple[bytes, bytes]]:
    pairs = []
    for part in query_string.split("&"):
        if not part:
            continue
        key, _, value = part.partition("=")
        pairs.append((unquote_to_bytes(key), unquote_to_bytes(value)))
    return pairs


def canonical_query(query_string: str, *, drop_signature: bool = False) -> str:
    encoded = [
        (_uri_encode(k, safe="~"), _uri_encode(v, safe="~"))
        for k, v in _query_pairs(query_string)
        if not (drop_signature and k == b"X-Amz-Signature")
    ]
    return "&".join(f"{k}={v}" for k, v in sorted(encoded))


def header_value(meta: dict[str, Any], name: str) -> str | None:
    lower = name.lower()
    if lower == "content-type":
        value = meta.get("CONTENT_TYPE")
    elif lower == "content-length":
        value = meta.get("CONTENT_LENGTH")
    else:
        value = meta.get("HTTP_" + lower.upper().replace("-", "_"))
    return None if value is None else str(value)


def canonical_headers(meta: dict[str, Any], names: tuple[str, ...]) -> str:
    lines = []
    for name in names:
        value = header_value(meta, name) or ""
        lines.append(f"{name}:{' '.join(value.split())}\n")
    return "".join(lines)


def canonical_request(
    method: str,
    meta: dict[str, Any],
    service: str,
    signed_headers: tuple[str, ...],
    payload_hash: str,
    *,
    presigned: bool,
) -> str:
    return "\n".join(
        [
            method.upper(),
            canonical_uri(raw_path(meta), service),
            canonical_query(meta.get("QUERY_STRING", ""), drop_signature=presigned),
            canonical_headers(meta, signed_headers),
            ";".join(signed_headers),
            payload_hash,
        ]
    )


# --- parsing what the request claims ---------------------------------------------------------


def claimed_service(meta: dict[str, Any], query: dict[str, str]) -> str | None:
    """The service named in the credential scope, before anything is verified (the dispatcher
    needs it to answer even an authentication error in the right protocol)."""
    credential = None
    auth = meta.get("HTTP_AUTHORIZATION", "")
    if auth.startswith(ALGORITHM):
        match = _CREDENTIAL.search(auth)
        credential = match.group(1) if match else None
    elif "X-Amz-Credential" in query:
        credential = query["X-Amz-Credential"]
    if not credential:
        return None
    parts = credential.split("/")
    return parts[3] if len(parts) == 5 else None


def _credential(value: str) -> Credential:
    parts = value.split("/")
    if len(parts) != 5 or parts[4] != "aws4_request":
        raise AuthError("malformed", f"Credential should be scoped to a valid region, not '{value}'. ")
    akid, date, region, service, _ = parts
    if not _KEY_ID.fullmatch(akid) or not _DATE.fullmatch(date):
        raise AuthError(
            "malformed",
            "Credential must have exactly 5 slash-delimited elements, e.g. keyid/date/region/service/term",
        )
    if not _SCOPE_PART.fullmatch(region) or not _SCOPE_PART.fullmatch(service):
        raise AuthError("malformed", "Credential should be scoped to a valid region.")
    return Credential(akid, date, region, service)


def _timestamp(amz_date: str) -> datetime:
    # What ``strptime(amz_date, _AMZ_DATE)`` accepts, read by hand: a fifth of its time.
    match = _AMZ_DATE_FORM.fullmatch(amz_date)
    try:
        if match is None:
            raise ValueError(amz_date)
        return datetime(*(int(part) for part in match.groups()), tzinfo=UTC)
    except ValueError:
        raise AuthError(
            "malformed",
            f"Invalid X-Amz-Date: '{amz_date[:32]}'. It must be in ISO8601 basic format (YYYYMMDDTHHMMSSZ).",
        ) from None


def _signed_header_names(value: str) -> tuple[str, ...]:
    names = tuple(value.split(";")) if value else ()
    if not names or any(not _HEADER_NAME.fullmatch(n) for n in names) or len(names) > 64:
        raise AuthError(
            "malformed", "SignedHeaders must be a semicolon-separated list of lowercase header names."
        )
    if list(names) != sorted(set(names)):
        raise AuthError("malformed", "SignedHeaders must be sorted and without repeats.")
    if not set(names) >= _REQUIRED_SIGNED:
        raise AuthError(
            "bad_signature", "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization."
        )
    return names


def parse(meta: dict[str, Any], query: dict[str, str]) -> Parsed:
    """What the request says about its signature, or ``AuthError`` (missing/malformed)."""
    auth = meta.get("HTTP_AUTHORIZATION")
    if auth:
        algorithm, _, rest = auth.partition(" ")
        if algorithm != ALGORITHM:
            raise AuthError("malformed", f"Authorization header requires '{ALGORITHM}' as its algorithm.")
        fields: dict[str, str] = {}
        for part in rest.split(","):
            match = _AUTH_PART.fullmatch(part)
            if not match:
                raise AuthError(
                    "malformed",
                    "Authorization header requires 'Credential', 'SignedHeaders' and 'Signature' "
                    f"(key=value, comma-separated), not '{part.strip()[:40]}'.",
                )
            fields[match.group(1)] = match.group(2)
        missing = [k for k in ("Credential", "SignedHeaders", "Signature") if k not in fields]
        if missing:
            raise AuthError("malformed", f"Authorization header requires '{missing[0]}' parameter.")
        amz_date = meta.get("HTTP_X_AMZ_DATE")
        if not amz_date:
            raise AuthError(
                "malformed",
                "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.",
            )
        credential = _credential(fields["Credential"])
        return Parsed(
            credential,
            _signed_header_names(fields["SignedHeaders"]),
            fields["Signature"],
            amz_date,
            _timestamp(amz_date),
            presigned=False,
        )
    if "X-Amz-Signature" in query or "X-Amz-Credential" in query or "X-Amz-Algorithm" in query:
        for name in (
            "X-Amz-Algorithm",
            "X-Amz-Credential",
            "X-Amz-Date",
            "X-Amz-Expires",
            "X-Amz-SignedHeaders",
            "X-Amz-Signature",
        ):
            if not query.get(name):
                raise AuthError(
                    "malformed",
                    "Query-string authentication version 4 requires the X-Amz-Algorithm, "
                    "X-Amz-Credential, X-Amz-Signature, X-Amz-Date, X-Amz-SignedHeaders, and "
                    f"X-Amz-Expires parameters; {name} is missing.",
                )
        if query["X-Amz-Algorithm"] != ALGORITHM:
            raise AuthError("malformed", f'X-Amz-Algorithm only supports "{ALGORITHM}"')
        try:
            expires = int(query["X-Amz-Expires"])
        except ValueError:
            raise AuthError("malformed", "X-Amz-Expires should be a number") from None
        if not 0 < expires <= MAX_PRESIGNED_SECONDS:
            raise AuthError("malformed", "X-Amz-Expires must be less than a week (in seconds) that is 604800")
        return Parsed(
            _credential(query["X-Amz-Credential"]),
            _signed_header_names(query["X-Amz-SignedHeaders"]),
            query["X-Amz-Signature"],
            query["X-Amz-Date"],
            _timestamp(query["X-Amz-Date"]),
            presigned=True,
            expires=expires,
        )
    if "Signature" in query and "AWSAccessKeyId" in query:
        # botocore presigns S3 URLs with SigV2 unless the client asks for s3v4: say so, rather
        # than "missing" (SigV2 is not verified here: one scheme, the one every client can use).
        raise AuthError("malformed", SIGV2_MESSAGE)
    raise AuthError("missing", "Request is missing Authentication Token")


def check_time(parsed: Parsed, now: datetime) -> None:
    if parsed.credential.date != parsed.amz_date[:8]:
        raise AuthError(
            "bad_signature",
            f"Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: "
            f"'{parsed.credential.date}' != '{parsed.amz_date[:8]}', from '{parsed.amz_date}'.",
        )
    if parsed.presigned:
        if parsed.timestamp - now > MAX_SKEW:
            raise AuthError("presign_expired", "Request is not valid yet")
        if now > parsed.timestamp + timedelta(seconds=parsed.expires):
            raise AuthError("presign_expired", "Request has expired")
        return
    if parsed.timestamp < now - MAX_SKEW:
        earliest, now_s = (now - MAX_SKEW).strftime(_AMZ_DATE), now.strftime(_AMZ_DATE)
        raise AuthError(
            "expired",
            f"Signature expired: {parsed.amz_date} is now earlier than {earliest} ({now_s} - 15 min.)",
        )
    if parsed.timestamp > now + MAX_SKEW:
        latest, now_s = (now + MAX_SKEW).strftime(_AMZ_DATE), now.strftime(_AMZ_DATE)
        raise AuthError(
            "expired",
            f"Signature not yet current: {parsed.amz_date} is still later than {latest} ({now_s} + 15 min.)",
        )


def payload_hash_for(meta: dict[str, Any], parsed: Parsed, body: bytes | None) -> str:
    """The payload line of the canonical request. ``body`` is the whole body for services whose
    body is read before verification (everything but S3), else None."""
    service = parsed.credential.service
    claimed = header_value(meta, "x-amz-content-sha256")
    if service == "s3":
        if claimed is None:
            # Presigned URLs sign UNSIGNED-PAYLOAD; a header-signed S3 request must say its hash.
            if parsed.presigned:
                return UNSIGNED
            raise AuthError("bad_signature", "Missing required header for this request: x-amz-content-sha256")
        if not (_HEX64.fullmatch(claimed) or claimed == UNSIGNED or claimed.startswith(STREAMING_PREFIX)):
            raise AuthError(
                "payload_mismatch",
                "x-amz-content-sha256 must be UNSIGNED-PAYLOAD, STREAMING-…, or a valid sha256 value.",
            )
        return claimed
    actual = hashlib.sha256(body or b"").hexdigest()
    if claimed is not None and claimed != actual:
        # Other services must sign their body: no UNSIGNED-PAYLOAD, no streaming.
        raise AuthError(
            "payload_mismatch", "The provided 'x-amz-content-sha256' header does not match what was computed."
        )
    return actual


def verify(
    method: str,
    meta: dict[str, Any],
    query: dict[str, str],
    body: bytes | None,
    lookup,
    now: datetime | None = None,
) -> SignedRequest:
    """Check the request's signature. ``lookup(access_key_id)`` returns ``(key, derive)`` for a
    usable key, ``derive(date, region, service)`` giving its signing key (``signing_key`` of its
    secret: ``AccessKey.signing_key``), else raises ``AuthError`` (``unknown_key``/``revoked``)."""
    parsed = parse(meta, query)
    service = parsed.credential.service
    try:
        check_time(parsed, now or datetime.now(UTC))
        payload = payload_hash_for(meta, parsed, body)
        key, derive = lookup(parsed.credential.access_key_id)
        k = derive(parsed.credential.date, parsed.credential.region, service)
        creq = canonical_request(
            method, meta, service, parsed.signed_headers, payload, presigned=parsed.presigned
        )
        expected = hmac.new(
            k, string_to_sign(parsed.amz_date, parsed.credential.scope, creq).encode(), hashlib.sha256
        ).hexdigest()
        if not hmac.compare_digest(expected.encode(), parsed.signature.encode()):
            raise AuthError(
                "bad_signature",
                "The request signature we calculated does not match the signature you provided. "
                "Check your AWS Secret Access Key and signing method. "
                "Consult the service documentation for details.",
            )
    except AuthError as e:
        e.service, e.access_key_id = service, parsed.credential.access_key_id
        raise
    return SignedRequest(
        key=key,
        credential=parsed.credential,
        signature=parsed.signature,
        amz_date=parsed.amz_date,
        timestamp=parsed.timestamp,
        signing_key=k,
        payload_hash=payload,
        presigned=parsed.presigned,
    )


def check_body(signed: SignedRequest, body: bytes) -> None:
    """For a body read whole after verification (S3's small XML bodies): the hash it was signed
    with must be its own."""
    expected = signed.payload_sha256
    if expected is not None and not hmac.compare_digest(hashlib.sha256(body).hexdigest(), expected):
        raise AuthError(
            "payload_mismatch",
            "The provided 'x-amz-content-sha256' header does not match what was computed.",
            service=signed.credential.service,
            access_key_id=signed.credential.access_key_id,
        )


def sign_headers(
    method: str,
    url_path: str,
    query_string: str,
    headers: dict[str, str],
    body: bytes,
    credential: Credential,
    secret: str,
    amz_date: str,
) -> str:
    """The ``Authorization`` value for a request (used by the tests to craft requests botocore
    would not send, e.g. one signed 16 minutes ago)."""
    meta = {"RAW_URI": url_path, "QUERY_STRING": query_string}
    for name, value in headers.items():
        lower = name.lower()
        slot = lower.upper().replace("-", "_")
        meta[slot if lower in ("content-type", "content-length") else "HTTP_" + slot] = value
    names = tuple(sorted(h.lower() for h in headers))
    payload = headers.get("x-amz-content-sha256") or hashlib.sha256(body).hexdigest()
    creq = canonical_request(method, meta, credential.service, names, payload, presigned=False)
    k = signing_key(secret, credential.date, credential.region, credential.service)
    sig = hmac.new(k, string_to_sign(amz_date, credential.scope, creq).encode(), hashlib.sha256).hexdigest()
    return (
        f"{ALGORITHM} Credential={credential.access_key_id}/{credential.scope}, "
        f"SignedHeaders={';'.join(names)}, Signature={sig}"
    )
