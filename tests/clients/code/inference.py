"""Serves what ``train.py`` saved: each number of each row times the model's scale."""

import json
import os


def model_fn(model_dir):
    with open(os.path.join(model_dir, "model.json")) as fh:
        return json.load(fh)


def predict_fn(data, model):
    rows = data if isinstance(data[0], list) else [data]
    return [[float(x) * model["scale"] for x in row] for row in rows]
