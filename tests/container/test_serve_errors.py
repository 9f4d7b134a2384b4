"""Errors in invocations map to HTTP statuses, and the server keeps serving after them."""

from __future__ import annotations

import http.client
import json
import socket

import pytest

from anyjob_container.serve.app import MAX_BODY
from tests.container.serving import serving

HANDLERS = """\
import os


class Teapot(Exception):
    status_code = 418


def predict_fn(data, model, context):
    action = data.get("do") if isinstance(data, dict) else None
    if action == "status":
        raise Teapot("short and stout")
    if action == "crash":
        raise RuntimeError("the model fell over\\nwith a second line")
    if action == "string status":
        error = ValueError("not an HTTP status")
        error.status_code = "418"
        raise error
    if action == "bad header":
        context.set_response_header(0, "X-Broken", "a\\r\\nInjected: yes")
    if action == "attributes":
        context.response_custom_attributes = "echo=" + str(context.custom_attributes)
    if action == "pid":
        return os.getpid()
    if action == "size":
        return len(data["payload"])
    return data
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with serving(tmp_path_factory.mktemp("errors"), code={"inference.py": HANDLERS}) as srv:
        yield srv.wait_healthy()


def _do(server, action: str, **headers):
    return server.invoke(json.dumps({"do": action}), **headers)


def test_it_answers_with_the_status_code_a_handler_error_carries(server):
    resp = _do(server, "status")
    assert resp.status == 418
    assert resp.headers["content-type"] == "application/json"
    assert resp.json() == {"error": "short and stout"}


def test_it_answers_500_with_one_line_and_no_traceback_then_keeps_serving(server):
    pid = _do(server, "pid").json()
    resp = _do(server, "crash")
    assert resp.status == 500
    assert resp.json() == {"error": "RuntimeError: the model fell over with a second line"}
    assert b"Traceback" not in resp.body
    assert "Traceback (most recent call last)" in server.log()
    assert 'raise RuntimeError("the model fell over' in server.log()

    assert _do(server, "pid").json() == pid  # the same worker answers on
    assert server.invoke("[1]").json() == [1]


def test_it_ignores_a_status_code_that_is_not_an_integer(server):
    resp = _do(server, "string status")
    assert resp.status == 500
    assert resp.json()["error"] == "not an HTTP status"


def test_it_refuses_a_response_header_with_a_line_break(server):
    resp = _do(server, "bad header")
    assert resp.status == 500
    assert "X-Broken" in resp.json()["error"]
    assert "injected" not in resp.headers


def test_it_gives_handlers_the_custom_attributes_and_returns_theirs(server):
    resp = _do(server, "attributes", X_Amzn_SageMaker_Custom_Attributes="trace=1")
    assert resp.status == 200
    assert resp.headers["x-amzn-sagemaker-custom-attributes"] == "echo=trace=1"
    assert _do(server, "attributes").headers["x-amzn-sagemaker-custom-attributes"] == "echo=None"


def test_it_answers_404_to_unknown_paths(server):
    for path in ("/", "/predict", "/ping/", "/invocations/x"):
        resp = server.request("GET", path)
        assert resp.status == 404, path
        assert "no such path" in resp.json()["error"]


def test_it_answers_405_to_wrong_methods(server):
    resp = server.request("GET", "/invocations")
    assert (resp.status, resp.headers["allow"]) == (405, "POST")
    resp = server.request("POST", "/ping", b"")
    assert (resp.status, resp.headers["allow"]) == (405, "GET, HEAD")


def test_it_answers_413_from_content_length_before_reading_the_body(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(
            b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {MAX_BODY + 1}\r\n\r\n".encode()
        )
        # No body sent: the answer must come from the header alone.
        resp = http.client.HTTPResponse(sock)
        resp.begin()
        assert resp.status == 413
        assert b"over the 6291456-byte limit" in resp.read()


def test_it_answers_413_to_a_chunked_body_over_the_limit(server):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    chunk = b"x" * 65536
    chunks = (chunk for _ in range(MAX_BODY // len(chunk) + 1))
    try:
        conn.request("POST", "/invocations", body=chunks, headers={"Content-Type": "application/json"})
        assert conn.getresponse().status == 413
    finally:
        conn.close()


def test_it_accepts_a_body_of_exactly_the_limit(server):
    prefix, suffix = b'{"do": "size", "payload": "', b'"}'
    body = prefix + b"x" * (MAX_BODY - len(prefix) - len(suffix)) + suffix
    assert len(body) == MAX_BODY
    resp = server.invoke(body)
    assert resp.status == 200
    assert resp.json() == MAX_BODY - len(prefix) - len(suffix)
