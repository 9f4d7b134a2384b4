"""The S3 REST-XML service (path-style) over anyjob's embedded store (``jobs.awsapi.s3_store``).

``handle(ctx, request, path)`` is called by the dispatcher (``jobs.awsapi.views``) for every
request signed for ``s3``, after the signature is verified; the body is not read yet. It maps
the method, path and sub-resources to an operation as botocore's ``s3`` model does, answers
S3's XML (errors as ``<Error><Code>…``, HEAD errors without a body) and streams bodies both
ways: an upload is checked (``Content-MD5``, ``x-amz-content-sha256``, ``x-amz-checksum-*``,
aws-chunked framing and chunk signatures) as it is written to a temporary file, which becomes
the object only when every check passed.

Who may do what: every teammate with an access key reads and writes every bucket (the store is
the team's, as the job history is); deleting a bucket is its creator's or staff's.
Unknown operations and sub-resources (ACLs, versioning, tagging…) answer ``NotImplemented``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Callable, Iterator
from typing import IO, Any
from urllib.parse import parse_qsl, unquote, unquote_to_bytes

from django.http import FileResponse, HttpRequest, HttpResponse, StreamingHttpResponse

from jobs.awsapi import s3_digest, s3_xml
from jobs.awsapi.registry import Context
from jobs.awsapi.s3_chunked import Decoder, Signing
from jobs.awsapi.s3_store import (
    MAX_DELETE_KEYS,
    MAX_LIST_KEYS,
    MAX_METADATA_BYTES,
    MAX_PUT_BYTES,
    Expected,
    ObjectInfo,
    ObjectMeta,
    S3Error,
    check_bucket_name,
    check_key,
    store,
)

_STORED_HEADERS = ("Content-Encoding", "Content-Disposition", "Cache-Control", "Content-Language", "Expires")
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")
_HEX64 = re.compile(r"[0-9a-f]{64}")
#: Sub-resources S3 has that this service does not: asking for one is NotImplemented, never a
#: silent listing or an object read.
_UNSUPPORTED = {
    "acl", "accelerate", "analytics", "cors", "encryption", "intelligent-tiering", "inventory",
    "lifecycle", "logging", "metrics", "notification", "object-lock", "ownershipControls", "policy",
    "policyStatus", "publicAccessBlock", "replication", "requestPayment", "restore", "retention",
    "legal-hold", "select", "tagging", "torrent", "versioning", "versions", "website", "attributes",
    "renameObject", "session", "metadataTable",
}  # fmt: skip
_RESPONSE_OVERRIDES = {
    "response-content-type": "Content-Type",
    "response-content-language": "Content-Language",
    "response-expires": "Expires",
    "response-cache-control": "Cache-Control",
    "response-content-disposition": "Content-Disposition",
    "response-content-encoding": "Content-Encoding",
}
OWNER_NAMESPACE = "anyjob-user-"


def handle(ctx: Context, request: HttpRequest, path: str) -> HttpResponse:
    """Serve one S3 request; errors in S3's XML shape (no body for HEAD)."""
    head = request.method == "HEAD"
    try:
        bucket, key = _split(ctx.extra.get("raw_path"), path)
        query = dict(parse_qsl(request.META.get("QUERY_STRING", ""), keep_blank_values=True))
        operation, handler = _route(request.method or "GET", bucket, key, query, request)
        with _guard(ctx, operation, request.method or "GET") as outcome:
            response = handler(ctx, request, bucket, key, query)
            if response.status_code < 300:
                outcome.succeeded()
    except S3Error as exc:
        response = HttpResponse(b"" if head else s3_xml.error(exc, ctx.request_id), status=exc.status)
        if not head:
            response["Content-Type"] = "application/xml"
        if exc.code == "InvalidRange" and "ActualObjectSize" in exc.fields:
            response["Content-Range"] = f"bytes */{exc.fields['ActualObjectSize']}"
    response["x-amz-request-id"] = ctx.request_id
    response["x-amz-id-2"] = ctx.request_id
    return response


def _guard(ctx: Context, operation: str, method: str):
    """The dispatcher's replay guard for a header-signed request that changes something (GET
    and HEAD never do; a presigned URL may be used again until it expires, as on AWS)."""
    import contextlib

    from jobs.awsapi import replay

    signed = ctx.extra.get("signed")
    if signed is None or signed.presigned or method in ("GET", "HEAD"):

        class _Free:
            def succeeded(self) -> None:
                pass

        return contextlib.nullcontext(_Free())
    return replay.guard(signed, operation)


def _split(raw_path: str | None, path: str) -> tuple[str, str]:
    """Bucket and key from the path (as the client encoded it, when the dispatcher kept it)."""
    if raw_path is not None:
        raw = raw_path[1:] if raw_path.startswith("/") else raw_path
        bucket_part, _, key_part = raw.partition("/")
        try:
            bucket = unquote_to_bytes(bucket_part).decode("utf-8")
            key = unquote_to_bytes(key_part).decode("utf-8")
        except UnicodeDecodeError:
            raise S3Error("InvalidURI", "Couldn't parse the specified URI.", 400) from None
        return bucket, key
    bucket, _, key = path.lstrip("/").partition("/") if path.startswith("/") else path.partition("/")
    return unquote(bucket), key


Handler = Callable[[Context, HttpRequest, str, str, dict[str, str]], HttpResponse]


def _route(
    method: str, bucket: str, key: str, query: dict[str, str], request: HttpRequest
) -> tuple[str, Handler]:
    unsupported = sorted(_UNSUPPORTED & set(query))
    if unsupported:
        raise _not_implemented(f"the {unsupported[0]} sub-resource")
    if not bucket:
        if method == "GET":
            return "ListBuckets", list_buckets
        raise _not_implemented(f"{method} /")
    if bucket and not key:
        table: dict[tuple[str, str | None], tuple[str, Handler]] = {
            ("GET", "location"): ("GetBucketLocation", get_bucket_location),
            ("GET", "uploads"): ("ListMultipartUploads", list_multipart_uploads),
            ("GET", "list-type"): ("ListObjectsV2", list_objects),
            ("GET", None): ("ListObjects", list_objects),
            ("PUT", None): ("CreateBucket", create_bucket),
            ("HEAD", None): ("HeadBucket", head_bucket),
            ("DELETE", None): ("DeleteBucket", delete_bucket),
            ("POST", "delete"): ("DeleteObjects", delete_objects),
        }
        for sub in ("location", "uploads", "list-type", "delete"):
            if sub in query and (method, sub) in table:
                return table[(method, sub)]
        if (method, None) in table:
            return table[(method, None)]
        raise _not_implemented(f"{method} on a bucket")
    if "uploadId" in query:
        by_method = {
            "PUT": ("UploadPart", upload_part),
            "POST": ("CompleteMultipartUpload", complete_multipart_upload),
            "DELETE": ("AbortMultipartUpload", abort_multipart_upload),
            "GET": ("ListParts", list_parts),
        }
        if method == "PUT" and request.headers.get("x-amz-copy-source"):
            return "UploadPartCopy", upload_part_copy
        if method in by_method:
            return by_method[method]
    elif method == "POST" and "uploads" in query:
        return "CreateMultipartUpload", create_multipart_upload
    elif method == "PUT":
        if request.headers.get("x-amz-copy-source"):
            return "CopyObject", copy_object
        return "PutObject", put_object
    elif method in ("GET", "HEAD"):
        return ("GetObject", get_object) if method == "GET" else ("HeadObject", get_object)
    elif method == "DELETE":
        return "DeleteObject", delete_object
    raise _not_implemented(f"{method} on an object")


def _not_implemented(what: str) -> S3Error:
    return S3Error(
        "NotImplemented",
        f"A header or operation you provided implies functionality that is not implemented ({what}).",
        501,
    )


# --- shared pieces ----------------------------------------------------------------------------


def _owner_id(user: Any) -> str:
    pk = getattr(user, "pk", None)
    return str(pk) if pk is not None else "anyjob"


def _owner_xml(owner: str, user: Any = None) -> str:
    canonical = hashlib.sha256(f"{OWNER_NAMESPACE}{owner}".encode()).hexdigest()
    name = getattr(user, "username", None) if user is not None and _owner_id(user) == owner else None
    return f"<ID>{canonical}</ID>" + (s3_xml.element("DisplayName", name) if name else "")


def _xml(root: str, body: str, status: int = 200) -> HttpResponse:
    return HttpResponse(s3_xml.document(root, body), status=status, content_type="application/xml")


def _int(query: dict[str, str], name: str, default: int, *, lowest: int = 0) -> int:
    value = query.get(name)
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        number = lowest - 1
    if number < lowest:
        raise S3Error(
            "InvalidArgument",
            f"Provided {name} not an integer or within integer range",
            ArgumentName=name,
            ArgumentValue=value,
        )
    return number


def _content_length(request: HttpRequest) -> int | None:
    value = request.META.get("CONTENT_LENGTH")
    if value in (None, ""):
        return None
    try:
        length = int(value)
    except ValueError:
        raise S3Error("InvalidArgument", "Content-Length is not a number.") from None
    if length < 0:
        raise S3Error("InvalidArgument", "Content-Length must not be negative.")
    return length


def _small_body(ctx: Context, request: HttpRequest) -> bytes:
    """A request's XML body (bounded), checked against its signed hash."""
    length = _content_length(request)
    if length is not None and length > s3_xml.MAX_BODY_BYTES:
        raise S3Error("MaxMessageLengthExceeded", "Your request was too big.")
    body = request.read(s3_xml.MAX_BODY_BYTES + 1)
    if len(body) > s3_xml.MAX_BODY_BYTES:
        raise S3Error("MaxMessageLengthExceeded", "Your request was too big.")
    signed = ctx.extra.get("signed")
    wanted = signed.payload_sha256 if signed is not None else _hex_sha256(request)
    if wanted and hashlib.sha256(body).hexdigest() != wanted:
        raise S3Error(
            "XAmzContentSHA256Mismatch",
            "The provided 'x-amz-content-sha256' header does not match what was computed.",
        )
    return body


def _hex_sha256(request: HttpRequest) -> str | None:
    value = request.headers.get("x-amz-content-sha256", "")
    return value if _HEX64.fullmatch(value) else None


def _metadata(request: HttpRequest) -> dict[str, str]:
    found = {
        name.lower()[len("x-amz-meta-") :]: value
        for name, value in request.headers.items()
        if name.lower().startswith("x-amz-meta-")
    }
    size = sum(len(k.encode()) + len(v.encode()) for k, v in found.items())
    if size > MAX_METADATA_BYTES:
        raise S3Error(
            "MetadataTooLarge",
            "Your metadata headers exceed the maximum allowed metadata size.",
            Size=size,
            MaxSizeAllowed=MAX_METADATA_BYTES,
        )
    return found


def _object_meta(request: HttpRequest) -> ObjectMeta:
    content_type = request.META.get("CONTENT_TYPE") or "binary/octet-stream"
    headers = {}
    for name in _STORED_HEADERS:
        value = request.headers.get(name)
        if value:
            if name == "Content-Encoding":
                value = ",".join(p.strip() for p in value.split(",") if p.strip() != "aws-chunked")
            if value:
                headers[name] = value
    return ObjectMeta(content_type=content_type, metadata=_metadata(request), headers=headers)


def _expected(request: HttpRequest, ctx: Context) -> tuple[Expected, IO[bytes]]:
    """What the body must match, and the stream of its payload (aws-chunked decoded)."""
    expected = Expected()
    md5 = request.headers.get("Content-MD5")
    if md5 is not None:
        raw = s3_digest.decode_b64(md5, 16)
        if raw is None:
            raise S3Error(
                "InvalidDigest", "The Content-MD5 you specified was invalid.", **{"Content-MD5": md5}
            )
        expected.md5 = raw
    sent = [a for a in s3_digest.ALGORITHMS if request.headers.get(f"x-amz-checksum-{a}") is not None]
    if len(sent) > 1:
        raise S3Error(
            "InvalidRequest",
            "Expecting a single x-amz-checksum- header. Multiple checksum Types are not allowed.",
        )
    for algorithm in sent:
        value = request.headers[f"x-amz-checksum-{algorithm}"]
        raw = s3_digest.decode_b64(value, s3_digest.DIGEST_BYTES[algorithm])
        if raw is None:
            raise S3Error("InvalidRequest", f"Value for x-amz-checksum-{algorithm} header is invalid.")
        expected.checksums[algorithm] = raw
    declared = (request.headers.get("x-amz-sdk-checksum-algorithm") or "").lower()
    if declared and declared not in s3_digest.ALGORITHMS:
        raise S3Error("InvalidRequest", f"Checksum algorithm {declared} is not supported here.")
    signed = ctx.extra.get("signed")
    payload_hash = (
        signed.payload_hash if signed is not None else request.headers.get("x-amz-content-sha256", "")
    )
    encoding = [p.strip().lower() for p in (request.headers.get("Content-Encoding") or "").split(",")]
    streaming = payload_hash.startswith("STREAMING-") or "aws-chunked" in encoding
    length = _content_length(request)
    if not streaming:
        if length is None:
            raise S3Error("MissingContentLength", "You must provide the Content-Length HTTP header.", 411)
        if length > MAX_PUT_BYTES:
            raise _too_large(length)
        expected.length = length
        if _HEX64.fullmatch(payload_hash or ""):
            expected.sha256_hex = payload_hash
        return expected, request  # type: ignore[return-value]
    decoded = request.headers.get("x-amz-decoded-content-length")
    try:
        decoded_length = int(decoded or "")
    except ValueError:
        raise S3Error(
            "MissingContentLength",
            "You must provide the x-amz-decoded-content-length header for aws-chunked bodies.",
            411,
        ) from None
    if decoded_length > MAX_PUT_BYTES:
        raise _too_large(decoded_length)
    signed_chunks = payload_hash.startswith("STREAMING-AWS4-HMAC-SHA256-PAYLOAD")
    signing = None
    if signed is not None and signed_chunks:
        signing = Signing(signed.signing_key, signed.seed_signature, signed.amz_date, signed.scope)
    decoder = Decoder(request, decoded_length, signed=signed_chunks, signing=signing)  # type: ignore[arg-type]
    trailer = (request.headers.get("x-amz-trailer") or "").strip().lower()
    if trailer:
        algorithm = trailer.removeprefix("x-amz-checksum-")
        if not trailer.startswith("x-amz-checksum-") or algorithm not in s3_digest.ALGORITHMS:
            raise S3Error("InvalidRequest", f"The x-amz-trailer {trailer} is not supported.")
        expected.compute.add(algorithm)

        def late() -> dict[str, bytes]:
            value = decoder.trailers.get(trailer)
            if value is None:
                raise S3Error(
                    "IncompleteBody", f"The trailer {trailer} announced in x-amz-trailer is missing."
                )
            raw = s3_digest.decode_b64(value, s3_digest.DIGEST_BYTES[algorithm])
            if raw is None:
                raise S3Error("InvalidRequest", f"Value for {trailer} trailing header is invalid.")
            return {algorithm: raw}

        expected.late = late
    return expected, decoder  # type: ignore[return-value]


def _too_large(size: int) -> S3Error:
    return S3Error(
        "EntityTooLarge",
        "Your proposed upload exceeds the maximum allowed size",
        ProposedSize=size,
        MaxSizeAllowed=MAX_PUT_BYTES,
    )


def _checksum_headers(response: HttpResponse, meta: ObjectMeta) -> None:
    for algorithm, value in meta.checksums.items():
        if value:
            response[f"x-amz-checksum-{algorithm}"] = value
    if meta.checksum_type and any(meta.checksums.values()):
        response["x-amz-checksum-type"] = meta.checksum_type


def _checksum_elements(meta: ObjectMeta) -> str:
    pairs = [(f"Checksum{s3_digest.MEMBER[a]}", v) for a, v in meta.checksums.items() if v]
    if pairs and meta.checksum_type:
        pairs.append(("ChecksumType", meta.checksum_type))
    return s3_xml.elements(pairs)


# --- buckets ----------------------------------------------------------------------------------


def list_buckets(
    ctx: Context, request: HttpRequest, bucket: str, key: str, query: dict[str, str]
) -> HttpResponse:
    prefix = query.get("prefix", "")
    rows = "".join(
        "<Bucket>"
        + s3_xml.elements(
            [("Name", b.name), ("CreationDate", s3_xml.iso(b.created)), ("BucketRegion", b.region)]
        )
        + "</Bucket>"
        for b in store().buckets()
        if b.name.startswith(prefix)
    )
    owner = _owner_xml(_owner_id(ctx.user), ctx.user)
    extra = s3_xml.element("Prefix", prefix) if prefix else ""
    return _xml("ListAllMyBucketsResult", f"<Owner>{owner}</Owner><Buckets>{rows}</Buckets>{extra}")


def create_bucket(
    ctx: Context, request: HttpRequest, bucket: str, key: str, query: dict[str, str]
) -> HttpResponse:
    check_bucket_name(bucket)
    constraint = s3_xml.location_constraint(_small_body(ctx, request))
    if constraint == "us-east-1":
        raise S3Error(
            "InvalidLocationConstraint",
            "The specified location-constraint is not valid",
            LocationConstraint=constraint,
        )
    if constraint is None and ctx.region != "us-east-1":
        raise S3Error(
            "IllegalLocationConstraintException",
            "The unspecified location constraint is incompatible for the region specific endpoint this "
            "request was sent to.",
        )
    if constraint is not None and constraint != ctx.region:
        raise S3Error(
            "IllegalLocationConstraintException",
            f"The {constraint} location constraint is incompatible for the region specific endpoint this "
            "request was sent to.",
        )
    store().create_bucket(bucket, constraint or "us-east-1", _owner_id(ctx.user))
    response = HttpResponse(status=200)
    response["Location"] = f"/{bucket}"
    return response


def head_bucket(
    ctx: Context, request: HttpRequest, bucket: str, key: str, query: dict[str, str]
) -> HttpResponse:
    found = store().require_bucket(bucket)
    response = HttpResponse(status=200)
    response["x-amz-bucket-region"] = found.region
    response["x-amz-access-point-alias"] = "false"
    return response


def get_bucket_location(
    ctx: Context, request: HttpRequest, bucket: str, key: str, query: dict[str, str]
) -> HttpResponse:
    found = store().require_bucket(bucket)
    region = "" if found.region == "us-east-1" else found.region
    return HttpResponse(
        s3_xml.document("LocationConstraint", s3_xml.text(region)), content_type="application/xml"
    )


def delete_bucket(
    ctx: Context, request: HttpRequest, bucket: str, key: str, query: dict[str, str]
) -> HttpResponse:
    found = store().require_bucket(bucket)
    if found.owner != _owner_id(ctx.user) and not getattr(ctx.user, "is_staff", False):
        raise S3Error(
            "AccessDenied",
            "Access Denied: only the bucket's creator or staff may delete it.",
            403,
            BucketName=bucket,
        )
    store().delete_bucket(bucket)
    return HttpResponse(status=204)


# --- listing ----------------------------------------------------------------------------------


def _token(after: str) -> str:
    return base64.urlsafe_b64encode(json.dumps({"after": after}).encode()).decode()


def _untoken(token: str) -> str:
    try:
        return str(json.loads(base64.urlsafe_b64decode(token.encode()))["after"])
    except (ValueError, KeyError, TypeError):
        raise S3Error(
            "InvalidArgument",
            "The continuation token provided is incorrect",
            ArgumentName="continuation-token",
        ) from None


def list_objects(
    ctx: Context, request: HttpRequest, bucket: str, key: str, query: dict[str, str]
) -> HttpResponse:
    """ListObjectsV2 (``list-type=2``) and ListObjects (v1, markers)."""
    v2 = "list-type" in query
    if v2 and query["list-type"] != "2":
        raise S3Error("InvalidArgument", "Invalid List Type specified", ArgumentName="list-type")
    encoding = query.get("encoding-type")
    if encoding not in (None, "url"):
        raise S3Error(
            "InvalidArgument", "Invalid Encoding Method specified in Request", ArgumentName="encoding-type"
        )
    encode = encoding == "url"
    prefix, delimiter = query.get("prefix", ""), query.get("delimiter", "")
    max_keys = min(_int(query, "max-keys", MAX_LIST_KEYS), MAX_LIST_KEYS)
    if v2:
        token = query.get("continuation-token")
        start_after = query.get("start-after", "")
        after = _untoken(token) if token is not None else start_after
    else:
        after = query.get("marker", "")
    listing = store().list(bucket, prefix=prefix, delimiter=delimiter, after=after, max_keys=max_keys)
    enc = s3_xml.url_encoded
    head = [("Name", bucket), ("Prefix", enc(prefix, encode))]
    if v2:
        if query.get("continuation-token") is not None:
            head.append(("ContinuationToken", query["continuation-token"]))
        if query.get("start-after"):
            head.append(("StartAfter", enc(query["start-after"], encode)))
    else:
        head.append(("Marker", enc(after, encode)))
        if listing.truncated and delimiter:
            head.append(("NextMarker", enc(listing.next_after, encode)))
    head += [("MaxKeys", max_keys)]
    if delimiter:
        head.append(("Delimiter", enc(delimiter, encode)))
    if encode:
        head.append(("EncodingType", "url"))
    head.append(("IsTruncated", "true" if listing.truncated else "false"))
    if v2:
        head.append(("KeyCount", len(listing.objects) + len(listing.prefixes)))
        if listing.truncated:
            head.append(("NextContinuationToken", _token(listing.next_after)))
    owner = _owner_xml("anyjob")
    contents = []
    for obj in listing.objects:
        algorithms = "".join(
            s3_xml.element("ChecksumAlgorithm", s3_digest.MEMBER[a])
            for a, v in obj.meta.checksums.items()
            if v
        )
        extra = f"<Owner>{owner}</Owner>" if not v2 or query.get("fetch-owner") == "true" else ""
        checksum_type = (
            s3_xml.element("ChecksumType", obj.meta.checksum_type)
            if algorithms and obj.meta.checksum_type
            else ""
        )
        contents.append(
            "<Contents>"
            + s3_xml.elements(
                [
                    ("Key", enc(obj.key, encode)),
                    ("LastModified", s3_xml.iso(obj.modified)),
                    ("ETag", f'"{obj.etag}"'),
                ]
            )
            + algorithms
            + checksum_type
            + s3_xml.elements([("Size", obj.size), ("StorageClass", "STANDARD")])
            + extra
            + "</Contents>"
        )
    prefixes = "".join(
        f"<CommonPrefixes>{s3_xml.element('Prefix', enc(p, encode))}</CommonPrefixes>"
        for p in listing.prefixes
    )
    return _xml("ListBucketResult", s3_xml.elements(head) + "".join(contents) + prefixes)


# --- objects ----------------------------------------------------------------------------------


def put_object(
    ctx: Context, request: HttpRequest, bucket: str, key: str, query: dict[str, str]
) -> HttpResponse:
    check_key(key)
    meta = _object_meta(request)
    expected, stream = _expected(request, ctx)
    info = store().put(bucket, key, stream, expected, meta)
    response = HttpResponse(status=200)
    response["ETag"] = f'"{info.etag}"'
    _checksum_headers(response, info.meta)
    return response


def _object_headers(response: HttpResponse, info: ObjectInfo, query: dict[str, str]) -> None:
    response["ETag"] = f'"{info.etag}"'
    response["Last-Modified"] = s3_xml.http_date(info.modified)
    response["Accept-Ranges"] = "bytes"
    response["Content-Type"] = info.meta.content_type
    for name, value in info.meta.headers.items():
        response[name] = value
    for name, value in info.meta.metadata.items():
        response[f"x-amz-meta-{name}"] = value
    if info.meta.parts:
        response["x-amz-mp-parts-count"] = str(info.meta.parts)
    for param, header in _RESPONSE_OVERRIDES.items():
        if query.get(param):
            response[header] = query[param]


def _not_modified(request: HttpRequest, info: ObjectInfo) -> int | None:
    """304 or 412 when a conditional header says so, else None (RFC 7232's order)."""
    etag = f'"{info.etag}"'
    modified = int(info.modified)

    def matches(header: str) -> bool:
        values = [v.strip() for v in header.split(",")]
        return "*" in values or etag in values or info.etag in values

    if_match = request.headers.get("If-Match")
    if if_match is not None and not matches(if_match):
        return 412
    since = request.headers.get("If-Unmodified-Since")
    if if_match is None and since is not None:
        when = s3_xml.parse_http_date(since)
        if when is not None and modified > when:
            return 412
    if_none = request.headers.get("If-None-Match")
    if if_none is not None and matches(if_none):
        return 304
    since = request.headers.get("If-Modified-Since")
    if if_none is None and since is not None:
        when = s3_xml.parse_http_date(since)
        if when is not None and modified <= when:
            return 304
    return None


def _range(header: str | None, size: int) -> tuple[int, int] | None:
    """``(first, last)`` of a ``Range: bytes=…`` header, None for the whole object (no header,
    or one this service does not read, as S3 ignores a multi-range), ``InvalidRange`` when
    nothing of the object is in it."""
    if not header:
        return None
    match = _RANGE.fullmatch(header.strip())
    if not match or (not match.group(1) and not match.group(2)):
        return None
    first_text, last_text = match.groups()
    if first_text:
        first = int(first_text)
        last = int(last_text) if last_text else size - 1
        if last_text and last < first:
            return None
        if first >= size:
            raise _invalid_range(header, size)
        return first, min(last, size - 1)
    suffix = int(last_text)
    if suffix == 0:
        raise _invalid_range(header, size)
    return max(0, size - suffix), size - 1


def _invalid_range(header: str, size: int) -> S3Error:
    return S3Error(
        "InvalidRange",
        "The requested range is not satisfiable",
        416,
        RangeRequested=header,
        ActualObjectSize=size,
    )


def _stream(source: IO[bytes], first: int, length: int) -> Iterator[bytes]:
    try:
        source.seek(first)
        left = length
        while left > 0:
            block = source.read(min(1024 * 1024, left))
            if not block:
                break
            left -= len(block)
            yield block
    finally:
        source.close()


def get_object(
    ctx: Context, request: HttpRequest, bucket: str, key: str, query: dict[str, str]
) -> HttpResponse:
    """GetObject and HeadObject (``Range``, conditional headers, response overrides)."""
    if "partNumber" in query:
        raise _not_implemented("partNumber on GetObject/HeadObject")
    head = request.method == "HEAD"
    if head:
        info = store().head(bucket, key)
        source = None
    else:
        info, source = store().open(bucket, key)
    try:
        condition = _not_modified(request, info)
        if condition == 412:
            raise S3Error(
                "PreconditionFailed",
                "At least one of the pre-conditions you specified did not hold",
                412,
                Condition="If-Match",
            )
        wanted = _range(request.headers.get("Range"), info.size) if condition is None else None
    except BaseException:
        if source is not None:
            source.close()
        raise
    if condition == 304:
        if source is not None:
            source.close()
        response = HttpResponse(status=304)
        response["ETag"] = f'"{info.etag}"'
        response["Last-Modified"] = s3_xml.http_date(info.modified)
        return response
    first, last = wanted if wanted is not None else (0, info.size - 1)
    length = max(0, last - first + 1)
    if head:
        response = HttpResponse(status=206 if wanted else 200)
    else:
        assert source is not None
        if wanted is None:
            # The whole blob: gunicorn hands a file to sendfile(2), the kernel copies it.
            response = FileResponse(source, content_type=info.meta.content_type)
            response.block_size = 1024 * 1024
        else:
            response = StreamingHttpResponse(_stream(source, first, length), status=206)
    _object_headers(response, info, query)
    response["Content-Length"] = str(length)
    if wanted is not None:
        response["Content-Range"] = f"bytes {first}-{last}/{info.size}"
    elif (request.headers.get("x-amz-checksum-mode") or "").upper() == "ENABLED":
        _checksum_headers(response, info.meta)
    return response


def delete_object(
    ctx: Context, request: HttpRequest, bucket: str, key: str, query: dict[str, str]
) -> HttpResponse:
    store().delete(bucket, key)
    return HttpResponse(status=204)


def delete_objects(
    ctx: Context, request: HttpRequest, bucket: str, key: str, query: dict[str, str]
) -> HttpResponse:
    has_md5 = request.headers.get("Content-MD5") is not None
    sent = [a for a in s3_digest.ALGORITHMS if request.headers.get(f"x-amz-checksum-{a}") is not None]
    if not has_md5 and not sent:
        raise S3Error("InvalidRequest", "Missing required header for this request: Content-MD5")
    body = _small_body(ctx, request)
    if has_md5:
        raw = s3_digest.decode_b64(request.headers["Content-MD5"], 16)
        if raw is None:
            raise S3Error("InvalidDigest", "The Content-MD5 you specified was invalid.")
        if hashlib.md5(body, usedforsecurity=False).digest() != raw:
            raise S3Error("BadDigest", "The Content-MD5 you specified did not match what we received.")
    for algorithm in sent:
        h = s3_digest.hasher(algorithm)
        h.update(body)
        raw = s3_digest.decode_b64(
            request.headers[f"x-amz-checksum-{algorithm}"], s3_digest.DIGEST_BYTES[algorithm]
        )
        if raw is None:
            raise S3Error("InvalidRequest", f"Value for x-amz-checksum-{algorithm} header is invalid.")
        if h.digest() != raw:
            raise S3Error(
                "BadDigest",
                f"The {s3_digest.MEMBER[algorithm]} you specified did not match the calculated checksum.",
            )
    keys, quiet = s3_xml.delete_request(body)
    if len(keys) > MAX_DELETE_KEYS:
        raise S3Error(
            "MalformedXML",
            "The XML you provided was not well-formed or did not validate against our published schema",
        )
    s = store()
    s.require_bucket(bucket)
    parts = []
    for name in keys:
        try:
            check_key(name)
            s.delete(bucket, name)
        except S3Error as exc:
            parts.append(
                "<Error>"
                + s3_xml.elements([("Key", name), ("Code", exc.code), ("Message", exc.message)])
                + "</Error>"
            )
            continue
        if not quiet:
            parts.append(f"<Deleted>{s3_xml.element('Key', name)}</Deleted>")
    return _xml("DeleteResult", "".join(parts))


def _copy_source(request: HttpRequest) -> tuple[str, str]:
    """The bucket and key of ``x-amz-copy-source`` (``[/]bucket/key``, percent-encoded)."""
    path, _, version = request.headers["x-amz-copy-source"].partition("?")
    if version and not version.startswith("versionId=null"):
        raise _not_implemented("a versioned copy source")
    src_bucket, _, src_key = unquote(path.lstrip("/")).partition("/")
    if not src_bucket or not src_key:
        raise S3Error(
            "InvalidArgument",
            "Copy Source must mention the source bucket and key: sourcebucket/sourcekey",
            ArgumentName="x-amz-copy-source",
        )
    return src_bucket, src_key


def copy_object(
    ctx: Context, request: HttpRequest, bucket: str, key: str, query: dict[str, str]
) -> HttpResponse:
    check_key(key)
    src_bucket, src_key = _copy_source(request)
    directive = (request.headers.get("x-amz-metadata-directive") or "COPY").upper()
    if directive not in ("COPY", "REPLACE"):
        raise S3Error(
            "InvalidArgument", "Unknown metadata directive.", ArgumentName="x-amz-metadata-directive"
        )
    if directive == "COPY" and (src_bucket, src_key) == (bucket, key):
        raise S3Error(
            "InvalidRequest",
            "This copy request is illegal because it is trying to copy an object to itself without "
            "changing the object's metadata, storage class, website redirect location or encryption "
            "attributes.",
        )
    info = store().head(src_bucket, src_key)
    condition = _not_modified_copy(request, info)
    if condition:
        raise S3Error(
            "PreconditionFailed",
            "At least one of the pre-conditions you specified did not hold",
            412,
            Condition=condition,
        )
    copied = store().copy(
        src_bucket, src_key, bucket, key, _object_meta(request) if directive == "REPLACE" else None
    )
    body = s3_xml.elements(
        [("ETag", f'"{copied.etag}"'), ("LastModified", s3_xml.iso(copied.modified))]
    ) + _checksum_elements(copied.meta)
    return _xml("CopyObjectResult", body)


def _not_modified_copy(request: HttpRequest, info: ObjectInfo) -> str | None:
    etag = f'"{info.etag}"'
    if_match = request.headers.get("x-amz-copy-source-if-match")
    if (
        if_match is not None
        and etag not in [v.strip() for v in if_match.split(",")]
        and info.etag not in if_match
    ):
        return "x-amz-copy-source-If-Match"
    if_none = request.headers.get("x-amz-copy-source-if-none-match")
    if if_none is not None and (etag in if_none or info.etag in if_none):
        return "x-amz-copy-source-If-None-Match"
    return None


# --- multipart --------------------------------------------------------------------------------


def create_multipart_upload(
    ctx: Context, request: HttpRequest, bucket: str, key: str, query: dict[str, str]
) -> HttpResponse:
    check_key(key)
    meta = _object_meta(request)
    algorithm = (request.headers.get("x-amz-checksum-algorithm") or "").lower()
    checksum_type = (request.headers.get("x-amz-checksum-type") or "").upper()
    if algorithm:
        if algorithm not in s3_digest.ALGORITHMS:
            raise S3Error("InvalidRequest", f"Checksum algorithm {algorithm} is not supported here.")
        if checksum_type not in ("", "COMPOSITE", "FULL_OBJECT"):
            raise S3Error(
                "InvalidRequest", f"Value for x-amz-checksum-type header is invalid: {checksum_type}."
            )
        if algorithm == "crc64nvme" and checksum_type == "COMPOSITE":
            raise S3Error(
                "InvalidRequest",
                "The COMPOSITE checksum type cannot be used with the CRC64NVME checksum algorithm.",
            )
        meta.checksums = {algorithm: ""}
        meta.checksum_type = checksum_type or ("FULL_OBJECT" if algorithm == "crc64nvme" else "COMPOSITE")
    elif checksum_type:
        raise S3Error(
            "InvalidRequest",
            "The x-amz-checksum-type header can only be used with the x-amz-checksum-algorithm header.",
        )
    upload = store().create_upload(bucket, key, _owner_id(ctx.user), meta)
    response = _xml(
        "InitiateMultipartUploadResult",
        s3_xml.elements([("Bucket", bucket), ("Key", key), ("UploadId", upload.id)]),
    )
    if algorithm:
        response["x-amz-checksum-algorithm"] = algorithm.upper()
        response["x-amz-checksum-type"] = meta.checksum_type
    return response


def upload_part(
    ctx: Context, request: HttpRequest, bucket: str, key: str, query: dict[str, str]
) -> HttpResponse:
    number = _int(query, "partNumber", 0, lowest=1)
    expected, stream = _expected(request, ctx)
    part = store().upload_part(bucket, key, query["uploadId"], number, stream, expected)
    response = HttpResponse(status=200)
    response["ETag"] = f'"{part.etag}"'
    for algorithm, value in part.checksums.items():
        response[f"x-amz-checksum-{algorithm}"] = value
    return response


class _Slice:
    """``length`` bytes of ``source`` from where it stands (a part copied from an object)."""

    def __init__(self, source: IO[bytes], length: int) -> None:
        self._source, self._left = source, length

    def read(self, n: int = -1) -> bytes:
        if self._left <= 0:
            return b""
        data = self._source.read(self._left if n is None or n < 0 else min(n, self._left))
        self._left -= len(data)
        return data


def upload_part_copy(
    ctx: Context, request: HttpRequest, bucket: str, key: str, query: dict[str, str]
) -> HttpResponse:
    """UploadPartCopy: a part made of an object's bytes (``x-amz-copy-source-range``, or all),
    what ``aws s3 cp s3://… s3://…`` and boto3's managed copy send for objects over 8 MiB."""
    number = _int(query, "partNumber", 0, lowest=1)
    src_bucket, src_key = _copy_source(request)
    info, source = store().open(src_bucket, src_key)
    with source:
        first, last = 0, info.size - 1
        wanted = request.headers.get("x-amz-copy-source-range")
        if wanted is not None:
            match = re.fullmatch(r"bytes=(\d+)-(\d+)", wanted.strip())
            if not match or int(match.group(1)) > int(match.group(2)) or int(match.group(2)) >= info.size:
                raise S3Error(
                    "InvalidArgument",
                    f"Range specified is not valid for source object of size: {info.size}",
                    ArgumentName="x-amz-copy-source-range",
                    ArgumentValue=wanted,
                )
            first, last = int(match.group(1)), int(match.group(2))
        source.seek(first)
        length = last - first + 1
        stream = _Slice(source, length)
        part = store().upload_part(bucket, key, query["uploadId"], number, stream, Expected(length=length))  # type: ignore[arg-type]
    body = s3_xml.elements([("ETag", f'"{part.etag}"'), ("LastModified", s3_xml.iso(part.modified))])
    body += s3_xml.elements((f"Checksum{s3_digest.MEMBER[a]}", v) for a, v in part.checksums.items())
    return _xml("CopyPartResult", body)


def complete_multipart_upload(
    ctx: Context, request: HttpRequest, bucket: str, key: str, query: dict[str, str]
) -> HttpResponse:
    wanted = s3_xml.completed_parts(_small_body(ctx, request))
    info = store().complete(bucket, key, query["uploadId"], wanted)
    body = s3_xml.elements(
        [("Location", f"/{bucket}/{key}"), ("Bucket", bucket), ("Key", key), ("ETag", f'"{info.etag}"')]
    ) + _checksum_elements(info.meta)
    return _xml("CompleteMultipartUploadResult", body)


def abort_multipart_upload(
    ctx: Context, request: HttpRequest, bucket: str, key: str, query: dict[str, str]
) -> HttpResponse:
    store().abort(bucket, key, query["uploadId"])
    return HttpResponse(status=204)


def list_parts(
    ctx: Context, request: HttpRequest, bucket: str, key: str, query: dict[str, str]
) -> HttpResponse:
    upload = store().upload(bucket, key, query["uploadId"])
    max_parts = min(_int(query, "max-parts", 1000), 1000)
    marker = _int(query, "part-number-marker", 0)
    parts = store().parts(upload.id, after=marker, limit=max_parts + 1)
    truncated = len(parts) > max_parts
    parts = parts[:max_parts]
    rows = "".join(
        "<Part>"
        + s3_xml.elements(
            [
                ("PartNumber", p.number),
                ("LastModified", s3_xml.iso(p.modified)),
                ("ETag", f'"{p.etag}"'),
                ("Size", p.size),
            ]
            + [(f"Checksum{s3_digest.MEMBER[a]}", v) for a, v in p.checksums.items()]
        )
        + "</Part>"
        for p in parts
    )
    owner = _owner_xml(upload.owner, ctx.user)
    algorithm = next(iter(upload.meta.checksums), "")
    head = [
        ("Bucket", bucket),
        ("Key", key),
        ("UploadId", upload.id),
        ("PartNumberMarker", marker),
        ("NextPartNumberMarker", parts[-1].number if parts else marker),
        ("MaxParts", max_parts),
        ("IsTruncated", "true" if truncated else "false"),
    ]
    tail = s3_xml.elements([("StorageClass", "STANDARD")])
    if algorithm:
        tail += s3_xml.elements(
            [("ChecksumAlgorithm", s3_digest.MEMBER[algorithm]), ("ChecksumType", upload.meta.checksum_type)]
        )
    return _xml(
        "ListPartsResult",
        s3_xml.elements(head) + rows + f"<Initiator>{owner}</Initiator><Owner>{owner}</Owner>" + tail,
    )


def list_multipart_uploads(
    ctx: Context, request: HttpRequest, bucket: str, key: str, query: dict[str, str]
) -> HttpResponse:
    max_uploads = min(_int(query, "max-uploads", 1000), 1000)
    prefix = query.get("prefix", "")
    key_marker, id_marker = query.get("key-marker", ""), query.get("upload-id-marker", "")
    found = store().uploads(
        bucket, prefix=prefix, after_key=key_marker, after_id=id_marker, limit=max_uploads + 1
    )
    truncated = len(found) > max_uploads
    found = found[:max_uploads]
    encode = query.get("encoding-type") == "url"
    enc = s3_xml.url_encoded
    head = [("Bucket", bucket), ("KeyMarker", enc(key_marker, encode)), ("UploadIdMarker", id_marker)]
    if truncated and found:
        head += [("NextKeyMarker", enc(found[-1].key, encode)), ("NextUploadIdMarker", found[-1].id)]
    head += [
        ("Prefix", enc(prefix, encode)),
        ("MaxUploads", max_uploads),
        ("IsTruncated", "true" if truncated else "false"),
    ]
    if encode:
        head.append(("EncodingType", "url"))
    rows = []
    for upload in found:
        owner = _owner_xml(upload.owner, ctx.user)
        algorithm = next(iter(upload.meta.checksums), "")
        extra = s3_xml.element("ChecksumAlgorithm", s3_digest.MEMBER[algorithm]) if algorithm else ""
        rows.append(
            "<Upload>"
            + s3_xml.elements(
                [
                    ("Key", enc(upload.key, encode)),
                    ("UploadId", upload.id),
                    ("Initiated", s3_xml.iso(upload.created)),
                    ("StorageClass", "STANDARD"),
                ]
            )
            + f"<Owner>{owner}</Owner><Initiator>{owner}</Initiator>{extra}</Upload>"
        )
    return _xml("ListMultipartUploadsResult", s3_xml.elements(head) + "".join(rows))
