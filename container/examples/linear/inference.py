"""Serve the model ``train.py`` saves: one prediction per input row, standard library only.

Send rows of features as JSON (``[[x1, x2], ...]``, a single row ``[x1, x2]``, or
``{"instances": [...]}``), CSV lines or an NPY array; the answer is one number per row in
the type ``Accept`` asks for (JSON by default). The container's default codecs do the
reading and writing: this module only loads the model and predicts.
"""

import json
import os
from numbers import Real


class BadInput(ValueError):
    """A request this model cannot answer; ``status_code`` makes the server reply 400."""

    status_code = 400


def model_fn(model_dir):
    with open(os.path.join(model_dir, "model.json")) as fh:
        model = json.load(fh)
    weights, bias = model["weights"], model["bias"]
    if len(weights) != model["features"]:
        raise ValueError(f"model.json has {len(weights)} weights for {model['features']} features")
    return {"weights": [float(w) for w in weights], "bias": float(bias)}


def _rows(data):
    if isinstance(data, dict):
        data = data.get("instances")
    if not isinstance(data, list) or not data:
        raise BadInput("send a list of rows of features, or one row")
    return data if isinstance(data[0], list) else [data]


def predict_fn(data, model):
    weights, bias = model["weights"], model["bias"]
    predictions = []
    for i, row in enumerate(_rows(data)):
        if not isinstance(row, list) or len(row) != len(weights):
            raise BadInput(f"row {i} must hold {len(weights)} numbers")
        if not all(isinstance(x, Real) and not isinstance(x, bool) for x in row):
            raise BadInput(f"row {i} holds something that is not a number")
        predictions.append(sum(w * x for w, x in zip(weights, row, strict=True)) + bias)
    return predictions
