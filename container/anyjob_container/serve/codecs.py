"""The default decoders and encoders, and content negotiation.

Used when the user's module leaves out ``input_fn`` or ``output_fn``. Data is plain
Python (nested lists for 2-D numeric data): JSON, CSV and NPY, no numpy needed. Anything
with a ``.tolist()`` method (a numpy array) is encoded by duck typing.

Every error here carries the HTTP ``status_code`` the server answers with, the same
convention as the inference toolkit's errors (and that a user's handler may follow).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from typing import Any

from . import npy

JSON = "application/json"
CSV = "text/csv"
NPY = "application/x-npy"
OCTET_STREAM = "application/octet-stream"  # what a body without Content-Type is (RFC 9110 8.3)


class CodecError(Exception):
    """A request the default codecs refuse; ``str()`` is the one line the client sees."""

    status_code = 400


class BadRequest(CodecError):
    status_code = 400


class UnsupportedContentType(CodecError):
    status_code = 415


class NotAcceptable(CodecError):
    status_code = 406


class EncodeError(CodecError):
    """The prediction cannot be written in the negotiated type: the handler's fault."""

    status_code = 500


# -- decoders: body bytes → data ---------------------------------------------------------


def decode_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}") from None


def _cell(text: str) -> Any:
    stripped = text.strip()
    if not stripped:
        return None
    if "_" not in stripped:  # int() and float() accept 1_000; a CSV number does not
        try:
            return int(stripped)
        except ValueError:
            pass
        try:
            return float(stripped)
        except ValueError:
            pass
    return text


def decode_csv(body: bytes) -> list[list[Any]]:
    """Rows of cells: numbers become int or float, empty cells None, anything else stays text."""
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BadRequest(f"the CSV body is not UTF-8 text: {exc}") from None
    try:
        rows = [[_cell(c) for c in row] for row in csv.reader(io.StringIO(text, newline="")) if row]
    except csv.Error as exc:
        raise BadRequest(f"the body is not valid CSV: {exc}") from None
    if not rows:
        raise BadRequest("the CSV body has no rows")
    return rows


def decode_npy(body: bytes) -> Any:
    try:
        return npy.loads(body)
    except npy.NpyError as exc:
        raise BadRequest(str(exc)) from None


DECODERS: dict[str, Callable[[bytes], Any]] = {JSON: decode_json, CSV: decode_csv, NPY: decode_npy}


def decode(body: bytes, content_type: str) -> Any:
    """The default ``input_fn``: ``content_type`` is a bare, lower-case media type."""
    decoder = DECODERS.get(content_type)
    if decoder is None:
        raise UnsupportedContentType(
            f"unsupported Content-Type {content_type!r}: the default input_fn reads "
            f"{', '.join(DECODERS)} (define input_fn in your module for others)"
        )
    return decoder(body)


# -- encoders: prediction → body bytes ---------------------------------------------------


def _tolist(value: Any) -> Any:
    tolist = getattr(value, "tolist", None)
    if tolist is None:
        raise TypeError(f"{type(value).__name__} values are not JSON serializable")
    return tolist()


_json_encoder = json.JSONEncoder(separators=(",", ":"), default=_tolist)


def encode_json(prediction: Any) -> bytes:
    try:
        return _json_encoder.encode(prediction).encode()
    except (TypeError, ValueError, RecursionError) as exc:
        raise EncodeError(f"cannot encode the prediction as {JSON}: {exc}") from None


def _scalar(value: Any) -> Any:
    if type(value) in (int, float, str):
        return value
    tolist = getattr(value, "tolist", None)  # a numpy scalar's repr is not its value
    return tolist() if tolist is not None else value


def _csv_rows(prediction: Any) -> list[list[Any]]:
    prediction = _scalar(prediction)
    if not isinstance(prediction, (list, tuple)):
        return [[prediction]]
    rows = []
    for item in prediction:
        item = _scalar(item)
        if isinstance(item, (list, tuple)):
            rows.append([_scalar(v) for v in item])
        else:
            rows.append([item])  # a 1-D prediction is one value per line, as SageMaker's built-ins
    return rows


def encode_csv(prediction: Any) -> bytes:
    out = io.StringIO()
    try:
        csv.writer(out, lineterminator="\n").writerows(_csv_rows(prediction))
    except csv.Error as exc:
        raise EncodeError(f"cannot encode the prediction as {CSV}: {exc}") from None
    return out.getvalue().encode()


def encode_npy(prediction: Any) -> bytes:
    try:
        return npy.dumps(prediction)
    except npy.NpyError as exc:
        raise EncodeError(f"cannot encode the prediction as {NPY}: {exc}") from None


ENCODERS: dict[str, Callable[[Any], bytes]] = {JSON: encode_json, CSV: encode_csv, NPY: encode_npy}


# -- headers -----------------------------------------------------------------------------


def media_type(header: str | None) -> str:
    """``"Text/CSV; charset=utf-8"`` → ``"text/csv"``; no header → ``application/octet-stream``."""
    if not header:
        return OCTET_STREAM
    return header.split(";", 1)[0].strip().lower() or OCTET_STREAM


def _refused(params: str) -> bool:
    """Whether an Accept entry's parameters say ``q=0`` ("not this type")."""
    for param in params.split(";"):
        key, _, value = param.partition("=")
        if key.strip().lower() == "q":
            try:
                return float(value) == 0
            except ValueError:
                return False
    return False


def _accept_entries(header: str) -> list[str]:
    """The media types of an Accept header in the order listed, without those at q=0."""
    entries = []
    for part in header.split(","):
        kind, _, params = part.partition(";")
        kind = kind.strip().lower()
        if kind and not (params and _refused(params)):
            entries.append(kind)
    return entries


class Negotiator:
    """Turns an ``Accept`` header into the one type to answer in.

    With ``supported`` (the default ``output_fn``) the first listed type we can write
    wins, ``*/*`` or no header meaning ``default``; none → ``NotAcceptable`` (406). Without
    it (the user writes the body) the first listed type is passed through as it is.
    Answers are cached per header value: clients send the same few again and again.
    """

    MAX_CACHED = 1024

    def __init__(self, default: str, supported: tuple[str, ...] | None) -> None:
        self.default = default
        self.supported = supported
        self._cache: dict[str | None, str] = {}

    def __call__(self, header: str | None) -> str:
        try:
            return self._cache[header]
        except KeyError:
            pass
        chosen = self._choose(header)  # raises NotAcceptable, which is not cached
        if len(self._cache) >= self.MAX_CACHED:
            self._cache.clear()
        self._cache[header] = chosen
        return chosen

    def _choose(self, header: str | None) -> str:
        entries = _accept_entries(header) if header else []
        if self.supported is None:
            first = entries[0] if entries else "*/*"
            return self.default if first == "*/*" else first
        for kind in entries or ["*/*"]:
            if kind == "*/*":
                if self.default in self.supported:
                    return self.default
                raise NotAcceptable(
                    f"the default Accept type {self.default!r} (SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT) "
                    f"is not one the default output_fn writes: {', '.join(self.supported)}"
                )
            if kind.endswith("/*"):
                family = kind[:-1]
                if self.default.startswith(family) and self.default in self.supported:
                    return self.default
                for candidate in self.supported:
                    if candidate.startswith(family):
                        return candidate
            elif kind in self.supported:
                return kind
        raise NotAcceptable(
            f"cannot answer in {header!r}: the default output_fn writes {', '.join(self.supported)} "
            f"(define output_fn in your module for others)"
        )
