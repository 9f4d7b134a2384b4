"""Decisions made once at load time, in process: handler arity, negotiation, the context."""

from __future__ import annotations

import functools

import pytest

from anyjob_container.errors import ImportModuleError
from anyjob_container.serve.codecs import Negotiator, NotAcceptable
from anyjob_container.serve.context import Context
from anyjob_container.serve.handlers import PARAMS, takes_context

PREDICT = PARAMS["predict_fn"]


def plain(data, model):
    pass


def with_context(data, model, context):
    pass


def optional_context(data, model, context=None):
    pass


def varargs(*args):
    pass


def too_few(data):
    pass


def too_many(data, model, context, extra):
    pass


def keyword_only(data, model, *, flag):
    pass


class Predictor:
    def __call__(self, data, model, context):
        pass


@pytest.mark.parametrize(
    ("fn", "expected"),
    [
        (plain, False),
        (with_context, True),
        (optional_context, True),
        (varargs, True),
        (Predictor(), True),
        (functools.partial(too_many, extra=1), True),
        (lambda data, model: None, False),
    ],
)
def test_it_detects_the_trailing_context_by_arity(fn, expected):
    assert takes_context(fn, "predict_fn", PREDICT) is expected


@pytest.mark.parametrize("fn", [too_few, too_many, keyword_only])
def test_it_refuses_a_handler_that_fits_neither_form(fn):
    with pytest.raises(ImportModuleError, match=r"predict_fn must take \(data, model\) or"):
        takes_context(fn, "predict_fn", PREDICT)


def test_it_assumes_the_plain_form_for_builtins_without_a_signature():
    assert takes_context(max, "output_fn", PARAMS["output_fn"]) is False


def test_it_refuses_every_accept_when_the_default_is_unsupported():
    negotiate = Negotiator("application/jsonlines", supported=("application/json", "text/csv"))
    assert negotiate("text/csv") == "text/csv"
    with pytest.raises(NotAcceptable, match="SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT"):
        negotiate("*/*")
    with pytest.raises(NotAcceptable):
        negotiate(None)


def test_it_caches_negotiation_without_growing_forever():
    negotiate = Negotiator("application/json", supported=None)
    for i in range(Negotiator.MAX_CACHED + 10):
        assert negotiate(f"text/x-{i}") == f"text/x-{i}"
    assert len(negotiate._cache) <= Negotiator.MAX_CACHED


def test_it_exposes_request_headers_through_the_context():
    environ = {
        "HTTP_X_AMZN_SAGEMAKER_CUSTOM_ATTRIBUTES": "k=v",
        "HTTP_X_TRACE": "7",
        "CONTENT_TYPE": "text/csv",
        "CONTENT_LENGTH": "",
    }
    context = Context(environ, "/opt/ml/model")
    assert context.custom_attributes == "k=v"
    assert context.request_headers == {
        "x-amzn-sagemaker-custom-attributes": "k=v",
        "x-trace": "7",
        "content-type": "text/csv",
    }
    assert context.get_request_header(0, "X-Trace") == "7"
    assert context.system_properties == {"model_dir": "/opt/ml/model", "gpu_id": None}


def test_it_sets_response_headers_through_the_context():
    context = Context(None, "/m")
    assert context.custom_attributes is None
    context.set_response_header(0, "x-amzn-sagemaker-custom-attributes", "a=1")
    assert context.response_custom_attributes == "a=1"
    context.response_custom_attributes = "b=2"
    assert context.response_headers == {"X-Amzn-SageMaker-Custom-Attributes": "b=2"}
    context.response_custom_attributes = None
    assert context.response_headers == {}
    for name, value in (("Content-Length", "1"), ("Bad Name", "x"), ("X-Ok", "a\nb"), ("X-Ok", "ünï€")):
        with pytest.raises(ValueError):
            context.set_response_header(0, name, value)
