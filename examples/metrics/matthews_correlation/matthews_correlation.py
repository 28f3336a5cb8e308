"""Matthews correlation coefficient as an `evaluate` metric script that loads from this folder, offline.

    metric = evaluate.load("examples/metrics/matthews_correlation")   # a local path, not a Hub name
    metric.compute(predictions=[0, 1, 1, 0], references=[0, 1, 0, 0])  # {"matthews_correlation": 0.577...}

GLUE's CoLA score. `evaluate.load("matthews_correlation")` downloads a script computing the same
number with scikit-learn; this copy computes it with numpy, for any number of classes.
"""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = (
    "Correlation between predicted and reference labels, from -1 (always wrong) through 0 (no better than "
    "chance) to 1 (always right); the multi-class generalisation of (TP*TN - FP*FN) / sqrt(...)."
)
_INPUTS = """
Args:
    predictions (`list` of `int`): Predicted labels.
    references (`list` of `int`): Reference labels.
    sample_weight (`list` of `float`, optional): Weight of each example.
Returns:
    matthews_correlation (`float`): The coefficient, in [-1, 1]; 0 when it is undefined (a single
        predicted or reference label).
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _INPUTS)
class MatthewsCorrelation(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_INPUTS,
            features=datasets.Features({"predictions": datasets.Value("int32"), "references": datasets.Value("int32")}),
        )

    def _compute(self, predictions, references, sample_weight=None) -> dict:
        predictions, references = np.asarray(predictions), np.asarray(references)
        weights = np.ones(len(references)) if sample_weight is None else np.asarray(sample_weight, dtype=float)
        labels, indices = np.unique(np.concatenate([references, predictions]), return_inverse=True)
        confusion = np.zeros((len(labels), len(labels)))
        np.add.at(confusion, (indices[: len(references)], indices[len(references) :]), weights)
        # Gorodkin's R_K statistic, from the confusion matrix's margins and trace.
        actual, predicted = confusion.sum(axis=1), confusion.sum(axis=0)
        total, correct = confusion.sum(), np.trace(confusion)
        covariance = correct * total - actual @ predicted
        spread = (total**2 - predicted @ predicted) * (total**2 - actual @ actual)
        return {"matthews_correlation": float(covariance / np.sqrt(spread)) if spread > 0 else 0.0}
