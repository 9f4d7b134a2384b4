"""The inference toolkit's handler convention, each variant on a real server."""

from __future__ import annotations

import json

import pytest

from tests.container.serving import serving

FULL_CHAIN_WITH_CONTEXT = """\
import json
import os


def model_fn(model_dir, context):
    with open(os.path.join(model_dir, "weights.json")) as fh:
        scale = json.load(fh)["scale"]
    return {"scale": scale, "model_dir": model_dir, "context_model_dir": context.model_dir}


def input_fn(body, content_type, context):
    return {"rows": json.loads(body), "content_type": content_type, "attributes": context.custom_attributes}


def predict_fn(data, model, context):
    data["scaled"] = [x * model["scale"] for x in data["rows"]]
    data["model_dir"] = model["model_dir"]
    data["context_model_dir"] = model["context_model_dir"]
    data["trace"] = context.get_request_header(0, "X-Trace-Id")
    return data


def output_fn(prediction, accept, context):
    prediction["accept"] = accept
    if prediction["attributes"]:
        context.response_custom_attributes = "seen=" + prediction["attributes"]
    return json.dumps(prediction), "application/vnd.test+json"
"""

TRANSFORM = """\
def model_fn(model_dir):
    return "M"


def transform_fn(model, body, content_type, accept):
    return f"{model}|{body.decode()}|{content_type}|{accept}"
"""

TRANSFORM_WITH_CONTEXT = """\
def transform_fn(model, body, content_type, accept, context):
    context.set_response_header(0, "X-Amzn-SageMaker-Custom-Attributes", f"length={len(body)}")
    return body.upper(), "text/x-upper"
"""

MODEL_WITH_PREDICT = """\
class Doubler:
    def predict(self, data):
        return [2 * x for x in data]


def model_fn(model_dir):
    return Doubler()
"""

CALLABLE_MODEL = """\
def model_fn(model_dir):
    return lambda data: {"count": len(data)}
"""

PREDICT_ONLY_WITH_OPTIONAL_CONTEXT = """\
def predict_fn(data, model, context=None):
    return {"model_is_none": model is None, "got_context": context is not None}
"""


@pytest.fixture(scope="module")
def full_chain(tmp_path_factory):
    with serving(
        tmp_path_factory.mktemp("full"),
        code={"inference.py": FULL_CHAIN_WITH_CONTEXT},
        model={"weights.json": '{"scale": 3}'},
    ) as srv:
        yield srv.wait_healthy()


def test_it_calls_every_handler_with_the_context(full_chain):
    resp = full_chain.invoke(
        "[1, 2]",
        content_type="application/json; charset=utf-8",
        X_Amzn_SageMaker_Custom_Attributes="a=1,b=2",
        X_Trace_Id="trace-7",
    )
    assert resp.status == 200
    assert resp.headers["content-type"] == "application/vnd.test+json"
    assert resp.headers["x-amzn-sagemaker-custom-attributes"] == "seen=a=1,b=2"
    body = resp.json()
    model_dir = str(full_chain.base / "model")
    assert body == {
        "rows": [1, 2],
        "content_type": "application/json",  # parameters dropped
        "attributes": "a=1,b=2",
        "scaled": [3, 6],
        "model_dir": model_dir,
        "context_model_dir": model_dir,
        "trace": "trace-7",
        "accept": "application/json",
    }


def test_it_sends_no_custom_attributes_unless_a_handler_sets_them(full_chain):
    resp = full_chain.invoke("[1]")
    assert resp.status == 200
    assert "x-amzn-sagemaker-custom-attributes" not in resp.headers


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, "application/json"),
        ("*/*", "application/json"),
        ("text/plain;q=0.5, application/json", "text/plain"),
        ("application/x-anything", "application/x-anything"),
    ],
)
def test_it_passes_the_first_accept_type_to_output_fn(full_chain, accept, expected):
    resp = full_chain.invoke("[1]", accept=accept)
    assert resp.json()["accept"] == expected


@pytest.fixture(scope="module")
def transform(tmp_path_factory):
    with serving(
        tmp_path_factory.mktemp("transform"),
        code={"transform.py": TRANSFORM},
        env={"SAGEMAKER_PROGRAM": "transform.py"},
    ) as srv:
        yield srv.wait_healthy()


def test_it_calls_transform_fn_with_the_model_and_the_request(transform):
    resp = transform.invoke("hello", content_type="text/plain; charset=utf-8")
    assert resp.status == 200
    assert resp.body == b"M|hello|text/plain|application/json"
    assert resp.headers["content-type"] == "application/json"


def test_it_answers_in_the_accept_type_when_transform_fn_returns_only_a_body(transform):
    resp = transform.invoke("x", content_type="application/x-whatever", accept="text/x-custom, */*")
    assert resp.status == 200
    assert resp.body == b"M|x|application/x-whatever|text/x-custom"
    assert resp.headers["content-type"] == "text/x-custom"


@pytest.fixture(scope="module")
def transform_with_context(tmp_path_factory):
    with serving(
        tmp_path_factory.mktemp("transform-context"),
        code={"transform_ctx.py": TRANSFORM_WITH_CONTEXT},
        env={"SAGEMAKER_PROGRAM": "transform_ctx"},  # without .py works too
    ) as srv:
        yield srv.wait_healthy()


def test_it_calls_transform_fn_with_the_context(transform_with_context):
    resp = transform_with_context.invoke("abc", content_type="text/plain")
    assert resp.status == 200
    assert resp.body == b"ABC"
    assert resp.headers["content-type"] == "text/x-upper"
    assert resp.headers["x-amzn-sagemaker-custom-attributes"] == "length=3"


def test_it_predicts_with_the_models_predict_method(tmp_path):
    with serving(tmp_path, code={"inference.py": MODEL_WITH_PREDICT}) as srv:
        srv.wait_healthy()
        assert srv.invoke("[1, 2.5]").json() == [2, 5.0]


def test_it_calls_a_callable_model(tmp_path):
    with serving(tmp_path, code={"inference.py": CALLABLE_MODEL}) as srv:
        srv.wait_healthy()
        assert srv.invoke(b"1,2\n3,4\n", content_type="text/csv").json() == {"count": 2}


def test_it_serves_a_predict_fn_without_model_fn_and_detects_an_optional_context(tmp_path):
    with serving(tmp_path, code={"inference.py": PREDICT_ONLY_WITH_OPTIONAL_CONTEXT}) as srv:
        srv.wait_healthy()
        assert srv.invoke(json.dumps([1])).json() == {"model_is_none": True, "got_context": True}
