"""The pure-Python NPY reader and writer, in process (the server tests cover the wire)."""

from __future__ import annotations

import pytest

from anyjob_container.serve import npy
from tests.container.serving import npy_bytes, npy_file


class FakeArray:
    """Stands for a numpy array: the writer only relies on ``.tolist()``."""

    def __init__(self, value):
        self.value = value

    def tolist(self):
        return self.value


def test_it_reads_three_dimensions_in_c_order():
    body = npy_bytes("<i4", (2, 2, 2), list(range(8)), "<i")
    assert npy.loads(body) == [[[0, 1], [2, 3]], [[4, 5], [6, 7]]]


def test_it_reads_three_dimensions_in_fortran_order():
    # Fortran order stores a[i, j, k] at i + 2*j + 4*k.
    values = [None] * 8
    for i in range(2):
        for j in range(2):
            for k in range(2):
                values[i + 2 * j + 4 * k] = 100 * i + 10 * j + k
    body = npy_bytes("<i8", (2, 2, 2), values, "<q", fortran=True)
    assert npy.loads(body) == [[[0, 1], [10, 11]], [[100, 101], [110, 111]]]


@pytest.mark.parametrize(
    "value",
    [[[1.5, -2.0], [3.0, 4.25]], [1, 2, 3], [True, False], 7, 2.5, [], [[[1], [2]], [[3], [4]]], [2**63 + 1]],
)
def test_it_round_trips_plain_values(value):
    assert npy.loads(npy.dumps(value)) == value


def test_it_chooses_dtypes_as_numpy_does():
    assert b"'descr': '<i8'" in npy.dumps([1, 2])
    assert b"'descr': '<f8'" in npy.dumps([1, 2.5])
    assert b"'descr': '|b1'" in npy.dumps([True])
    assert b"'descr': '<u8'" in npy.dumps([2**64 - 1])
    assert b"'descr': '<f8'" in npy.dumps([])


def test_it_writes_anything_with_tolist():
    assert npy.dumps(FakeArray([[1, 2]])) == npy.dumps([[1, 2]])
    assert npy.dumps([FakeArray(1.5), FakeArray(2.5)]) == npy.dumps([1.5, 2.5])


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ([[1, 2], [3]], "ragged"),
        ([1, [2]], "ragged"),
        (["a"], "str"),
        ([1.0, "a"], "str"),
        ([2**64], "64 bits"),
        ({"a": 1}, "dict"),
    ],
)
def test_it_refuses_values_npy_cannot_hold(value, message):
    with pytest.raises(npy.NpyError, match=message):
        npy.dumps(value)


def test_it_refuses_shapes_that_would_build_millions_of_empty_lists():
    with pytest.raises(npy.NpyError, match="too many"):
        npy.loads(npy_bytes("<f8", (10**9, 0), [], "<d"))


def test_it_refuses_more_than_64_dimensions():
    with pytest.raises(npy.NpyError, match="dimensions"):
        npy.loads(npy_bytes("<f8", (1,) * 65, [1.0], "<d"))


def test_it_refuses_a_truncated_header():
    body = npy_file("{'descr': '<f8', 'fortran_order': False, 'shape': (1,), }", b"")
    with pytest.raises(npy.NpyError, match="truncated"):
        npy.loads(body[:40])
