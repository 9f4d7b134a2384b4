"""A job's output is read in bounded pieces: a line without end cannot grow anyjob's memory."""

from __future__ import annotations

import io

from jobs.backends.local.logs import MAX_LINE, bounded_lines


class CountingStream(io.BytesIO):
    """Records the largest read anyjob asked for."""

    largest = 0

    def readline(self, size: int | None = -1) -> bytes:  # type: ignore[override]
        self.largest = max(self.largest, size if size and size > 0 else len(self.getvalue()))
        return super().readline(size)


def test_a_long_line_is_cut_and_its_rest_skipped_in_bounded_reads() -> None:
    stream = CountingStream(b"first\n" + b"x" * (5 * MAX_LINE + 7) + b"\nlast\n")
    lines = list(bounded_lines(stream))
    assert lines[0] == "first" and lines[-1] == "last"
    assert lines[1] == "x" * MAX_LINE + " [... line cut by anyjob ...]"
    assert len(lines) == 3, "the rest of the long line is dropped, not split into more lines"
    assert stream.largest == MAX_LINE + 1


def test_output_that_never_ends_a_line_still_comes_out_cut() -> None:
    lines = list(bounded_lines(io.BytesIO(b"y" * (3 * MAX_LINE))))
    assert lines == ["y" * MAX_LINE + " [... line cut by anyjob ...]"]


def test_short_lines_and_a_last_line_without_newline_are_kept_whole() -> None:
    assert list(bounded_lines(io.BytesIO(b"a\nb\n\nc"))) == ["a", "b", "", "c"]
    assert list(bounded_lines(io.BytesIO("é\n".encode() + b"\xff\n"))) == ["é", "\ufffd"]
