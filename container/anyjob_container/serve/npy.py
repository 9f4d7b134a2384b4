"""NPY (``application/x-npy``) without numpy and without pickle.

The official toolkit reads request bodies with ``np.load(allow_pickle=True)``: any client
can then run code in the container. Here an array is plain data or it is refused. We
read format versions 1.0, 2.0 and 3.0; booleans, signed and unsigned integers and floats
of either byte order; C or Fortran order; any number of dimensions. Object arrays
(``|O``, i.e. pickles), structured, string and date dtypes are refused.

Arrays become nested Python lists (a 0-d array becomes a scalar) and back. The header is
a Python dict literal, read with ``ast.literal_eval`` (no evaluation of code).
"""

from __future__ import annotations

import ast
import math
import re
import struct
from typing import Any

MAGIC = b"\x93NUMPY"
MAX_HEADER = 65_535  # numpy's own reader stops at 10,000 bytes
MAX_DIMS = 64  # as numpy
MAX_EXTRA_LISTS = 1_000_000  # a (10**9, 0) array is no data but a billion lists

_DESCR = re.compile(r"([<>|=])([biuf])(\d+)")
_CODES = {
    ("b", 1): "?",
    ("i", 1): "b",
    ("i", 2): "h",
    ("i", 4): "i",
    ("i", 8): "q",
    ("u", 1): "B",
    ("u", 2): "H",
    ("u", 4): "I",
    ("u", 8): "Q",
    ("f", 2): "e",
    ("f", 4): "f",
    ("f", 8): "d",
}
_INT64 = (-(2**63), 2**63 - 1)
_UINT64 = (0, 2**64 - 1)


class NpyError(ValueError):
    """The bytes are not an NPY array we accept, or the value cannot be written as one."""


def _struct_format(descr: object) -> tuple[str, int]:
    """(struct byte order + code, item size) for a header's ``descr``."""
    if not isinstance(descr, str):
        raise NpyError("structured NPY dtypes are not supported: send a plain numeric array")
    if descr.lstrip("<>|=").startswith("O"):
        raise NpyError("NPY object arrays hold pickles and are refused: send a numeric array")
    match = _DESCR.fullmatch(descr)
    code = _CODES.get((match[2], int(match[3]))) if match else None
    if code is None:
        raise NpyError(f"unsupported NPY dtype {descr!r}: use bool, int, uint or float")
    order = match[1]
    if order == "|":
        if int(match[3]) != 1:
            raise NpyError(f"NPY dtype {descr!r} needs a byte order")
        order = "<"
    return order + code, int(match[3])


def _header(data: bytes) -> tuple[dict[str, Any], int]:
    """The parsed header dict and the offset where the array data starts."""
    if len(data) < 10 or not data.startswith(MAGIC):
        raise NpyError("the body is not an NPY file (no \\x93NUMPY magic)")
    major, minor = data[6], data[7]
    if major == 1:
        length, start = int.from_bytes(data[8:10], "little"), 10
    elif major in (2, 3):
        length, start = int.from_bytes(data[8:12], "little"), 12
    else:
        raise NpyError(f"unsupported NPY format version {major}.{minor}")
    if length > MAX_HEADER:
        raise NpyError(f"the NPY header is {length} bytes, over the {MAX_HEADER}-byte limit")
    raw = data[start : start + length]
    if len(raw) < length:
        raise NpyError("the NPY file is truncated inside its header")
    try:
        header = ast.literal_eval(raw.decode("utf-8" if major == 3 else "latin-1"))
    except (ValueError, SyntaxError, UnicodeDecodeError, MemoryError, RecursionError, TypeError):
        raise NpyError("the NPY header is not a valid dict literal") from None
    if not isinstance(header, dict) or set(header) != {"descr", "fortran_order", "shape"}:
        raise NpyError("the NPY header must hold exactly 'descr', 'fortran_order' and 'shape'")
    shape = header["shape"]
    if not isinstance(shape, tuple) or not all(type(n) is int and n >= 0 for n in shape):
        raise NpyError(f"the NPY shape {shape!r} is not a tuple of non-negative integers")
    if len(shape) > MAX_DIMS:
        raise NpyError(f"the NPY array has {len(shape)} dimensions, over the limit of {MAX_DIMS}")
    if not isinstance(header["fortran_order"], bool):
        raise NpyError("the NPY header's 'fortran_order' must be True or False")
    return header, start + length


def _list_count(shape: tuple[int, ...]) -> int:
    """How many Python lists nesting an array of ``shape`` takes (besides the data)."""
    total = prefix = 1
    for n in shape[:-1]:
        prefix *= n
        total += prefix
    return total


def _nest_c(flat: list, shape: tuple[int, ...]) -> list:
    if len(shape) == 1:
        return flat
    step = math.prod(shape[1:])
    inner = shape[1:]
    if len(inner) == 1:
        return [flat[i * step : (i + 1) * step] for i in range(shape[0])]
    return [_nest_c(flat[i * step : (i + 1) * step], inner) for i in range(shape[0])]


def _nest_fortran(flat: list, shape: tuple[int, ...]) -> list:
    # In Fortran order the first index varies fastest: row i is every shape[0]-th item.
    if len(shape) == 1:
        return flat
    n = shape[0]
    return [_nest_fortran(flat[i::n], shape[1:]) for i in range(n)]


def loads(data: bytes) -> Any:
    """Decode NPY bytes into nested lists (a scalar for a 0-d array). Raises ``NpyError``."""
    header, offset = _header(data)
    fmt, size = _struct_format(header["descr"])
    shape: tuple[int, ...] = header["shape"]
    count = math.prod(shape)
    if _list_count(shape) > count + MAX_EXTRA_LISTS:
        raise NpyError(f"the NPY shape {shape} holds too many empty or one-item rows")
    if len(data) - offset != count * size:
        raise NpyError(
            f"the NPY data is {len(data) - offset} bytes, but shape {shape} of {header['descr']!r} "
            f"needs {count * size}"
        )
    flat = list(struct.unpack_from(f"{fmt[0]}{count}{fmt[1]}", data, offset))
    if not shape:
        return flat[0]
    nest = _nest_fortran if header["fortran_order"] else _nest_c
    return nest(flat, shape)


def _plain(value: Any) -> Any:
    tolist = getattr(value, "tolist", None)  # numpy arrays and scalars, by duck typing
    return tolist() if tolist is not None and not isinstance(value, (list, tuple)) else value


def _shape_and_flat(value: Any) -> tuple[tuple[int, ...], list]:
    value = _plain(value)
    if not isinstance(value, (list, tuple)):
        return (), [value]
    items = [_plain(v) for v in value]
    if not items or not isinstance(items[0], (list, tuple)):
        if any(isinstance(v, (list, tuple)) for v in items):
            raise NpyError("cannot write a ragged array as NPY: every row must have the same shape")
        return (len(items),), items
    shapes, flat = set(), []
    for item in items:
        sub_shape, sub_flat = _shape_and_flat(item)
        shapes.add(sub_shape)
        flat.extend(sub_flat)
    if len(shapes) != 1:
        raise NpyError("cannot write a ragged array as NPY: every row must have the same shape")
    return (len(items), *shapes.pop()), flat


def _dtype(flat: list) -> tuple[str, str]:
    """(descr, struct code) that holds every value, as numpy would choose it."""
    types = {type(v) for v in flat}
    if not types or float in types:
        if types - {bool, int, float}:
            raise NpyError(f"cannot write {_names(types - {bool, int, float})} values as NPY")
        return "<f8", "d"
    if types == {bool}:
        return "|b1", "?"
    if types - {bool, int}:
        raise NpyError(f"cannot write {_names(types - {bool, int})} values as NPY")
    low, high = min(flat), max(flat)
    if _INT64[0] <= low and high <= _INT64[1]:
        return "<i8", "q"
    if _UINT64[0] <= low and high <= _UINT64[1]:
        return "<u8", "Q"
    raise NpyError("cannot write integers beyond 64 bits as NPY")


def _names(types: set[type]) -> str:
    return ", ".join(sorted(t.__name__ for t in types))


def dumps(value: Any) -> bytes:
    """Encode nested lists (or anything with ``.tolist()``) as NPY 1.0 bytes, C order."""
    shape, flat = _shape_and_flat(value)
    descr, code = _dtype(flat)
    text = f"{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape!r}, }}"
    # Pad so the data starts on a 64-byte boundary, as numpy writes it. Version 1.0 always
    # suffices: a shape whose header passes 64 KiB would describe more data than exists.
    text += " " * (-(10 + len(text) + 1) % 64) + "\n"
    head = MAGIC + b"\x01\x00" + len(text).to_bytes(2, "little")
    try:
        data = struct.pack(f"<{len(flat)}{code}", *flat)
    except (struct.error, OverflowError) as exc:
        raise NpyError(f"cannot write the values as NPY: {exc}") from None
    return head + text.encode("latin-1") + data
