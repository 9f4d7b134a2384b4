"""The launcher's supervision: a child that dies is started again, one that keeps dying is given up."""

from __future__ import annotations

import sys
from pathlib import Path

from webapp.run import Launcher


def test_it_restarts_a_child_that_dies_with_a_growing_pause(tmp_path: Path, capsys) -> None:
    # Dies the first two times, then stays up (it counts its starts in a file).
    script = (
        "import pathlib, sys, time\n"
        f"p = pathlib.Path({str(tmp_path / 'starts')!r})\n"
        "n = int(p.read_text()) + 1 if p.exists() else 1\n"
        "p.write_text(str(n))\n"
        "print('start', n, flush=True)\n"
        "sys.exit(3) if n < 3 else time.sleep(30)\n"
    )
    launcher = Launcher(first_delay=0.1)
    child = launcher.start("flaky", [sys.executable, "-c", script], cwd=tmp_path, env={})
    try:
        for _ in range(200):
            assert launcher.supervise() is None
            if (
                (tmp_path / "starts").exists()
                and (tmp_path / "starts").read_text() == "3"
                and child.running()
            ):
                break
            launcher.stopping.wait(0.05)
        out = capsys.readouterr().out
        assert "flaky exited unexpectedly with code 3; restarting it in 0.1 s" in out
        assert "flaky exited unexpectedly with code 3; restarting it in 0.2 s" in out
        assert out.count("starting flaky again") == 2
        assert child.running()
    finally:
        launcher.stop_all()


def test_it_gives_up_on_a_child_that_keeps_dying_and_names_it(tmp_path: Path, capsys) -> None:
    launcher = Launcher(restart_limit=3, first_delay=0.01, max_delay=0.01)
    launcher.start("steady", [sys.executable, "-c", "import time; time.sleep(30)"], cwd=tmp_path, env={})
    launcher.start("doomed", [sys.executable, "-c", "raise SystemExit(7)"], cwd=tmp_path, env={})
    try:
        assert launcher.run(poll=0.02) == 1
    finally:
        launcher.stop_all()
    out = capsys.readouterr().out
    assert "doomed keeps dying (3 times within 120 s, last exit code 7); giving up" in out
    assert "steady" not in out
    assert not any(child.running() for child in launcher.children)
