"""The default input and output formats, end to end: JSON, CSV, NPY, and content negotiation.

One echo server (``predict_fn`` returns its input) serves the whole module; a second one
checks ``SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT``.
"""

from __future__ import annotations

import json

import pytest

from tests.container.serving import ServeProcess, npy_bytes, npy_file

ECHO = """\
def model_fn(model_dir):
    return None


def predict_fn(data, model):
    return data
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = ServeProcess(tmp_path_factory.mktemp("codecs"), code={"inference.py": ECHO}).start()
    try:
        yield srv.wait_healthy()
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def csv_default_server(tmp_path_factory):
    srv = ServeProcess(
        tmp_path_factory.mktemp("codecs-csv"),
        code={"inference.py": ECHO},
        env={"SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT": "text/csv"},
    ).start()
    try:
        yield srv.wait_healthy()
    finally:
        srv.stop()


# -- JSON ----------------------------------------------------------------------------------


def test_it_round_trips_json(server):
    data = {"instances": [[1, 2.5, -3], [4e-3, 0, 7]], "name": "é"}
    resp = server.invoke(json.dumps(data))
    assert resp.status == 200
    assert resp.headers["content-type"] == "application/json"
    assert resp.json() == data


def test_it_refuses_invalid_json_with_400(server):
    resp = server.invoke(b"[1, 2,")
    assert resp.status == 400
    message = resp.json()["error"]
    assert message.startswith("the body is not valid JSON")
    assert "\n" not in message


# -- CSV -----------------------------------------------------------------------------------


def test_it_parses_csv_numbers_into_rows(server):
    resp = server.invoke(b"1,2.5,-3\n4e2, 5 ,x\n\n6,,7\n", content_type="text/csv")
    assert resp.status == 200
    assert resp.json() == [[1, 2.5, -3], [400.0, 5, "x"], [6, None, 7]]
    assert [type(v) for v in resp.json()[0]] == [int, float, int]


def test_it_writes_csv(server):
    resp = server.invoke(json.dumps([[1, 2.5], [3, "a,b"]]), accept="text/csv")
    assert resp.status == 200
    assert resp.headers["content-type"] == "text/csv"
    assert resp.body == b'1,2.5\n3,"a,b"\n'


def test_it_writes_a_1d_prediction_as_one_value_per_line(server):
    assert server.invoke("[1.5, 2, 3]", accept="text/csv").body == b"1.5\n2\n3\n"


def test_it_round_trips_csv(server):
    body = b"1,2,3\n4.5,5.5,6.5\n"
    resp = server.invoke(body, content_type="text/csv", accept="text/csv")
    assert resp.status == 200
    assert resp.body == body


def test_it_refuses_an_empty_csv_body(server):
    resp = server.invoke(b"\n\n", content_type="text/csv")
    assert resp.status == 400
    assert "no rows" in resp.json()["error"]


# -- NPY -----------------------------------------------------------------------------------

NPY_CASES = {
    "float64 2-D": (npy_bytes("<f8", (2, 3), [1, 2, 3, 4, 5, 6.5], "<d"), [[1.0, 2.0, 3.0], [4.0, 5.0, 6.5]]),
    "big-endian int32": (npy_bytes(">i4", (2, 2), [1, -2, 3, -4], ">i"), [[1, -2], [3, -4]]),
    "fortran order": (
        npy_bytes("<u2", (2, 3), [1, 4, 2, 5, 3, 6], "<H", fortran=True),
        [[1, 2, 3], [4, 5, 6]],
    ),
    "bool 1-D": (npy_bytes("|b1", (3,), [True, False, True], "?"), [True, False, True]),
    "float32 0-D": (npy_bytes("<f4", (), [0.5], "<f"), 0.5),
    "uint8": (npy_bytes("|u1", (1, 2), [0, 255], "B"), [[0, 255]]),
    "int64 empty rows": (npy_bytes("<i8", (3, 0), [], "<q"), [[], [], []]),
    "version 2.0": (npy_bytes("<i2", (2,), [7, -7], "<h", version=(2, 0)), [7, -7]),
    "version 3.0": (npy_bytes("<f2", (2,), [1.5, -2.0], "<e", version=(3, 0)), [1.5, -2.0]),
}


@pytest.mark.parametrize("case", NPY_CASES)
def test_it_reads_npy_built_by_hand(server, case):
    body, expected = NPY_CASES[case]
    resp = server.invoke(body, content_type="application/x-npy")
    assert resp.status == 200, resp.body
    assert resp.json() == expected


def test_it_writes_npy_as_numpy_does(server):
    resp = server.invoke("[[1, 2], [3, 4]]", accept="application/x-npy")
    assert resp.status == 200
    assert resp.headers["content-type"] == "application/x-npy"
    assert resp.body == npy_bytes("<i8", (2, 2), [1, 2, 3, 4], "<q")
    assert len(resp.body) - 4 * 8 == 128  # the header is padded to a 64-byte boundary

    floats = server.invoke("[[1, 2.5]]", accept="application/x-npy")
    assert floats.body == npy_bytes("<f8", (1, 2), [1.0, 2.5], "<d")


def test_it_round_trips_npy(server):
    body = npy_bytes("<f8", (2, 2), [0.1, 0.2, 0.3, 0.4], "<d")
    resp = server.invoke(body, content_type="application/x-npy", accept="application/x-npy")
    assert resp.body == body


def test_it_refuses_pickled_npy_without_loading_it(server, tmp_path):
    proof = tmp_path / "pickle-ran"
    # A pickle that runs a shell command when loaded: np.load(allow_pickle=True) would run it.
    payload = f"cos\nsystem\n(S'touch {proof}'\ntR.".encode()
    body = npy_file("{'descr': '|O', 'fortran_order': False, 'shape': (1,), }", payload)
    resp = server.invoke(body, content_type="application/x-npy")
    assert resp.status == 400
    assert "pickle" in resp.json()["error"]
    assert not proof.exists()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"not an npy file", "magic"),
        (npy_bytes("<f8", (2, 2), [1, 2, 3], "<d"), "needs 32"),
        (npy_bytes("<U3", (1,), [], "<d"), "unsupported NPY dtype"),
        (npy_bytes([("a", "<f8")], (1,), [1], "<d"), "structured"),
        (npy_bytes("<f8", (1,), [1], "<d", version=(4, 0)), "version 4.0"),
        (npy_file("{'descr': '<f8', 'fortran_order': False, 'shape': __import__('os'), }", b""), "dict"),
        (npy_file("{'descr': '<f8', 'shape': (1,), }", b"\0" * 8), "exactly"),
        (npy_bytes("<f8", (-1,), [], "<d"), "non-negative"),
    ],
    ids=["bad magic", "short data", "string dtype", "structured", "version", "code", "keys", "shape"],
)
def test_it_refuses_bad_npy_with_400(server, body, message):
    resp = server.invoke(body, content_type="application/x-npy")
    assert resp.status == 400
    assert message in resp.json()["error"]


# -- negotiation -----------------------------------------------------------------------------


def test_it_tolerates_content_type_parameters(server):
    assert server.invoke("[1]", content_type="application/json; charset=utf-8").status == 200
    resp = server.invoke(b"1,2\n", content_type="Text/CSV; charset=UTF-8", accept="text/csv; charset=utf-8")
    assert (resp.status, resp.body) == (200, b"1,2\n")


def test_it_answers_415_to_an_unsupported_content_type(server):
    resp = server.invoke(b"<x/>", content_type="application/xml")
    assert resp.status == 415
    assert "application/xml" in resp.json()["error"]


def test_it_answers_415_without_a_content_type(server):
    assert server.invoke(b"[1]", content_type=None).status == 415


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, "application/json"),
        ("*/*", "application/json"),
        ("text/html, text/csv;q=0.9, application/json", "text/csv"),
        ("text/csv;q=0, application/json", "application/json"),
        ("application/*", "application/json"),
        ("text/*", "text/csv"),
        ("image/png, */*", "application/json"),
        ("APPLICATION/X-NPY", "application/x-npy"),
    ],
)
def test_it_negotiates_the_accept_header(server, accept, expected):
    resp = server.invoke("[[1, 2]]", accept=accept)
    assert resp.status == 200
    assert resp.headers["content-type"] == expected


def test_it_answers_406_to_an_unsupported_accept(server):
    resp = server.invoke("[1]", accept="image/png, text/html")
    assert resp.status == 406
    assert "image/png" in resp.json()["error"]


def test_it_uses_the_default_accept_from_the_environment(csv_default_server):
    for accept in (None, "*/*"):
        resp = csv_default_server.invoke("[[1, 2]]", accept=accept)
        assert (resp.status, resp.headers["content-type"], resp.body) == (200, "text/csv", b"1,2\n")
    assert csv_default_server.invoke("[1]", accept="application/json").json() == [1]
