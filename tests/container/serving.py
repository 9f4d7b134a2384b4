"""Helpers for the serve tests: a real ``python -m anyjob_container serve`` on a free port.

``ServeProcess`` lays out a base directory (code, model files), starts the server on
127.0.0.1 with one worker unless told otherwise, and talks to it with ``http.client``.
The server's stdout and stderr go to ``<base>/serve.log`` (read with ``.log()``).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.container.support import container_env
from tests.servers import free_port, start, stop, wait_for_port


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class ServeProcess:
    base: Path
    code: dict[str, str] = field(default_factory=dict)
    model: dict[str, str | bytes] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    workers: int = 1
    port: int = 0
    proc: subprocess.Popen | None = None

    def start(self) -> ServeProcess:
        for folder, files in ((self.base / "code", self.code), (self.base / "model", self.model)):
            folder.mkdir(parents=True, exist_ok=True)
            for name, content in files.items():
                path = folder / name
                path.parent.mkdir(parents=True, exist_ok=True)
                if isinstance(content, bytes):
                    path.write_bytes(content)
                else:
                    path.write_text(content)
        self.port = free_port()
        env = container_env(
            self.base,
            {
                "ANYJOB_BIND_HOST": "127.0.0.1",
                "SAGEMAKER_BIND_TO_PORT": str(self.port),
                "SAGEMAKER_MODEL_SERVER_WORKERS": str(self.workers),
                **self.env,
            },
        )
        log = open(self.base / "serve.log", "wb")  # noqa: SIM115 - the child keeps it
        self.proc = start(
            [sys.executable, "-m", "anyjob_container", "serve"], env=env, stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        return self

    def wait_listening(self, timeout: float = 20.0) -> ServeProcess:
        wait_for_port(self.port, timeout, self.proc)
        return self

    def wait_ping(self, timeout: float = 20.0) -> Response:
        """Poll /ping until it answers something other than 503 (still loading)."""
        self.wait_listening(timeout)
        deadline = time.monotonic() + timeout
        while True:
            resp = self.request("GET", "/ping")
            if resp.status != 503 or time.monotonic() > deadline:
                return resp
            time.sleep(0.05)

    def wait_healthy(self, timeout: float = 20.0) -> ServeProcess:
        resp = self.wait_ping(timeout)
        assert resp.status == 200, f"/ping answered {resp.status} {resp.body!r}\n{self.log()}"
        return self

    def request(
        self,
        method: str,
        path: str,
        body: bytes | str | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = 10.0,
    ) -> Response:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return Response(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
        finally:
            conn.close()

    def invoke(
        self,
        body: bytes | str,
        content_type: str | None = "application/json",
        accept: str | None = None,
        **headers,
    ) -> Response:
        sent = {k.replace("_", "-"): v for k, v in headers.items()}
        if content_type is not None:
            sent["Content-Type"] = content_type
        if accept is not None:
            sent["Accept"] = accept
        return self.request("POST", "/invocations", body, sent)

    def log(self) -> str:
        path = self.base / "serve.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)


@contextlib.contextmanager
def serving(base: Path, **kwargs: Any) -> Iterator[ServeProcess]:
    """A started ``ServeProcess`` (see its fields for ``kwargs``), stopped on exit."""
    srv = ServeProcess(base, **kwargs).start()
    try:
        yield srv
    finally:
        srv.stop()


def npy_bytes(
    descr: object,
    shape: tuple[int, ...],
    values: list,
    fmt: str,
    fortran: bool = False,
    version: tuple[int, int] = (1, 0),
) -> bytes:
    """An NPY file built by hand, as numpy writes it: magic, version, header, raw data.

    ``values`` are in the file's order (C order unless ``fortran``); ``fmt`` is the
    ``struct`` format of one value including the byte order, such as ``"<d"``.
    """
    header = f"{{'descr': {descr!r}, 'fortran_order': {fortran}, 'shape': {shape!r}, }}"
    return npy_file(header, b"".join(struct.pack(fmt, v) for v in values), version)


def npy_file(header: str, data: bytes, version: tuple[int, int] = (1, 0)) -> bytes:
    """Magic, version, ``header`` padded to a 64-byte boundary as numpy does, then ``data``."""
    size_bytes = 2 if version[0] == 1 else 4
    header += " " * (-(6 + 2 + size_bytes + len(header) + 1) % 64) + "\n"
    encoded = header.encode("utf-8" if version[0] == 3 else "latin-1")
    return b"\x93NUMPY" + bytes(version) + len(encoded).to_bytes(size_bytes, "little") + encoded + data
