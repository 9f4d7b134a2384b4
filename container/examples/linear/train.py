"""A linear regression trained by gradient descent, with nothing but the standard library.

Reads every CSV file in the ``train`` channel (last column = target, no header), trains,
and saves ``model.json`` to ``SM_MODEL_DIR``. Hyperparameters: ``--epochs``,
``--learning-rate``, ``--l2``. It prints ``epoch=N loss=X`` lines (a metric regex can pick
them up) and, when the job is stopped, saves the model it has so far before exiting.
"""

import argparse
import csv
import json
import math
import os
import signal
import sys
from pathlib import Path

stop_requested = False


def on_sigterm(signum, frame):
    global stop_requested
    stop_requested = True
    print("SIGTERM received: saving the model trained so far", flush=True)


def load_rows(channel: Path) -> list[list[float]]:
    rows = []
    for path in sorted(channel.rglob("*.csv")):
        with open(path, newline="") as fh:
            rows += [[float(v) for v in row] for row in csv.reader(fh) if row]
    if not rows:
        sys.exit(f"no CSV rows found in {channel}")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--learning-rate", type=float, default=0.1)
    parser.add_argument("--l2", type=float, default=0.0)
    parser.add_argument("--train", default=os.environ.get("SM_CHANNEL_TRAIN", "data"))
    parser.add_argument("--model-dir", default=os.environ.get("SM_MODEL_DIR", "model"))
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, on_sigterm)

    rows = load_rows(Path(args.train))
    n_features = len(rows[0]) - 1
    xs = [r[:n_features] for r in rows]
    ys = [r[n_features] for r in rows]
    # Standardise features so one learning rate suits every column.
    means = [sum(col) / len(col) for col in zip(*xs, strict=True)]
    stds = [
        math.sqrt(sum((v - m) ** 2 for v in col) / len(col)) or 1.0
        for col, m in zip(zip(*xs, strict=True), means, strict=True)
    ]
    zs = [[(v - m) / s for v, m, s in zip(x, means, stds, strict=True)] for x in xs]

    w = [0.0] * n_features
    b = 0.0
    n = len(rows)
    for epoch in range(1, args.epochs + 1):
        grad_w = [0.0] * n_features
        grad_b = 0.0
        loss = 0.0
        for z, y in zip(zs, ys, strict=True):
            err = sum(wi * zi for wi, zi in zip(w, z, strict=True)) + b - y
            loss += err * err
            for i, zi in enumerate(z):
                grad_w[i] += err * zi
            grad_b += err
        w = [wi - args.learning_rate * (g / n + args.l2 * wi) for wi, g in zip(w, grad_w, strict=True)]
        b -= args.learning_rate * grad_b / n
        print(f"epoch={epoch} loss={loss / n:.6f}", flush=True)
        if stop_requested:
            break

    # Undo the standardisation: y = sum(w_i * (x_i - m_i) / s_i) + b.
    weights = [wi / s for wi, s in zip(w, stds, strict=True)]
    bias = b - sum(wi * m / s for wi, m, s in zip(w, means, stds, strict=True))
    model_dir = Path(args.model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "model.json").write_text(
        json.dumps({"weights": weights, "bias": bias, "features": n_features})
    )
    print(f"saved model.json to {model_dir} (weights={weights}, bias={bias:.4f})", flush=True)


if __name__ == "__main__":
    main()
