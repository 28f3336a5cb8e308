"""F1 score as an `evaluate` metric script that loads from this folder, without the Hub.

    metric = evaluate.load("examples/metrics/f1")   # a local path, not a Hub name
    metric.compute(predictions=[0, 1, 1], references=[0, 1, 0])  # {"f1": 0.666...}
    metric.compute(predictions=[0, 2, 1], references=[0, 1, 1], average="macro")

`evaluate.load("f1")` downloads a script computing the same numbers with scikit-learn; this copy
computes them with numpy (scikit-learn's definitions, zero where a ratio is undefined) so the
examples run offline with no extra dependency.
"""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = "Harmonic mean of precision and recall: F1 = 2 * TP / (2 * TP + FP + FN)."
_INPUTS = """
Args:
    predictions (`list` of `int`): Predicted labels.
    references (`list` of `int`): Reference labels.
    labels (`list` of `int`, optional): The labels to score with `average` other than `"binary"`, in
        this order for `average=None`. Defaults to every label in `predictions` and `references`, sorted.
    pos_label (`int`, defaults to 1): The label scored with `average="binary"`.
    average (`str` or `None`, defaults to `"binary"`): How the per-label scores combine:
        - `"binary"`: the score of `pos_label`; for at most two distinct labels.
        - `"micro"`: from the true positives, false positives and false negatives summed over labels.
        - `"macro"`: the unweighted mean of the per-label scores.
        - `"weighted"`: their mean weighted by each label's number of references.
        - `None`: the per-label scores.
    sample_weight (`list` of `float`, optional): Weight of each example.
Returns:
    f1 (`float`, or a `numpy.ndarray` for `average=None`): The score(s), between 0 and 1.
"""

AVERAGES = ("binary", "micro", "macro", "weighted", None)


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _INPUTS)
class F1(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_INPUTS,
            features=datasets.Features({"predictions": datasets.Value("int32"), "references": datasets.Value("int32")}),
        )

    def _compute(self, predictions, references, labels=None, pos_label=1, average="binary", sample_weight=None) -> dict:
        predictions, references = np.asarray(predictions), np.asarray(references)
        weights = np.ones(len(references)) if sample_weight is None else np.asarray(sample_weight, dtype=float)
        scored = _scored_labels(np.union1d(predictions, references), labels, pos_label, average)
        # One column per scored label: weighted true positives, predictions and references.
        predicted = (predictions[:, None] == scored[None, :]) * weights[:, None]
        actual = (references[:, None] == scored[None, :]) * weights[:, None]
        true_positives = (predicted * (predictions == references)[:, None]).sum(axis=0)
        predicted, actual = predicted.sum(axis=0), actual.sum(axis=0)
        if average == "micro":
            return {"f1": _ratio(2 * true_positives.sum(), predicted.sum() + actual.sum())}
        per_label = np.array([_ratio(2 * tp, p + a) for tp, p, a in zip(true_positives, predicted, actual)])
        if average is None:
            return {"f1": per_label}
        if average == "weighted":
            return {"f1": _ratio(float((per_label * actual).sum()), actual.sum())}
        return {"f1": float(per_label.mean()) if len(per_label) else 0.0}  # "binary" (one label) or "macro"


def _scored_labels(present: np.ndarray, labels, pos_label: int, average) -> np.ndarray:
    """The labels whose scores `average` combines, or a `ValueError` saying which setting fits the data."""
    if average not in AVERAGES:
        raise ValueError(f"average={average!r} is not one of {AVERAGES}.")
    if average != "binary":
        return present if labels is None else np.asarray(labels)
    if len(present) > 2:
        raise ValueError(
            f"average='binary' scores two-class data, but the labels are {present.tolist()}: pass average='micro', "
            "'macro' or 'weighted' (or None for one score per label)."
        )
    if pos_label not in present and len(present) == 2:
        raise ValueError(f"pos_label={pos_label} is not one of the labels {present.tolist()}; pass one of them.")
    return np.asarray([pos_label])


def _ratio(numerator: float, denominator: float) -> float:
    # An undefined ratio (nothing predicted nor referenced) scores 0, as scikit-learn's default does.
    return float(numerator / denominator) if denominator > 0 else 0.0
