"""From a question-answering model's start/end logits back to answer texts.

A long context is tokenized into several overlapping features (windows of `max_seq_length`
tokens, `doc_stride` tokens of overlap), so one question gets logits from each of its features.
`postprocess_qa_predictions` scores the spans of every feature, maps them back to characters of
the context through the features' offset mappings, and keeps the best span of the question over
all its features. With SQuAD v2 it may answer "no answer" (the empty text) instead.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

import numpy as np

__all__ = ["NULL_INDEX", "Candidate", "QAPredictions", "postprocess_qa_predictions", "null_score"]

# The token whose start and end logits score "no answer": the first one ([CLS] for BERT-style
# tokenizers); the training features point unanswerable questions at it.
NULL_INDEX = 0

Offsets = Sequence[Sequence[int] | None]


@dataclass(frozen=True)
class Candidate:
    """One possible answer of a question.

    Args:
        text: The answer, a slice of the context (`""` for "no answer").
        start_char: Where the answer starts in the context (-1 for "no answer").
        end_char: Where it ends, exclusive (-1 for "no answer").
        score: The start logit of its first token plus the end logit of its last token.
        probability: Softmax of `score` over the question's n-best list.
    """

    text: str
    start_char: int
    end_char: int
    score: float
    probability: float = 0.0

    @property
    def is_null(self) -> bool:
        return self.start_char < 0


@dataclass
class QAPredictions:
    """The answers of `postprocess_qa_predictions`.

    Args:
        answers: Question id -> predicted answer text (`""` for "no answer").
        nbest: Question id -> its best candidates, best first (the null one included under SQuAD v2).
    """

    answers: dict[str, str] = field(default_factory=dict)
    nbest: dict[str, list[Candidate]] = field(default_factory=dict)

    def for_metric(self) -> list[dict[str, str]]:
        """The predictions as SQuAD metrics take them: `[{"id": ..., "prediction_text": ...}]`."""
        return [{"id": question_id, "prediction_text": text} for question_id, text in self.answers.items()]


def null_score(start_logits: np.ndarray, end_logits: np.ndarray) -> float:
    """Score of "no answer" in one feature: the span that starts and ends on the null token."""
    return float(start_logits[NULL_INDEX] + end_logits[NULL_INDEX])


def feature_spans(
    context: str,
    offsets: Offsets,
    start_logits: np.ndarray,
    end_logits: np.ndarray,
    n_best_size: int,
    max_answer_length: int,
) -> list[Candidate]:
    """The valid spans among the `n_best_size` best starts and ends of one feature.

    A span is valid when both its tokens lie in the context (their offsets are not `None`), it
    does not end before it starts, and it has at most `max_answer_length` tokens.

    Args:
        context: The context of the feature's question.
        offsets: Per token, its `(start, end)` characters in the context, `None` outside the context
            (question, special and padding tokens).
        start_logits: The feature's start logits, one per token.
        end_logits: The feature's end logits.
        n_best_size: How many of the best start and end tokens to pair.
        max_answer_length: The longest answer, in tokens.

    Returns:
        The spans, in no particular order (probabilities not set).
    """
    length = min(len(offsets), len(start_logits))  # logits may be padded past the feature's tokens
    best_starts = np.argsort(start_logits[:length])[::-1][:n_best_size]
    best_ends = np.argsort(end_logits[:length])[::-1][:n_best_size]
    spans = []
    for start in best_starts:
        for end in best_ends:
            if offsets[start] is None or offsets[end] is None:
                continue
            if end < start or end - start + 1 > max_answer_length:
                continue
            start_char, end_char = int(offsets[start][0]), int(offsets[end][1])
            score = float(start_logits[start] + end_logits[end])
            spans.append(Candidate(context[start_char:end_char], start_char, end_char, score))
    return spans


def _with_probabilities(candidates: list[Candidate]) -> list[Candidate]:
    scores = np.array([candidate.score for candidate in candidates])
    weights = np.exp(scores - scores.max())  # shifted: softmax without overflow
    probabilities = weights / weights.sum()
    return [
        Candidate(c.text, c.start_char, c.end_char, c.score, float(p)) for c, p in zip(candidates, probabilities)
    ]


def best_candidates(spans: Iterable[Candidate], n_best_size: int) -> list[Candidate]:
    """The `n_best_size` best distinct spans, best first.

    Overlapping features often propose the same span of the context; it counts once, with its
    best score.
    """
    best: dict[tuple[int, int], Candidate] = {}
    for span in spans:
        key = (span.start_char, span.end_char)
        if key not in best or span.score > best[key].score:
            best[key] = span
    return sorted(best.values(), key=lambda candidate: candidate.score, reverse=True)[:n_best_size]


def postprocess_qa_predictions(
    examples: Iterable[Mapping],
    features: Iterable[Mapping],
    start_logits: np.ndarray,
    end_logits: np.ndarray,
    n_best_size: int = 20,
    max_answer_length: int = 30,
    version_2_with_negative: bool = False,
    null_score_diff_threshold: float = 0.0,
) -> QAPredictions:
    """Turn start/end logits over features into one answer text per question.

    Args:
        examples: The questions, each with `id` and `context` (a `datasets.Dataset` or dicts).
        features: The tokenized features, in the order of the logits, each with `example_id` (the
            `id` of its question) and `offset_mapping` (per token, its `(start, end)` characters
            in the context, `None` for tokens outside the context).
        start_logits: Start logits, shape `(num_features, sequence_length)`.
        end_logits: End logits, the same shape.
        n_best_size: Best start and end tokens paired per feature, and candidates kept per question.
        max_answer_length: The longest answer, in tokens.
        version_2_with_negative: Allow "no answer" (SQuAD v2): the answer is `""` when the null
            score beats the best span's score by more than `null_score_diff_threshold`.
        null_score_diff_threshold: How much the null score must beat the best span by.

    Returns:
        The answer and the n-best candidates of every question. Without SQuAD v2, a question
        none of whose features holds a valid span gets `""`.

    Raises:
        ValueError: When the logits and the features do not match, or a feature names an unknown question.
    """
    if n_best_size < 1 or max_answer_length < 1:
        raise ValueError(f"n_best_size and max_answer_length must be >= 1, got {n_best_size} and {max_answer_length}.")
    start_logits, end_logits = np.asarray(start_logits), np.asarray(end_logits)
    features = list(features)
    if start_logits.shape != end_logits.shape or start_logits.shape[0] != len(features):
        raise ValueError(
            f"Got start logits of shape {start_logits.shape} and end logits of shape {end_logits.shape} for "
            f"{len(features)} features: pass one row of each per feature, in the order of the features."
        )
    examples = list(examples)
    features_of: dict[str, list[int]] = collections.defaultdict(list)
    for index, feature in enumerate(features):
        features_of[feature["example_id"]].append(index)
    unknown = set(features_of) - {example["id"] for example in examples}
    if unknown:
        raise ValueError(f"Features refer to questions that are not among the examples: {sorted(unknown)[:5]}.")

    predictions = QAPredictions()
    for example in examples:
        indices = features_of.get(example["id"], [])
        spans = [
            span
            for index in indices
            for span in feature_spans(
                example["context"], features[index]["offset_mapping"], start_logits[index], end_logits[index],
                n_best_size, max_answer_length,
            )
        ]
        candidates = best_candidates(spans, n_best_size)
        answer = candidates[0].text if candidates else ""
        if version_2_with_negative and indices:
            # The feature least sure that there is no answer speaks for the question.
            null = Candidate("", -1, -1, min(null_score(start_logits[i], end_logits[i]) for i in indices))
            if not candidates or null.score - candidates[0].score > null_score_diff_threshold:
                answer = ""
            candidates = sorted([*candidates, null], key=lambda candidate: candidate.score, reverse=True)
        predictions.answers[example["id"]] = answer
        predictions.nbest[example["id"]] = _with_probabilities(candidates) if candidates else []
    return predictions
