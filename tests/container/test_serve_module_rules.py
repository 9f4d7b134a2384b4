"""How the handlers' module is found and checked, in process (load_service, no server).

test_serve_load.py shows that any of these failures reaches /ping as a 500.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from anyjob_container.errors import ImportModuleError, ModelLoadError
from anyjob_container.serve.handlers import load_service


@pytest.fixture(autouse=True)
def forget_imported_modules():
    """User modules imported by a test leave sys.modules afterwards."""
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        del sys.modules[name]


def load(code_dir: Path, files: dict[str, str], program: str = ""):
    code_dir.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (code_dir / name).write_text(text)
    return load_service(code_dir, program, code_dir / "model", "application/json")


def test_it_loads_inference_py_when_no_program_is_named(tmp_path):
    service = load(tmp_path, {"inference.py": "def predict_fn(data, model):\n    return data\n"})
    assert service.module_name == "inference"
    assert service.invoke(b"[1]", "application/json", None, None) == (b"[1]", "application/json")


def test_it_imports_a_package_named_by_the_program(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "pkg_rules").mkdir()
    (tmp_path / "pkg_rules" / "__init__.py").write_text("")
    service = load(
        tmp_path / "pkg_rules", {"serving.py": "def predict_fn(d, m):\n    return 7\n"}, "pkg_rules.serving"
    )
    assert service.invoke(b"[1]", "application/json", None, None) == (b"7", "application/json")


@pytest.mark.parametrize(
    ("files", "program", "error", "message"),
    [
        (
            {"inference.py": "def broken(:\n"},
            "",
            ImportModuleError,
            "importing inference failed: SyntaxError:",
        ),
        (
            {"inference.py": "import sys\nsys.exit(3)\n"},
            "",
            ImportModuleError,
            "importing inference failed: SystemExit: 3",
        ),
        ({"README.md": ""}, "", ImportModuleError, "no inference module: set SAGEMAKER_PROGRAM or put"),
        (
            {"json.py": ""},
            "json.py",
            ImportModuleError,
            "json.py has the name of the module 'json' the server already uses: rename it",
        ),
        (
            {"inference.py": ""},
            "../inference.py",
            ImportModuleError,
            "SAGEMAKER_PROGRAM '../inference.py' is not a Python module name",
        ),
        (
            {"inference.py": "def model_fn(model_dir):\n    return 42\n"},
            "",
            ImportModuleError,
            "inference defines no predict_fn or transform_fn, and the model from model_fn (int) "
            "has no predict() method and is not callable",
        ),
        (
            {"inference.py": "def predict_fn(data):\n    return data\n"},
            "",
            ImportModuleError,
            "predict_fn must take (data, model) or (data, model, context); its signature is predict_fn(data)",
        ),
        (
            {"inference.py": "predict_fn = 3\n"},
            "",
            ImportModuleError,
            "inference.predict_fn is a int, not a function",
        ),
        (
            {"inference.py": "def model_fn(model_dir):\n    raise KeyError('weights')\n"},
            "",
            ModelLoadError,
            "inference.model_fn failed: KeyError: 'weights'",
        ),
    ],
    ids=[
        "syntax error",
        "exit at import",
        "no module",
        "shadows a module",
        "not a module name",
        "nothing predicts",
        "wrong arity",
        "not callable",
        "model_fn raises",
    ],
)
def test_it_refuses_a_module_it_cannot_serve(tmp_path, files, program, error, message):
    with pytest.raises(error) as caught:
        load(tmp_path, files, program)
    assert str(caught.value).startswith(message), str(caught.value)


def test_it_keeps_the_cause_of_an_import_failure_for_the_log(tmp_path):
    with pytest.raises(ImportModuleError) as caught:
        load(tmp_path, {"inference.py": "raise LookupError('inner')\n"})
    assert isinstance(caught.value.__cause__, LookupError)
    assert "inference" not in sys.modules
