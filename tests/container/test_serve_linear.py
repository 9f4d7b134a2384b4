"""The linear example's inference.py, served in place from container/examples/linear."""

from __future__ import annotations

import json

import pytest

from tests.container.serving import npy_bytes, serving
from tests.container.support import EXAMPLES

MODEL = {"weights": [2.0, -1.0], "bias": 0.5, "features": 2}


def expected(rows):
    return [2.0 * a - 1.0 * b + 0.5 for a, b in rows]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    env = {"SAGEMAKER_SUBMIT_DIRECTORY": str(EXAMPLES / "linear"), "SAGEMAKER_PROGRAM": "inference.py"}
    base = tmp_path_factory.mktemp("linear")
    with serving(base, model={"model.json": json.dumps(MODEL)}, env=env) as srv:
        yield srv.wait_healthy()


def test_it_serves_the_example_in_place(server):
    assert not any((server.base / "code").iterdir())


def test_it_predicts_one_value_per_json_row(server):
    rows = [[1, 2], [3.5, -1], [0, 0]]
    resp = server.invoke(json.dumps(rows))
    assert resp.status == 200
    assert resp.json() == pytest.approx(expected(rows))


def test_it_predicts_a_single_row_and_sagemaker_instances(server):
    assert server.invoke("[1, 2]").json() == pytest.approx(expected([[1, 2]]))
    assert server.invoke('{"instances": [[2, 1]]}').json() == pytest.approx(expected([[2, 1]]))


def test_it_reads_and_writes_csv(server):
    resp = server.invoke(b"1,2\n3.5,-1\n", content_type="text/csv", accept="text/csv")
    assert resp.status == 200
    assert [float(line) for line in resp.body.decode().splitlines()] == pytest.approx(
        expected([[1, 2], [3.5, -1]])
    )


def test_it_reads_npy(server):
    body = npy_bytes("<f4", (2, 2), [1, 2, 3.5, -1], "<f")
    resp = server.invoke(body, content_type="application/x-npy")
    assert resp.json() == pytest.approx(expected([[1, 2], [3.5, -1]]))


@pytest.mark.parametrize(
    ("body", "message"),
    [("[[1, 2, 3]]", "row 0 must hold 2 numbers"), ('[[1, "x"]]', "not a number"), ("[]", "send a list")],
)
def test_it_answers_400_to_rows_it_cannot_use(server, body, message):
    resp = server.invoke(body)
    assert resp.status == 400
    assert message in resp.json()["error"]
