"""A script that fails on purpose: its traceback must reach the job's FailureReason."""

import os


def load_config(path: str) -> dict:
    with open(path) as fh:
        return {"text": fh.read()}


def main() -> None:
    print("starting a training run that is going to fail", flush=True)
    channel = os.environ.get("SM_CHANNEL_TRAIN", "/nonexistent")
    config = load_config(os.path.join(channel, "does-not-exist.cfg"))
    print(config)


if __name__ == "__main__":
    main()
