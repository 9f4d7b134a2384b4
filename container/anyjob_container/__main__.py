"""``python -m anyjob_container train|serve``: the image's entry point.

SageMaker starts the image as ``docker run IMAGE train`` or ``docker run IMAGE serve``;
the Dockerfile's exec-form ENTRYPOINT puts that word here. Each mode imports only what it
needs, so ``train`` starts fast.
"""

from __future__ import annotations

import sys

USAGE = "usage: python -m anyjob_container {train|serve}"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    mode = args[0] if args else ""
    if mode == "train":
        from .train import main as run
    elif mode == "serve":
        from .serve import main as run
    else:
        print(f"{USAGE}\nunknown mode {mode!r}" if mode else USAGE, file=sys.stderr)
        return 2
    return run()


if __name__ == "__main__":
    sys.exit(main())
