"""Errors the container reports in the failure file (training) or as HTTP errors (serving).

The failure file starts with the error's class name, so a person reading
``FailureReason`` knows at once whose fault it is and what to fix.
"""

from __future__ import annotations


class ContainerError(Exception):
    """A failure the container detected.

    ``str()`` is one line a user understands; ``details`` (optional, may be long) is the
    evidence behind it, such as the tail of pip's output.
    """

    def __init__(self, message: str, details: str = "") -> None:
        super().__init__(message)
        self.details = details

    def failure_text(self) -> str:
        """The failure file's text: class name, the one-line reason, then the details."""
        head = f"{type(self).__name__}: {self}"
        return f"{head}\n{self.details.rstrip()}" if self.details.strip() else head


class ConfigError(ContainerError):
    """A platform config file (``input/config/*.json``) or channel directory is unusable."""


class CodeFetchError(ContainerError):
    """The user's code could not be downloaded or unpacked."""


class InvalidEntryPointError(ContainerError):
    """``sagemaker_program`` is missing, forbidden or names no file in the code."""


class InstallRequirementsError(ContainerError):
    """``pip install -r requirements.txt`` failed."""


class ImportModuleError(ContainerError):
    """The serving module could not be imported or its handlers are inconsistent."""


class ExecuteUserScriptError(ContainerError):
    """The user's script exited with a non-zero code."""


class ModelLoadError(ContainerError):
    """The serving module's ``model_fn`` raised while loading the model."""
