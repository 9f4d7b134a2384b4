"""AWS's Java regular expressions, matched in Python as Java matches them.

AWS service models (and so botocore's copy) write patterns in Java's syntax and apply them to
the whole value. Python's ``re`` lacks the Unicode categories they use (``\\p{L}``, ``\\p{Z}``,
``\\p{N}``); the ``regex`` package has them but, like ``re``, reads a few things differently
from Java, so a pattern is rewritten before it is compiled:

- ``.`` stops at every Java line terminator (``\\n``, ``\\r``, U+0085, U+2028, U+2029), not
  only at ``\\n``;
- ``\\d``, ``\\w``, ``\\s`` (and ``\\D``, ``\\W``, ``\\S``) and the POSIX classes (``\\p{Alnum}``,
  ``\\p{Print}``, ``\\p{ASCII}``, ...) are US-ASCII, as in Java without UNICODE_CHARACTER_CLASS;
- an escaped UTF-16 surrogate pair (``\\uD800\\uDC00``) is the one code point it encodes.

Compiled with VERSION1, whose character classes may nest as Java's do. ``$`` is left alone: it
differs from Java's only just before a final line terminator other than ``\\n``.
"""

from __future__ import annotations

import functools
import re
from typing import Any

import regex

# Java's predefined and POSIX classes, as ranges that fit inside a character class.
_ASCII_CLASSES = {
    "d": "0-9",
    "w": "a-zA-Z0-9_",
    "s": " \\t\\n\\x0B\\f\\r",
    "p{Lower}": "a-z",
    "p{Upper}": "A-Z",
    "p{ASCII}": "\\x00-\\x7F",
    "p{Alpha}": "a-zA-Z",
    "p{Digit}": "0-9",
    "p{Alnum}": "a-zA-Z0-9",
    "p{Punct}": "\\x21-\\x2F\\x3A-\\x40\\x5B-\\x60\\x7B-\\x7E",
    "p{Graph}": "\\x21-\\x7E",
    "p{Print}": "\\x20-\\x7E",
    "p{Blank}": " \\t",
    "p{Cntrl}": "\\x00-\\x1F\\x7F",
    "p{XDigit}": "0-9a-fA-F",
    "p{Space}": " \\t\\n\\x0B\\f\\r",
}
_DOT = "[^\\n\\r\\x85\\u2028\\u2029]"
_PIECE = re.compile(r"\\(?:[pP]\{\w+\}|u[0-9a-fA-F]{4}|.)|\[\^?|.", re.DOTALL)
_LOW_SURROGATE = re.compile(r"\\u[dD][c-fC-F][0-9a-fA-F]{2}")


@functools.cache
def compile_java_pattern(pattern: str) -> Any:
    """A compiled ``regex`` pattern; use ``.fullmatch()``, as Java's ``matches()`` does."""
    return regex.compile(java_to_regex(pattern), regex.VERSION1)


def java_to_regex(pattern: str) -> str:
    """The Java pattern, rewritten so that ``regex`` (VERSION1) matches what Java matches."""
    pieces = _PIECE.findall(pattern)
    out: list[str] = []
    depth = 0  # inside how many character classes
    i = 0
    while i < len(pieces):
        piece = pieces[i]
        i += 1
        if piece.startswith("\\") and len(piece) > 1:
            name = piece[1:]
            negated = name[0] in "DWSP"
            ascii_set = _ASCII_CLASSES.get(name[0].lower() + name[1:] if negated else name)
            if ascii_set is not None:
                out.append(f"[^{ascii_set}]" if negated else ascii_set if depth else f"[{ascii_set}]")
                continue
            if name[0] == "u" and len(name) == 5 and i < len(pieces):
                high = int(name[1:], 16)
                if 0xD800 <= high <= 0xDBFF and _LOW_SURROGATE.fullmatch(pieces[i]):
                    low = int(pieces[i][2:], 16)
                    out.append(f"\\U{0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00):08X}")
                    i += 1
                    continue
            out.append(piece)
        elif piece.startswith("["):
            depth += 1
            out.append(piece)
        elif piece == "]" and depth:
            depth -= 1
            out.append(piece)
        elif piece == "." and not depth:
            out.append(_DOT)
        else:
            out.append(piece)
    return "".join(out)
