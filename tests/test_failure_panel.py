"""The failure panel puts the exception's own line first, then the rest with its line breaks."""

from __future__ import annotations

import pytest

from jobs.detail import failure_cause
from jobs.models import TrainingJob

pytestmark = pytest.mark.django_db

STACK = "".join(
    f'  File "/opt/ml/code/lib{i}.py", line {i}, in step{i}\n    step{i + 1}(data)\n' for i in range(12)
)
REASON = (
    "AlgorithmError: ExecuteUserScriptError:\nExitCode 1\n"
    'Command "/usr/bin/python3 train.py --epochs 5"\nErrorMessage:\n'
    "Traceback (most recent call last):\n" + STACK + "ValueError: learning rate must be positive, got -0.1"
)


def test_the_cause_comes_first_and_the_stack_keeps_its_lines(client, alice):
    assert len(REASON.split("ValueError")[0]) > 800  # the cause is far down the text
    TrainingJob.objects.create(
        owner=alice, name="failed-0001", entry_point="train.py", status="Failed", failure_reason=REASON
    )
    client.force_login(alice)
    body = client.get("/jobs/failed-0001/").content.decode()
    panel = body[body.index('id="failure"') :]
    cause = '<p id="failure-cause"><strong>ValueError: learning rate must be positive, got -0.1</strong></p>'
    assert cause in panel
    assert panel.index(cause) < panel.index("ExecuteUserScriptError") < panel.index("lib0.py")
    pre = panel[panel.index('<pre id="failure-reason">') : panel.index("</pre>")]
    assert "ExitCode 1\nCommand" in pre and "in step0\n    step1(data)\n  File" in pre
    assert "ValueError" not in pre  # shown once, first


@pytest.mark.parametrize(
    ("reason", "cause", "rest"),
    [
        # AWS's training toolkit quotes the script's message
        (
            'AlgorithmError: ExecuteUserScriptError:\nExitCode 1\nErrorMessage "Traceback (most recent call '
            'last):\n  File "train.py", line 3\nKeyError: \'lr\'\n"\nCommand "/usr/bin/python3 train.py"',
            "KeyError: 'lr'",
            "AlgorithmError: ExecuteUserScriptError:\nExitCode 1\n"
            'ErrorMessage "Traceback (most recent call last):\n'
            '  File "train.py", line 3\n"\nCommand "/usr/bin/python3 train.py"',
        ),
        # one line: it is the cause
        (
            "OutOfMemoryError: Please use an instance type with more memory",
            "OutOfMemoryError: Please use an instance type with more memory",
            "",
        ),
        # a chained exception: the one raised last
        (
            "Traceback:\nOSError: disk\n\nDuring handling of the above exception, "
            "another exception occurred:\n\nTraceback:\nRuntimeError: could not save",
            "RuntimeError: could not save",
            "Traceback:\nOSError: disk\n\nDuring handling of the above exception, "
            "another exception occurred:\n\nTraceback:",
        ),
        # a dotted exception name
        (
            "AlgorithmError: ExecuteUserScriptError:\ntorch.cuda.OutOfMemoryError: CUDA out of memory",
            "torch.cuda.OutOfMemoryError: CUDA out of memory",
            "AlgorithmError: ExecuteUserScriptError:",
        ),
        # nothing names an exception: the first line
        ("AlgorithmError: Exit Code: 137", "AlgorithmError: Exit Code: 137", ""),
        (
            "ClientError: could not upload the training artifacts: disk full\nmore",
            "ClientError: could not upload the training artifacts: disk full",
            "more",
        ),
        ("", "", ""),
    ],
)
def test_the_cause_line(reason, cause, rest):
    assert failure_cause(reason) == (cause, rest)
