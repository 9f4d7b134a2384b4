"""The user's inference module, resolved once per worker into one ``invoke`` call.

The convention is the SageMaker inference toolkit's; every function is optional:

- ``model_fn(model_dir)`` → the model (absent: the model is None)
- ``input_fn(body, content_type)`` → data (absent: JSON, CSV or NPY by Content-Type)
- ``predict_fn(data, model)`` → prediction (absent: ``model.predict(data)``, else ``model(data)``)
- ``output_fn(prediction, accept)`` → body or ``(body, content_type)`` (absent: JSON, CSV or
  NPY by Accept)
- ``transform_fn(model, body, content_type, accept)`` → body or ``(body, content_type)``,
  instead of the three above (mixing them is a load error).

Each may take one more positional argument, the request's ``Context``. Which functions
exist, which take a context and how the model predicts are all decided here at load time,
so a request runs a chain of plain calls and no inspection. Loading raises
``ImportModuleError`` (the module or its handlers are wrong) or ``ModelLoadError``
(``model_fn`` raised).
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from ..errors import ImportModuleError, ModelLoadError
from . import codecs
from .context import Context

DEFAULT_MODULE = "inference"
_MODULE_NAME = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
_THREE = ("input_fn", "predict_fn", "output_fn")
#: Each handler's arguments in the convention, without the optional trailing context.
PARAMS: dict[str, tuple[str, ...]] = {
    "model_fn": ("model_dir",),
    "input_fn": ("input_data", "content_type"),
    "predict_fn": ("data", "model"),
    "output_fn": ("prediction", "accept"),
    "transform_fn": ("model", "input_data", "content_type", "accept"),
}

#: (body, content_type, accept header, context or None) → (response body, response content type)
Invoke = Callable[[bytes, str, "str | None", "Context | None"], tuple[bytes, str]]
#: Every stage is called as stage(a, b, context): adapters drop the context for handlers without it.
Stage = Callable[[Any, Any, "Context | None"], Any]


@dataclass(frozen=True)
class Service:
    """What one worker serves once loaded."""

    model: Any
    invoke: Invoke
    #: Whether any handler takes a context (else the server does not build one per request).
    wants_context: bool
    module_name: str


def module_name(program: str) -> str:
    """``SAGEMAKER_PROGRAM`` (``inference.py`` or ``inference``) → the module to import."""
    name = program[:-3] if program.endswith(".py") else program
    if not _MODULE_NAME.fullmatch(name):
        raise ImportModuleError(
            f"SAGEMAKER_PROGRAM {program!r} is not a Python module name (such as inference.py)"
        )
    return name


def import_module(code_dir: Path, program: str) -> ModuleType:
    """Import the handlers' module from ``code_dir`` (which is on ``sys.path``)."""
    if not program and not (code_dir / f"{DEFAULT_MODULE}.py").is_file():
        raise ImportModuleError(
            f"no inference module: set SAGEMAKER_PROGRAM or put {DEFAULT_MODULE}.py in {code_dir}"
        )
    name = module_name(program or DEFAULT_MODULE)
    path = code_dir / f"{name}.py"
    try:
        if "." not in name and path.is_file():
            # Load the file itself, so a module named like one already imported (json.py)
            # is not silently replaced by the one in sys.modules.
            existing = sys.modules.get(name)
            if existing is not None and getattr(existing, "__file__", None) != str(path):
                raise ImportModuleError(
                    f"{path.name} has the name of the module {name!r} the server already uses: rename it"
                )
            spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            try:
                spec.loader.exec_module(module)
            except BaseException:
                sys.modules.pop(name, None)
                raise
            return module
        if importlib.util.find_spec(name.split(".")[0]) is None:
            raise ImportModuleError(f"no module {name!r} in {code_dir} (SAGEMAKER_PROGRAM={program!r})")
        return importlib.import_module(name)
    except ImportModuleError:
        raise
    except BaseException as exc:  # SystemExit at import time too: the worker must live on
        raise ImportModuleError(f"importing {name} failed: {type(exc).__name__}: {exc}") from exc


def takes_context(fn: Callable[..., Any], name: str, params: tuple[str, ...]) -> bool:
    """Whether ``fn`` takes the optional trailing context; raises if it fits neither form."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):  # some builtins have none: assume the plain form
        return False
    positional = [
        p
        for p in signature.parameters.values()
        if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]
    required = [p for p in positional if p.default is inspect.Parameter.empty]
    varargs = any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in signature.parameters.values())
    kw_required = [
        p.name
        for p in signature.parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY and p.default is inspect.Parameter.empty
    ]
    base = len(params)
    if kw_required or len(required) > base + 1 or (len(positional) < base and not varargs):
        forms = f"({', '.join(params)}) or ({', '.join((*params, 'context'))})"
        raise ImportModuleError(f"{name} must take {forms}; its signature is {name}{signature}")
    return varargs or len(positional) > base


def _stage(fn: Callable[..., Any], with_context: bool) -> Stage:
    if with_context:
        return fn
    return lambda a, b, _context: fn(a, b)


def _response(result: Any, accept: str, name: str) -> tuple[bytes, str]:
    """A user's body or (body, content_type) as bytes and a content type."""
    content_type = accept
    if isinstance(result, tuple) and len(result) == 2:
        result, content_type = result
        valid = isinstance(content_type, str) and content_type.isascii() and content_type.isprintable()
        if not valid or not content_type:
            raise TypeError(f"{name} returned the content type {content_type!r}: it must be ASCII text")
    if isinstance(result, bytes):
        return result, content_type
    if isinstance(result, str):
        return result.encode(), content_type
    if isinstance(result, (bytearray, memoryview)):
        return bytes(result), content_type
    raise TypeError(
        f"{name} returned {type(result).__name__}: return bytes or str, or a (body, content_type) tuple"
    )


def _default_input(body: bytes, content_type: str, _context: Context | None) -> Any:
    return codecs.decode(body, content_type)


def _default_predict(model: Any, module: str) -> Stage:
    predict = getattr(model, "predict", None)
    if callable(predict):
        return lambda data, _model, _context: predict(data)
    if callable(model):
        return lambda data, _model, _context: model(data)
    raise ImportModuleError(
        f"{module} defines no predict_fn or transform_fn, and the model from model_fn "
        f"({type(model).__name__}) has no predict() method and is not callable"
    )


def load_service(code_dir: Path, program: str, model_dir: Path, default_accept: str) -> Service:
    """Import the module, check its handlers, run ``model_fn`` and compile ``invoke``."""
    module = import_module(code_dir, program)
    name = module.__name__
    handlers: dict[str, Any] = {}
    for attr in ("model_fn", *_THREE, "transform_fn"):
        fn = getattr(module, attr, None)
        if fn is None:
            continue
        if not callable(fn):
            raise ImportModuleError(f"{name}.{attr} is a {type(fn).__name__}, not a function")
        handlers[attr] = fn
    if "transform_fn" in handlers and (mixed := [h for h in _THREE if h in handlers]):
        raise ImportModuleError(
            f"{name} defines transform_fn together with {', '.join(mixed)}: define transform_fn "
            f"alone, or input_fn/predict_fn/output_fn without it"
        )
    contexts = {attr: takes_context(fn, attr, PARAMS[attr]) for attr, fn in handlers.items()}

    model = None
    if "model_fn" in handlers:
        args: tuple[Any, ...] = (str(model_dir),)
        if contexts["model_fn"]:
            args += (Context(None, str(model_dir)),)
        try:
            model = handlers["model_fn"](*args)
        except BaseException as exc:  # a failing model_fn must not take the worker down
            raise ModelLoadError(f"{name}.model_fn failed: {type(exc).__name__}: {exc}") from exc

    if "transform_fn" in handlers:
        invoke = _transform_invoke(model, handlers["transform_fn"], contexts["transform_fn"], default_accept)
    else:
        invoke = _pipeline_invoke(model, handlers, contexts, name, default_accept)
    wants_context = any(with_context for attr, with_context in contexts.items() if attr != "model_fn")
    return Service(model=model, invoke=invoke, wants_context=wants_context, module_name=name)


def _transform_invoke(model: Any, fn: Callable[..., Any], with_context: bool, default_accept: str) -> Invoke:
    negotiate = codecs.Negotiator(default_accept, supported=None)

    if with_context:

        def invoke(body: bytes, content_type: str, accept: str | None, context: Context | None):
            chosen = negotiate(accept)
            return _response(fn(model, body, content_type, chosen, context), chosen, "transform_fn")

    else:

        def invoke(body: bytes, content_type: str, accept: str | None, context: Context | None):
            chosen = negotiate(accept)
            return _response(fn(model, body, content_type, chosen), chosen, "transform_fn")

    return invoke


def _pipeline_invoke(
    model: Any,
    handlers: dict[str, Callable[..., Any]],
    contexts: dict[str, bool],
    module: str,
    default_accept: str,
) -> Invoke:
    input_fn: Stage = _default_input
    if "input_fn" in handlers:
        input_fn = _stage(handlers["input_fn"], contexts["input_fn"])
    if "predict_fn" in handlers:
        predict_fn = _stage(handlers["predict_fn"], contexts["predict_fn"])
    else:
        predict_fn = _default_predict(model, module)

    if "output_fn" in handlers:
        negotiate = codecs.Negotiator(default_accept, supported=None)
        user_output = _stage(handlers["output_fn"], contexts["output_fn"])

        def invoke(body: bytes, content_type: str, accept: str | None, context: Context | None):
            chosen = negotiate(accept)
            prediction = predict_fn(input_fn(body, content_type, context), model, context)
            return _response(user_output(prediction, chosen, context), chosen, "output_fn")

    else:
        negotiate = codecs.Negotiator(default_accept, supported=tuple(codecs.ENCODERS))
        encoders = codecs.ENCODERS

        def invoke(body: bytes, content_type: str, accept: str | None, context: Context | None):
            chosen = negotiate(accept)  # before any work: a 406 should cost nothing
            prediction = predict_fn(input_fn(body, content_type, context), model, context)
            return encoders[chosen](prediction), chosen

    return invoke
