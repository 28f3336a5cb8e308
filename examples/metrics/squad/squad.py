"""SQuAD exact match and F1 as an `evaluate` metric script that loads from this folder, without the Hub.

    metric = evaluate.load("examples/metrics/squad")   # a local path, not a Hub name
    metric.compute(
        predictions=[{"id": "q1", "prediction_text": "the Eiffel Tower"}],
        references=[{"id": "q1", "answers": {"text": ["Eiffel Tower"], "answer_start": [12]}}],
    )  # {"exact_match": 100.0, "f1": 100.0}

`evaluate.load("squad")` downloads a script with the same inputs and outputs; this copy computes
the same numbers as the official SQuAD evaluation so the examples run offline. Answers are
compared after normalisation (lower case, no punctuation, no articles "a", "an", "the", single
spaces), and each prediction scores its best match among the gold answers. A reference with no
gold answer (SQuAD v2's unanswerable questions) expects the empty prediction, as in SQuAD v2's
official evaluation.
"""

import collections
import re
import string

import datasets
import evaluate

_DESCRIPTION = (
    "Exact match and token F1 between predicted and gold answer texts, after SQuAD's answer normalisation, "
    "as percentages averaged over the questions."
)
_INPUTS = """
Args:
    predictions (`list` of `dict`): One per question, with
        - `id` (`str`): the question id;
        - `prediction_text` (`str`): the predicted answer, `""` for "no answer".
    references (`list` of `dict`): One per question, with
        - `id` (`str`): the question id;
        - `answers` (`dict`): `text` (`list` of `str`, the gold answers, empty when the question has
          no answer) and `answer_start` (`list` of `int`, their character offsets; not used in scoring).
Returns:
    exact_match (`float`): Percentage of questions whose normalised prediction equals a normalised gold answer.
    f1 (`float`): Mean over questions of the best token F1 against any gold answer, as a percentage.
"""

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD's normalisation: lower case, punctuation and articles removed, whitespace collapsed."""
    text = "".join(character for character in text.lower() if character not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match_score(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def f1_score(prediction: str, gold: str) -> float:
    """Harmonic mean of the precision and recall of the normalised tokens, counted as bags of words."""
    predicted_tokens, gold_tokens = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not predicted_tokens or not gold_tokens:
        # "No answer" only matches "no answer" (SQuAD v2's rule); otherwise the overlap is empty.
        return float(predicted_tokens == gold_tokens)
    shared = sum((collections.Counter(predicted_tokens) & collections.Counter(gold_tokens)).values())
    if shared == 0:
        return 0.0
    precision, recall = shared / len(predicted_tokens), shared / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _INPUTS)
class Squad(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_INPUTS,
            features=datasets.Features(
                {
                    "predictions": {"id": datasets.Value("string"), "prediction_text": datasets.Value("string")},
                    "references": {
                        "id": datasets.Value("string"),
                        "answers": datasets.Sequence(
                            {"text": datasets.Value("string"), "answer_start": datasets.Value("int32")}
                        ),
                    },
                }
            ),
        )

    def _compute(self, predictions, references) -> dict:
        predicted = {prediction["id"]: prediction["prediction_text"] for prediction in predictions}
        missing = [reference["id"] for reference in references if reference["id"] not in predicted]
        if missing:
            raise ValueError(
                f"No prediction for {len(missing)} of the {len(references)} questions (ids {missing[:5]}...): "
                "give one prediction per reference, with the same id."
            )
        exact, f1 = 0.0, 0.0
        for reference in references:
            # An unanswerable question's only gold answer is the empty one.
            golds = reference["answers"]["text"] or [""]
            prediction = predicted[reference["id"]]
            exact += max(exact_match_score(prediction, gold) for gold in golds)
            f1 += max(f1_score(prediction, gold) for gold in golds)
        count = max(len(references), 1)
        return {"exact_match": 100.0 * exact / count, "f1": 100.0 * f1 / count}
