"""``Content-Encoding: aws-chunked`` bodies: the payload in chunks, then trailing headers.

Each chunk is ``<hex size>[;chunk-signature=<sig>]\\r\\n<bytes>\\r\\n``; a zero-size chunk ends
the data, followed by trailer lines (``x-amz-checksum-crc32:<base64>``, and with a signed
trailer ``x-amz-trailer-signature:<sig>``) and an empty line. botocore sends it as
``STREAMING-UNSIGNED-PAYLOAD-TRAILER`` over HTTPS; other SDKs sign every chunk
(``STREAMING-AWS4-HMAC-SHA256-PAYLOAD[-TRAILER]``): each chunk's signature chains from the
previous one, starting at the request's own (the seed), with the request's signing key.

``Decoder`` is a stream of the decoded payload that checks the framing, the sizes
(``x-amz-decoded-content-length``), and, given a ``Signing``, every chunk's signature, as the
bytes are read; a violation is an ``S3Error`` before the caller sees the last byte.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import IO

from jobs.awsapi.s3_store import S3Error

_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
_MAX_LINE = 4096
_MAX_TRAILERS = 16
#: botocore's chunks are 64 KiB, other SDKs' up to 1 MiB; S3 accepts up to... we take 16 MiB.
MAX_CHUNK = 16 * 1024 * 1024


@dataclass(frozen=True)
class Signing:
    """What verifying chunk signatures takes (the dispatcher derives it while checking the
    request's own signature): the SigV4 signing key, the request's signature (the seed), its
    ``X-Amz-Date`` and credential scope (``20261201/us-east-1/s3/aws4_request``)."""

    key: bytes
    seed: str
    amz_date: str
    scope: str


def _bad(message: str) -> S3Error:
    return S3Error("IncompleteBody", f"The aws-chunked request body is malformed: {message}")


def _signature_error() -> S3Error:
    return S3Error(
        "SignatureDoesNotMatch",
        "The request signature we calculated does not match the signature you provided. Check your key and "
        "signing method.",
        403,
    )


class Decoder:
    """The decoded payload of an aws-chunked body read from ``raw``."""

    def __init__(self, raw: IO[bytes], decoded_length: int, *, signed: bool, signing: Signing | None) -> None:
        self._raw = raw
        self._decoded_length = decoded_length
        self._signed = signed
        self._signing = signing
        self._previous = signing.seed if signing else ""
        self._left = 0  # of the current chunk
        self._chunk_sig = ""
        self._chunk_hash = hashlib.sha256()
        self._done = False
        self._total = 0
        self.trailers: dict[str, str] = {}

    def _line(self) -> bytes:
        line = self._raw.readline(_MAX_LINE + 1)
        if not line.endswith(b"\r\n"):
            raise _bad("a line is too long or the body ends early")
        return line[:-2]

    def _next_chunk(self) -> None:
        header = self._line().decode("latin-1")
        size_text, _, extension = header.partition(";")
        try:
            size = int(size_text, 16)
        except ValueError:
            raise _bad(f"bad chunk size {size_text[:20]!r}") from None
        if size < 0 or size > MAX_CHUNK:
            raise _bad("a chunk is too large")
        signature = ""
        if extension:
            name, _, signature = extension.partition("=")
            if name.strip() != "chunk-signature":
                raise _bad("unknown chunk extension")
        if self._signed and not signature:
            raise _signature_error()
        self._left, self._chunk_sig = size, signature.strip()
        self._chunk_hash = hashlib.sha256()
        if size == 0:
            self._check_chunk()
            self._read_trailers()
            self._done = True
            if self._total != self._decoded_length:
                raise S3Error(
                    "IncompleteBody",
                    "You did not provide the number of bytes specified by the "
                    "x-amz-decoded-content-length header",
                )

    def _check_chunk(self) -> None:
        if not self._signed:
            return
        if self._signing is None:
            raise _signature_error()
        to_sign = "\n".join(
            [
                "AWS4-HMAC-SHA256-PAYLOAD",
                self._signing.amz_date,
                self._signing.scope,
                self._previous,
                _EMPTY_SHA256,
                self._chunk_hash.hexdigest(),
            ]
        )
        expected = hmac.new(self._signing.key, to_sign.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, self._chunk_sig):
            raise _signature_error()
        self._previous = expected

    def _read_trailers(self) -> None:
        lines: list[bytes] = []
        while True:
            line = self._line()
            if not line:
                break
            if len(lines) >= _MAX_TRAILERS:
                raise _bad("too many trailers")
            lines.append(line)
        signature = ""
        for line in lines:
            name, sep, value = line.decode("latin-1").partition(":")
            if not sep:
                raise _bad("a trailer has no ':'")
            name = name.strip().lower()
            if name == "x-amz-trailer-signature":
                signature = value.strip()
            else:
                self.trailers[name] = value.strip()
        if self._signed and self.trailers:
            if self._signing is None or not signature:
                raise _signature_error()
            canonical = "".join(f"{k}:{v}\n" for k, v in self.trailers.items())
            to_sign = "\n".join(
                [
                    "AWS4-HMAC-SHA256-TRAILER",
                    self._signing.amz_date,
                    self._signing.scope,
                    self._previous,
                    hashlib.sha256(canonical.encode()).hexdigest(),
                ]
            )
            expected = hmac.new(self._signing.key, to_sign.encode(), hashlib.sha256).hexdigest()
            if not hmac.compare_digest(expected, signature):
                raise _signature_error()

    def read(self, n: int = -1) -> bytes:
        """Up to ``n`` decoded bytes (at most one chunk's worth); ``b""`` at the end."""
        while not self._done and self._left == 0:
            self._next_chunk()
        if self._done:
            return b""
        want = self._left if n is None or n < 0 else min(n, self._left)
        data = self._raw.read(want)
        if not data:
            raise _bad("the body ends inside a chunk")
        self._left -= len(data)
        self._total += len(data)
        if self._total > self._decoded_length:
            raise S3Error(
                "IncompleteBody", "The body holds more bytes than x-amz-decoded-content-length says"
            )
        self._chunk_hash.update(data)
        if self._left == 0:
            if self._raw.read(2) != b"\r\n":
                raise _bad("a chunk does not end with CRLF")
            self._check_chunk()
        return data
