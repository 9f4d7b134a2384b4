"""``train``: run the user's entry point under SageMaker's training contract.

1. read ``input/config/*.json`` and check every channel's directory is there;
2. fetch the code named by ``sagemaker_submit_directory`` into ``code/`` (unless ``code/``
   already holds code) and install its ``requirements.txt``;
3. run the entry point by its type with ``--key value`` arguments and the ``SM_*``
   environment, streaming its output as the job log;
4. write ``output/success``, or ``output/failure`` (≤ 1024 characters with the
   ``AlgorithmError: `` prefix the service adds) plus the full text in
   ``output/data/failure``, and exit 0 or 1.
"""

from __future__ import annotations

import logging
import shlex
import signal
import sys
import traceback
from pathlib import Path

from .code import fetch_code
from .environment import TrainingEnv, to_cmd_args
from .errors import CodeFetchError, ContainerError, InvalidEntryPointError
from .paths import Layout
from .process import Foreground, Stopped
from .requirements import install_requirements, python_path_env

log = logging.getLogger("anyjob")

#: SageMaker keeps the first 1024 characters of ``"AlgorithmError: " + failure file``.
FAILURE_REASON_LIMIT = 1024 - len("AlgorithmError: ")


def shorten_middle(text: str, limit: int = FAILURE_REASON_LIMIT, head_lines: int = 3) -> str:
    """Fit ``text`` into ``limit`` characters, keeping its header and its last lines.

    The header (error name, exit code, command) says what failed; the end of a traceback
    says why. What goes is the middle, replaced by a marker that says how much was cut.
    """
    if len(text) <= limit:
        return text
    header = "\n".join(text.split("\n")[:head_lines])
    header = header[: limit // 3]
    rest = text[len(header) :]
    marker = "\n[... {} characters cut ...]\n"
    # The count printed is never longer than len(text), so this reserves enough room.
    tail_len = limit - len(header) - len(marker.format(len(text)))
    tail = rest[-tail_len:]
    # Start the tail at a line boundary when that costs little.
    newline = tail.find("\n")
    if 0 <= newline < min(200, len(tail) - 1):
        tail = tail[newline + 1 :]
    return header + marker.format(len(text) - len(header) - len(tail)) + tail


def script_command(env: TrainingEnv, code_dir: Path, args: list[str]) -> list[str]:
    """The command for the entry point, by its type (as the official toolkit does)."""
    entry = env.user_entry_point
    path = code_dir / entry
    if not path.is_file():
        raise InvalidEntryPointError(f"entry point {entry!r} does not exist in the code")
    if entry.endswith(".sh") or not entry.endswith(".py"):
        path.chmod(path.stat().st_mode | 0o111)
        return ["/bin/sh", "-c", shlex.join([f"./{entry}", *args])]
    if (code_dir / "setup.py").is_file():
        module = entry[:-3].replace("/", ".")
        return [sys.executable, "-m", module, *args]
    return [sys.executable, entry, *args]


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"{code} (killed by {signal.Signals(-code).name})"
        except ValueError:
            return str(code)
    return str(code)


def script_failure(code: int, cmd: list[str], stderr_tail: bytes) -> str:
    text = stderr_tail.decode("utf-8", "replace").rstrip()
    lines = [
        "ExecuteUserScriptError:",
        f"ExitCode {describe_exit(code)}",
        f'Command "{shlex.join(cmd)}"',
    ]
    lines.append(f"ErrorMessage:\n{text}" if text else 'ErrorMessage ""')
    return "\n".join(lines)


class Trainer:
    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.fg = Foreground()

    def prepare_output(self) -> None:
        lay = self.layout
        for path in (lay.model_dir, lay.output_data_dir, lay.output_intermediate_dir, lay.code_dir):
            path.mkdir(parents=True, exist_ok=True)
        # A fresh job starts without verdicts from an earlier run in the same folder.
        for stale in (lay.success_file, lay.failure_file):
            stale.unlink(missing_ok=True)

    def write_failure(self, text: str) -> None:
        """Write the short and the full failure text; never overwrite the script's own file."""
        lay = self.layout
        lay.output_data_dir.mkdir(parents=True, exist_ok=True)
        if not lay.full_failure_file.exists():
            lay.full_failure_file.write_text(text, encoding="utf-8")
        if lay.failure_file.exists():
            log.info("the script wrote %s itself: keeping it", lay.failure_file)
            return
        lay.failure_file.write_text(shorten_middle(text), encoding="utf-8")

    def run(self) -> int:
        self.prepare_output()
        env = TrainingEnv.read(self.layout)
        logging.getLogger().setLevel(env.log_level)
        env.check_channels()
        env.user_entry_point  # noqa: B018 - validates the name before any download
        if env.submit_directory:
            fetch_code(self.layout.resolve(env.code_source), self.layout.code_dir, region=env.region)
        elif not any(self.layout.code_dir.iterdir()):
            raise CodeFetchError("no code: sagemaker_submit_directory is not set and code/ is empty")
        args = to_cmd_args(env.hyperparameters)
        cmd = script_command(env, self.layout.code_dir, args)
        script_env = python_path_env(env.script_environment(args))

        def pip_runner(cmd: list[str], cwd: Path, penv: dict[str, str]) -> tuple[int, str]:
            code, tail = self.fg.run(cmd, cwd, penv)
            return code, tail.decode("utf-8", "replace")

        install_requirements(self.layout.code_dir, script_env, run=pip_runner)
        print(f"anyjob: running {shlex.join(cmd)}", flush=True)
        code, stderr_tail = self.fg.run(cmd, self.layout.code_dir, script_env)
        if code == 0:
            self.layout.success_file.touch()
            print("anyjob: training finished successfully", flush=True)
            return 0
        self.write_failure(script_failure(code, cmd, stderr_tail))
        print(f"anyjob: the script exited with code {describe_exit(code)}", file=sys.stderr, flush=True)
        return 1


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="anyjob: %(message)s", stream=sys.stdout)
    layout = Layout.from_env()
    trainer = Trainer(layout)
    with trainer.fg.handling_sigterm():
        try:
            return trainer.run()
        except Stopped:
            print("anyjob: stopped (SIGTERM) before the user script started", file=sys.stderr, flush=True)
            return 1
        except ContainerError as exc:
            text = exc.failure_text()
            print(f"anyjob: {text}", file=sys.stderr, flush=True)
            trainer.write_failure(text)
            return 1
        except Exception as exc:  # a bug of ours: still leave a failure file behind
            text = f"ContainerError: internal error in anyjob's container: {exc!r}\n{traceback.format_exc()}"
            print(text, file=sys.stderr, flush=True)
            trainer.write_failure(text)
            return 1
