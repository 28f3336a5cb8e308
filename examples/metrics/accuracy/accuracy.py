"""Accuracy as an `evaluate` metric script that loads from this folder, without the Hub.

    metric = evaluate.load("examples/metrics/accuracy")   # a local path, not a Hub name
    metric.compute(predictions=[0, 1, 1], references=[0, 1, 0])  # {"accuracy": 0.666...}

`evaluate.load("accuracy")` downloads the same metric from the Hub; this copy computes the
same number (the fraction of predictions equal to their reference, optionally weighted) so
the examples run offline.
"""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = "Fraction of predictions equal to their reference: (TP + TN) / (TP + TN + FP + FN)."
_INPUTS = """
Args:
    predictions (`list` of `int`): Predicted labels.
    references (`list` of `int`): Reference labels.
    normalize (`bool`, defaults to `True`): Return the fraction of correct predictions; `False` returns
        their (weighted) count.
    sample_weight (`list` of `float`, optional): Weight of each example.
Returns:
    accuracy (`float` or `int`): The fraction (or count) of correct predictions.
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _INPUTS)
class Accuracy(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_INPUTS,
            features=datasets.Features({"predictions": datasets.Value("int32"), "references": datasets.Value("int32")}),
        )

    def _compute(self, predictions, references, normalize: bool = True, sample_weight=None) -> dict:
        correct = np.asarray(predictions) == np.asarray(references)
        weights = np.ones(correct.shape, dtype=float) if sample_weight is None else np.asarray(sample_weight, dtype=float)
        total = float((correct * weights).sum())
        if normalize:
            return {"accuracy": total / float(weights.sum())}
        return {"accuracy": total}
