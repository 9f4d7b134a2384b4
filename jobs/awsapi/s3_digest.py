"""The digests S3 checks an upload against, computed as the bytes stream past.

``Content-MD5`` (and the ETag, the MD5 in hex), ``x-amz-content-sha256`` (SigV4's payload hash)
and the flexible checksums botocore sends since 1.36 (``x-amz-checksum-crc32``, ``-crc32c``,
``-crc64nvme``, ``-sha1``, ``-sha256``, ``-sha512``, ``-md5``: each the big-endian digest in
base64). No Django here:
the in-process store (``jobs.awsapi.s3_store``) uses it from job processes too.

CRC32 is zlib's; CRC32C comes from the ``crc32c`` package (hardware-accelerated); CRC64NVME has
no C implementation without ``awscrt`` (which would also replace botocore's SigV4 signer in
this process), so it is table-driven Python here: ~10 MB/s, used only when a client sends it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import zlib
from collections.abc import Callable

import crc32c as _crc32c

#: Algorithm names as the ``x-amz-checksum-<name>`` headers spell them, lower case.
ALGORITHMS = ("crc32", "crc32c", "crc64nvme", "sha1", "sha256", "sha512", "md5")
#: How many bytes each algorithm's digest has (a header decoding to another length is invalid).
DIGEST_BYTES = {"crc32": 4, "crc32c": 4, "crc64nvme": 8, "sha1": 20, "sha256": 32, "sha512": 64, "md5": 16}
#: The service model's member names (``ChecksumCRC32``…) per algorithm.
MEMBER = {
    "crc32": "CRC32",
    "crc32c": "CRC32C",
    "crc64nvme": "CRC64NVME",
    "sha1": "SHA1",
    "sha256": "SHA256",
    "sha512": "SHA512",
    "md5": "MD5",
}


def _crc64_table() -> list[int]:
    poly = 0x9A6C9329AC4BC9B5  # CRC-64/NVME, reflected
    table = []
    for i in range(256):
        crc = i
        for _ in range(8):
            crc = (crc >> 1) ^ poly if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC64 = _crc64_table()


class _Crc:
    """A running CRC with ``update``/``digest`` like hashlib's objects."""

    def __init__(self, width: int, step: Callable[[bytes, int], int], init: int = 0) -> None:
        self._width, self._step, self._value = width, step, init

    def update(self, data: bytes) -> None:
        self._value = self._step(data, self._value)

    def digest(self) -> bytes:
        return self._value.to_bytes(self._width, "big")


def _crc64nvme(data: bytes, value: int) -> int:
    crc = value ^ 0xFFFFFFFFFFFFFFFF
    table = _CRC64
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFFFFFFFFFF


def hasher(algorithm: str):
    """A fresh hashlib-like object for ``algorithm`` (one of ``ALGORITHMS``, or ``md5``)."""
    if algorithm == "crc32":
        return _Crc(4, lambda d, v: zlib.crc32(d, v))
    if algorithm == "crc32c":
        return _Crc(4, lambda d, v: _crc32c.crc32c(d, v))
    if algorithm == "crc64nvme":
        return _Crc(8, _crc64nvme)
    if algorithm in ("sha1", "sha256", "sha512", "md5"):
        return hashlib.new(algorithm, usedforsecurity=False)
    raise ValueError(f"unknown checksum algorithm {algorithm!r}")


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def decode_b64(value: str, length: int) -> bytes | None:
    """``value`` decoded from base64 when it is exactly ``length`` bytes, else None."""
    try:
        raw = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if len(raw) == length else None


def composite(algorithm: str, part_digests: list[bytes]) -> str:
    """S3's COMPOSITE checksum of a multipart object: the algorithm over the parts' raw digests
    concatenated, in base64, with ``-<parts>``."""
    h = hasher(algorithm)
    h.update(b"".join(part_digests))
    return f"{b64(h.digest())}-{len(part_digests)}"


class Digests:
    """Every digest one upload needs, fed once per block: MD5 always (the ETag), SHA-256 when
    the signature names the payload's hash, and the checksum algorithms asked for."""

    def __init__(self, algorithms: set[str], *, sha256: bool = False) -> None:
        self.md5 = hashlib.md5(usedforsecurity=False)
        self.sha256 = hashlib.sha256() if sha256 or "sha256" in algorithms else None
        shared = {"sha256": self.sha256, "md5": self.md5}
        self.checksums = {a: shared.get(a) or hasher(a) for a in algorithms}
        self._own = [h for a, h in self.checksums.items() if a not in shared]

    def update(self, block: bytes) -> None:
        self.md5.update(block)
        if self.sha256 is not None:
            self.sha256.update(block)
        for h in self._own:
            h.update(block)
