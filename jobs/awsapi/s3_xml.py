"""S3's XML: the documents the service answers with, and the few request bodies it reads.

Answers are built as text (they are small and flat), in S3's namespace, with element names as
botocore's ``s3`` service model names them. Request bodies (``CreateBucketConfiguration``,
``CompleteMultipartUpload``, ``Delete``) are read with a size bound, and a document that
declares a DTD or entities is refused before it is parsed (no entity expansion, no external
references).
"""

from __future__ import annotations

import re
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from datetime import UTC, datetime
from email.utils import formatdate
from typing import Any
from urllib.parse import quote

from jobs.awsapi.s3_store import S3Error

NAMESPACE = "http://s3.amazonaws.com/doc/2006-03-01/"
#: The largest request body parsed: a CompleteMultipartUpload of 10,000 parts with checksums,
#: or a DeleteObjects of 1,000 keys of 1,024 bytes, fits well.
MAX_BODY_BYTES = 4 * 1024 * 1024
# Characters XML 1.0 cannot carry at all (a key may hold them): shown as U+FFFD in documents
# that have no encoding-type (lists use encoding-type=url, which carries them).
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def text(value: Any) -> str:
    value = _NOT_XML.sub("\ufffd", str(value))
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def element(name: str, value: Any) -> str:
    return f"<{name}>{text(value)}</{name}>"


def elements(pairs: Iterable[tuple[str, Any]]) -> str:
    return "".join(element(name, value) for name, value in pairs if value is not None)


def document(root: str, body: str) -> bytes:
    return f'<?xml version="1.0" encoding="UTF-8"?>\n<{root} xmlns="{NAMESPACE}">{body}</{root}>'.encode()


def error(exc: S3Error, request_id: str) -> bytes:
    fields = "".join(element(k, v) for k, v in exc.fields.items())
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n<Error>'
        f"{element('Code', exc.code)}{element('Message', exc.message)}{fields}"
        f"{element('RequestId', request_id)}{element('HostId', request_id)}</Error>"
    ).encode()


def iso(timestamp: float) -> str:
    """``2026-12-01T22:37:00.000Z``, as S3 writes times in XML."""
    moment = datetime.fromtimestamp(timestamp, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def http_date(timestamp: float) -> str:
    """``Tue, 01 Dec 2026 22:37:00 GMT``, as S3 writes times in headers (whole seconds)."""
    return formatdate(int(timestamp), usegmt=True)


def parse_http_date(value: str) -> float | None:
    from email.utils import parsedate_to_datetime

    try:
        return parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def url_encoded(value: str, encode: bool) -> str:
    """A key or prefix as ``encoding-type=url`` wants it (botocore decodes with
    ``unquote_plus``, so ``+`` and spaces are escaped too)."""
    return quote(value, safe="/") if encode else value


def now_iso() -> str:
    return iso(time.time())


# --- request bodies ---------------------------------------------------------------------------


def parse(body: bytes) -> ET.Element:
    """The root element of ``body`` with namespaces dropped; ``MalformedXML`` otherwise."""
    if len(body) > MAX_BODY_BYTES:
        raise S3Error("MaxMessageLengthExceeded", "Your request was too big.")
    if b"<!DOCTYPE" in body.upper() or b"<!ENTITY" in body.upper():
        raise _malformed()
    try:
        # Safe here: a DTD (and so any entity) was refused above, and expat fetches nothing.
        root = ET.fromstring(body)  # noqa: S314
    except ET.ParseError:
        raise _malformed() from None
    for node in root.iter():
        if isinstance(node.tag, str) and "}" in node.tag:
            node.tag = node.tag.split("}", 1)[1]
    return root


def _malformed() -> S3Error:
    return S3Error(
        "MalformedXML",
        "The XML you provided was not well-formed or did not validate against our published schema",
    )


def child_text(node: ET.Element, name: str) -> str | None:
    found = node.find(name)
    return None if found is None else (found.text or "")


def location_constraint(body: bytes) -> str | None:
    """``CreateBucketConfiguration``'s ``LocationConstraint`` (None: no body, or none given)."""
    if not body.strip():
        return None
    root = parse(body)
    if root.tag != "CreateBucketConfiguration":
        raise _malformed()
    value = child_text(root, "LocationConstraint")
    return value.strip() if value is not None else None


def completed_parts(body: bytes) -> list[dict[str, Any]]:
    """``CompleteMultipartUpload``'s parts: ``PartNumber``, ``ETag``, and ``checksums``
    (algorithm → base64) as sent."""
    root = parse(body)
    if root.tag != "CompleteMultipartUpload":
        raise _malformed()
    parts = []
    for node in root.findall("Part"):
        number = child_text(node, "PartNumber")
        try:
            part_number = int(number or "")
        except ValueError:
            raise _malformed() from None
        checksums = {}
        for algorithm, member in (
            ("crc32", "ChecksumCRC32"),
            ("crc32c", "ChecksumCRC32C"),
            ("crc64nvme", "ChecksumCRC64NVME"),
            ("sha1", "ChecksumSHA1"),
            ("sha256", "ChecksumSHA256"),
        ):
            value = child_text(node, member)
            if value:
                checksums[algorithm] = value.strip()
        parts.append(
            {"PartNumber": part_number, "ETag": child_text(node, "ETag") or "", "checksums": checksums}
        )
    return parts


def delete_request(body: bytes) -> tuple[list[str], bool]:
    """``Delete``'s keys and ``Quiet``."""
    root = parse(body)
    if root.tag != "Delete":
        raise _malformed()
    keys = []
    for node in root.findall("Object"):
        key = child_text(node, "Key")
        if key is None:
            raise _malformed()
        keys.append(key)
    if not keys or len(keys) > 1000:
        raise _malformed()
    quiet = (child_text(root, "Quiet") or "").strip().lower() == "true"
    return keys, quiet
