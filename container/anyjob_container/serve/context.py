"""The ``context`` a handler receives when it takes one more argument than the convention.

It carries what the inference toolkit's context carries that a generic container can:
the request's headers (notably ``X-Amzn-SageMaker-Custom-Attributes``), a way to set
response headers (notably the same custom-attributes header), and where the model is.
"""

from __future__ import annotations

import re
from typing import Any

CUSTOM_ATTRIBUTES = "X-Amzn-SageMaker-Custom-Attributes"
_CUSTOM_ATTRIBUTES_KEY = "HTTP_X_AMZN_SAGEMAKER_CUSTOM_ATTRIBUTES"
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_FORBIDDEN = frozenset({"content-type", "content-length", "connection", "transfer-encoding"})


class Context:
    """One request as the handlers see it (``model_fn`` gets one without a request).

    - ``custom_attributes``: the request's ``X-Amzn-SageMaker-Custom-Attributes`` or None.
    - ``request_headers``: every request header, names in lower case.
    - ``response_custom_attributes``: set it to send ``X-Amzn-SageMaker-Custom-Attributes``.
    - ``get_request_header(idx, name)`` / ``set_response_header(idx, name, value)``: the
      inference toolkit's spelling (``idx`` is the batch index: always 0 here).
    - ``model_dir`` and ``system_properties`` (``{"model_dir": ..., "gpu_id": None}``).
    """

    __slots__ = ("_environ", "_request_headers", "model_dir", "response_headers")

    def __init__(self, environ: dict[str, Any] | None, model_dir: str) -> None:
        self._environ = environ or {}
        self._request_headers: dict[str, str] | None = None
        self.model_dir = model_dir
        #: Headers a handler added to the response, in the order set.
        self.response_headers: dict[str, str] = {}

    @property
    def system_properties(self) -> dict[str, Any]:
        return {"model_dir": self.model_dir, "gpu_id": None}

    @property
    def custom_attributes(self) -> str | None:
        return self._environ.get(_CUSTOM_ATTRIBUTES_KEY)

    @property
    def request_headers(self) -> dict[str, str]:
        if self._request_headers is None:
            headers = {}
            for key, value in self._environ.items():
                if key.startswith("HTTP_"):
                    headers[key[5:].replace("_", "-").lower()] = value
                elif key in ("CONTENT_TYPE", "CONTENT_LENGTH") and value:
                    headers[key.replace("_", "-").lower()] = value
            self._request_headers = headers
        return self._request_headers

    def get_request_header(self, idx: int, name: str) -> str | None:
        return self.request_headers.get(name.lower())

    def set_response_header(self, idx: int, name: str, value: str) -> None:
        """Add a header to the response; raises ValueError for names or values HTTP forbids."""
        if not _TOKEN.fullmatch(name) or name.lower() in _FORBIDDEN:
            raise ValueError(f"cannot set the response header {name!r}")
        value = str(value)
        if any((ord(c) < 32 and c != "\t") or ord(c) == 127 or ord(c) > 255 for c in value):
            raise ValueError(f"the value of response header {name!r} must be printable Latin-1 text")
        if name.lower() == CUSTOM_ATTRIBUTES.lower():
            name = CUSTOM_ATTRIBUTES
        for existing in list(self.response_headers):
            if existing.lower() == name.lower():
                del self.response_headers[existing]
        self.response_headers[name] = value

    @property
    def response_custom_attributes(self) -> str | None:
        return self.response_headers.get(CUSTOM_ATTRIBUTES)

    @response_custom_attributes.setter
    def response_custom_attributes(self, value: str | None) -> None:
        if value is None:
            self.response_headers.pop(CUSTOM_ATTRIBUTES, None)
        else:
            self.set_response_header(0, CUSTOM_ATTRIBUTES, value)
