#!/usr/bin/env python
"""Fine-tune an extractive question-answering model (SQuAD-style) while pruning it, then slim it.

    python examples/question_answering/run_qa.py \
        --model_name_or_path PATH_OR_HUB_ID \
        --train_file examples/question_answering/sample/train.jsonl \
        --validation_file examples/question_answering/sample/validation.jsonl \
        --do_train --do_eval --output_dir out/qa \
        --attention_granularity head --dense_granularity unit --final_threshold 0.5

    accelerate launch examples/question_answering/run_qa.py ...   # the same, on several processes

Questions with their contexts and answers (a dataset through `--dataset_name`, or local SQuAD
files) are tokenized into features of `--max_seq_length` tokens; long contexts are split into
windows overlapping by `--doc_stride` tokens. `SparseTrainer` fine-tunes and prunes the model with
the `SparseArgs` flags. Evaluation turns the start/end logits back into answer texts
(`qa_postprocessing.py`) and scores them with the SQuAD metric the repository ships (exact match
and F1; no Hub needed). The pruned model is then slimmed with `optimize_model`, evaluated the same
way, compared with the masked model, and saved with the tokenizer to `<output_dir>/slim`.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import evaluate
import transformers
from accelerate import PartialState
from transformers import (
    AutoConfig,
    AutoModelForQuestionAnswering,
    AutoTokenizer,
    HfArgumentParser,
    PreTrainedTokenizerBase,
    Trainer,
    TrainingArguments,
    default_data_collator,
    set_seed,
)

from nn_prune_ext import SparseArgs, SparseTrainer, get_layout, is_patched, optimize_model
from qa_postprocessing import NULL_INDEX, QAPredictions, postprocess_qa_predictions

logger = logging.getLogger(__name__)

# The SQuAD metric script the repository ships: `evaluate` loads it from a path, offline.
SQUAD_METRIC = Path(__file__).resolve().parent.parent / "metrics" / "squad"
DATA_EXTENSIONS = (".json", ".jsonl")
COLUMNS = ("id", "context", "question", "answers")
# Where the tokenizer's pieces of a feature come from: `sequence_ids` says 1 for the context.
CONTEXT_SEQUENCE = 1
SLIM_DIR = "slim"


@dataclass
class ModelArguments:
    """Which model and tokenizer to fine-tune."""

    model_name_or_path: str = field(
        metadata={"help": "Model folder or Hub id, of a registered architecture (BERT, RoBERTa, ELECTRA...)."}
    )
    tokenizer_name: str | None = field(
        default=None, metadata={"help": "Tokenizer folder or Hub id, if not the model's own. It must be a fast one."}
    )
    cache_dir: str | None = field(
        default=None, metadata={"help": "Where downloaded models, data sets and metrics are cached."}
    )
    model_revision: str = field(default="main", metadata={"help": "Branch, tag or commit of the model on the Hub."})
    token: str | None = field(default=None, metadata={"help": "Hub token, for private models and datasets."})
    trust_remote_code: bool = field(
        default=False,
        metadata={"help": "Run modeling code stored with the model (e.g. to fine-tune a slim checkpoint again)."},
    )


@dataclass
class DataArguments:
    """Which questions to train and evaluate on, how to cut contexts into features, and how to read answers."""

    dataset_name: str | None = field(
        default=None, metadata={"help": "Dataset name for datasets.load_dataset (e.g. squad, squad_v2)."}
    )
    dataset_config_name: str | None = field(default=None, metadata={"help": "Configuration of that dataset."})
    train_file: str | None = field(
        default=None,
        metadata={
            "help": "Training questions: a .jsonl/.json file of flat records (id, title, context, question, "
            "answers{text, answer_start}), or a .json file in SQuAD's own {\"data\": [...]} format."
        },
    )
    validation_file: str | None = field(
        default=None, metadata={"help": "Evaluation questions, in the same formats as train_file."}
    )
    max_seq_length: int = field(
        default=384, metadata={"help": "Tokens per feature (question, context window and special tokens)."}
    )
    doc_stride: int = field(
        default=128, metadata={"help": "Tokens shared by consecutive windows of a context too long for one feature."}
    )
    n_best_size: int = field(
        default=20, metadata={"help": "Best start and end tokens paired per feature, and answers kept per question."}
    )
    max_answer_length: int = field(default=30, metadata={"help": "The longest answer predicted, in tokens."})
    version_2_with_negative: bool = field(
        default=False, metadata={"help": "Some questions have no answer (SQuAD v2): the model may answer nothing."}
    )
    null_score_diff_threshold: float = field(
        default=0.0,
        metadata={"help": "SQuAD v2: answer nothing when the null score beats the best span's by more than this."},
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Use at most this many training questions."})
    max_eval_samples: int | None = field(
        default=None, metadata={"help": "Use at most this many evaluation questions."}
    )
    metric_name_or_path: str = field(
        default=str(SQUAD_METRIC),
        metadata={
            "help": "An evaluate metric taking SQuAD's inputs and returning exact_match and f1: by default the "
            "script this repository ships in examples/metrics/squad (no Hub needed); 'squad' loads the Hub's."
        },
    )
    preprocessing_num_workers: int | None = field(default=None, metadata={"help": "Processes for tokenizing."})
    overwrite_cache: bool = field(default=False, metadata={"help": "Redo the preprocessing even if cached."})

    def __post_init__(self):
        if self.dataset_name is None and self.train_file is None and self.validation_file is None:
            raise ValueError("Give questions: --dataset_name NAME, or --train_file and/or --validation_file.")
        for name in ("train_file", "validation_file"):
            path = getattr(self, name)
            if path is None:
                continue
            if Path(path).suffix not in DATA_EXTENSIONS:
                raise ValueError(
                    f"--{name} {path}: the extension must be one of {', '.join(DATA_EXTENSIONS)} (flat SQuAD records, "
                    "one JSON object per line, or SQuAD's {\"data\": [...]} file)."
                )
            if not Path(path).is_file():
                raise ValueError(f"--{name} {path}: no such file.")
        if not 0 < self.doc_stride < self.max_seq_length:
            raise ValueError(
                f"--doc_stride ({self.doc_stride}) must be positive and smaller than --max_seq_length "
                f"({self.max_seq_length}): windows of a long context overlap by doc_stride tokens."
            )
        for name in ("n_best_size", "max_answer_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be at least 1, got {getattr(self, name)}.")


# ----- data --------------------------------------------------------------------------------
def flatten_squad(articles: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Flatten SQuAD's nested `{"data": [...]}` articles into one record per question.

    Args:
        articles: The `data` list: articles with a `title` and `paragraphs`, each paragraph a
            `context` and its `qas` (questions with an `id`, the `question` and `answers`).

    Returns:
        Records with `id`, `title`, `context`, `question` and `answers` (`{"text": [...],
        "answer_start": [...]}`, empty for SQuAD v2's unanswerable questions), as `datasets` gives them.
    """
    records = []
    for article in articles:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                answers = [] if qa.get("is_impossible", False) else qa["answers"]
                records.append({
                    "id": str(qa["id"]),
                    "title": article.get("title", ""),
                    "context": paragraph["context"],
                    "question": qa["question"],
                    "answers": {
                        "text": [answer["text"] for answer in answers],
                        "answer_start": [int(answer["answer_start"]) for answer in answers],
                    },
                })
    return records


def read_squad_file(path: str | os.PathLike, cache_dir: str | None = None) -> datasets.Dataset:
    """Read a local file of questions: flat records, or SQuAD's nested format.

    Args:
        path: A `.jsonl` file of flat records, or a `.json` file: flat records (JSON lines, a list,
            or a `{"data": [...]}` object holding them) or SQuAD's `{"data": [articles]}`.
        cache_dir: Where `datasets` caches the flat files.

    Returns:
        One row per question.
    """
    if Path(path).suffix == ".json":
        try:
            document = json.loads(Path(path).read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            document = None  # JSON lines under a .json name: `datasets` reads those
        if isinstance(document, dict) and "data" in document:
            records = document["data"]
            nested = bool(records) and "paragraphs" in records[0]  # SQuAD's articles, not flat records
            return datasets.Dataset.from_list(flatten_squad(records) if nested else records)
    return datasets.load_dataset("json", data_files=str(path), split="train", cache_dir=cache_dir)


def load_questions(data_args: DataArguments, model_args: ModelArguments) -> datasets.DatasetDict:
    """Load the questions of `--dataset_name`, or of `--train_file` / `--validation_file`.

    Args:
        data_args: Where the questions are.
        model_args: For the Hub cache and token.

    Returns:
        The splits, each with at least the columns `id`, `context`, `question` and `answers`.
    """
    if data_args.dataset_name is not None:
        raw = datasets.load_dataset(
            data_args.dataset_name, data_args.dataset_config_name, cache_dir=model_args.cache_dir,
            token=model_args.token,
        )
    else:
        files = {"train": data_args.train_file, "validation": data_args.validation_file}
        raw = datasets.DatasetDict(
            {split: read_squad_file(path, model_args.cache_dir) for split, path in files.items() if path is not None}
        )
    for split, dataset in raw.items():
        missing = [column for column in COLUMNS if column not in dataset.column_names]
        if missing:
            raise ValueError(
                f"The {split} questions lack the columns {missing} (they have {dataset.column_names}); SQuAD-style "
                f"data needs {', '.join(COLUMNS)}, with answers as {{'text': [...], 'answer_start': [...]}}."
            )
    return raw


def check_answerable(dataset: datasets.Dataset, version_2_with_negative: bool) -> None:
    """Without SQuAD v2, every training question needs an answer; say how to fix it otherwise."""
    if version_2_with_negative:
        return
    unanswerable = sum(1 for answers in dataset["answers"] if not answers["text"])
    if unanswerable:
        raise ValueError(
            f"{unanswerable} training questions have no answer: pass --version_2_with_negative to train on "
            "unanswerable questions (SQuAD v2), or remove them."
        )


def select(dataset: datasets.Dataset, limit: int | None) -> datasets.Dataset:
    return dataset if limit is None else dataset.select(range(min(limit, len(dataset))))


# ----- features ----------------------------------------------------------------------------
def check_tokenizer(tokenizer: PreTrainedTokenizerBase, max_seq_length: int, config) -> None:
    """The features need offset mappings (fast tokenizers) and a length the model takes."""
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(
            f"{type(tokenizer).__name__} is not a fast tokenizer: question answering maps tokens back to characters "
            "of the context through offset mappings, which only fast (`tokenizers`-backed) tokenizers give. Pass "
            "--tokenizer_name with a model that has a tokenizer.json."
        )
    limit = min(tokenizer.model_max_length, getattr(config, "max_position_embeddings", tokenizer.model_max_length))
    if max_seq_length > limit:
        raise ValueError(
            f"--max_seq_length {max_seq_length} is longer than the model takes ({limit}); pass at most {limit}."
        )


def tokenize_windows(
    examples: dict[str, list], tokenizer: PreTrainedTokenizerBase, max_seq_length: int, doc_stride: int
) -> transformers.BatchEncoding:
    """Tokenize question/context pairs into windows of the context, each a feature of `max_seq_length` tokens.

    Only the context is truncated; a context too long for one feature continues in the next,
    overlapping by `doc_stride` tokens. Features are padded to `max_seq_length`, so every feature's
    logits have the same length.
    """
    # SQuAD has questions with leading spaces, which would only waste room in the feature.
    questions = [question.lstrip() for question in examples["question"]]
    return tokenizer(
        questions, examples["context"], truncation="only_second", max_length=max_seq_length, stride=doc_stride,
        return_overflowing_tokens=True, return_offsets_mapping=True, padding="max_length",
    )


def context_token_range(sequence_ids: list[int | None]) -> tuple[int, int]:
    """First and last token of the context in a feature."""
    first = sequence_ids.index(CONTEXT_SEQUENCE)
    last = len(sequence_ids) - 1 - sequence_ids[::-1].index(CONTEXT_SEQUENCE)
    return first, last


def answer_token_span(offsets: list[tuple[int, int]], sequence_ids: list[int | None], answers: dict) -> tuple[int, int]:
    """Token positions of the first gold answer in one feature.

    Args:
        offsets: The feature's `(start, end)` characters per token.
        sequence_ids: The feature's sequence id per token (`CONTEXT_SEQUENCE` for the context).
        answers: The question's `{"text": [...], "answer_start": [...]}`.

    Returns:
        `(start, end)` token positions, both inclusive; the null token (the first, which the
        post-processing scores "no answer" with) twice when the question has no answer or this
        window of the context does not hold all of it.
    """
    if not answers["text"]:
        return NULL_INDEX, NULL_INDEX
    start_char = answers["answer_start"][0]
    end_char = start_char + len(answers["text"][0])
    first, last = context_token_range(sequence_ids)
    if offsets[first][0] > start_char or offsets[last][1] < end_char:
        return NULL_INDEX, NULL_INDEX
    start = next(token for token in range(last, first - 1, -1) if offsets[token][0] <= start_char)
    end = next(token for token in range(first, last + 1) if offsets[token][1] >= end_char)
    return start, end


def prepare_train_features(
    examples: dict[str, list], tokenizer: PreTrainedTokenizerBase, max_seq_length: int, doc_stride: int
) -> dict[str, list]:
    """Tokenize a batch of questions into training features labelled with `start_positions` / `end_positions`."""
    encoded = tokenize_windows(examples, tokenizer, max_seq_length, doc_stride)
    question_of = encoded.pop("overflow_to_sample_mapping")
    offsets = encoded.pop("offset_mapping")
    spans = [
        answer_token_span(offsets[i], encoded.sequence_ids(i), examples["answers"][question_of[i]])
        for i in range(len(offsets))
    ]
    encoded["start_positions"] = [start for start, _ in spans]
    encoded["end_positions"] = [end for _, end in spans]
    return encoded.data


def prepare_eval_features(
    examples: dict[str, list], tokenizer: PreTrainedTokenizerBase, max_seq_length: int, doc_stride: int
) -> dict[str, list]:
    """Tokenize a batch of questions into evaluation features.

    Each feature keeps the `example_id` of its question and its `offset_mapping`, with `None`
    for tokens outside the context, which is what the post-processing reads.
    """
    encoded = tokenize_windows(examples, tokenizer, max_seq_length, doc_stride)
    question_of = encoded.pop("overflow_to_sample_mapping")
    encoded["example_id"] = [examples["id"][question] for question in question_of]
    encoded["offset_mapping"] = [
        [offset if sequence == CONTEXT_SEQUENCE else None for offset, sequence in zip(offsets, encoded.sequence_ids(i))]
        for i, offsets in enumerate(encoded["offset_mapping"])
    ]
    return encoded.data


def featurize(
    questions: datasets.Dataset,
    prepare,
    tokenizer: PreTrainedTokenizerBase,
    data_args: DataArguments,
    training_args: TrainingArguments,
    desc: str,
) -> datasets.Dataset:
    """Map `prepare` over the questions; the main process goes first so that the others read its cache."""
    with training_args.main_process_first(desc=desc):
        return questions.map(
            prepare, batched=True, remove_columns=questions.column_names, desc=desc,
            fn_kwargs=dict(
                tokenizer=tokenizer, max_seq_length=data_args.max_seq_length, doc_stride=data_args.doc_stride
            ),
            num_proc=data_args.preprocessing_num_workers, load_from_cache_file=not data_args.overwrite_cache,
        )


# ----- evaluation --------------------------------------------------------------------------
def predict_answers(
    trainer: Trainer, questions: datasets.Dataset, features: datasets.Dataset, data_args: DataArguments, prefix: str
) -> tuple[QAPredictions, dict[str, float]]:
    """Run the model over the evaluation features and turn its logits into answers.

    Args:
        trainer: The trainer of the model to evaluate (a `SparseTrainer` predicts at the final threshold).
        questions: The evaluation questions.
        features: Their features, from `prepare_eval_features`.
        data_args: The post-processing settings.
        prefix: Prefix of the timing metrics (`<prefix>_runtime`, ...).

    Returns:
        The answers, and the timing metrics of the prediction loop. Every process gets all of
        them: the Trainer gathers the logits of all processes.
    """
    output = trainer.predict(features.remove_columns(["example_id", "offset_mapping"]), metric_key_prefix=prefix)
    start_logits, end_logits = output.predictions[:2]
    answers = postprocess_qa_predictions(
        questions, features, start_logits, end_logits, n_best_size=data_args.n_best_size,
        max_answer_length=data_args.max_answer_length, version_2_with_negative=data_args.version_2_with_negative,
        null_score_diff_threshold=data_args.null_score_diff_threshold,
    )
    return answers, output.metrics


def score_answers(metric: evaluate.EvaluationModule, questions: datasets.Dataset, answers: QAPredictions) -> dict:
    """Exact match and F1 of the answers against the gold ones."""
    references = [
        {"id": question_id, "answers": {"text": gold["text"], "answer_start": gold["answer_start"]}}
        for question_id, gold in zip(questions["id"], questions["answers"])
    ]
    return metric.compute(predictions=answers.for_metric(), references=references)


def evaluate_qa(
    trainer: Trainer,
    questions: datasets.Dataset,
    features: datasets.Dataset,
    data_args: DataArguments,
    metric: evaluate.EvaluationModule,
    prefix: str,
) -> dict[str, float]:
    """Predict, post-process, score; save the predicted answers as `<output_dir>/<prefix>_predictions.json`.

    Returns:
        `<prefix>_exact_match`, `<prefix>_f1`, `<prefix>_samples` (questions) and the timing metrics.
    """
    answers, metrics = predict_answers(trainer, questions, features, data_args, prefix)
    metrics.update({f"{prefix}_{name}": value for name, value in score_answers(metric, questions, answers).items()})
    metrics[f"{prefix}_samples"] = len(questions)
    if trainer.is_world_process_zero():
        path = Path(trainer.args.output_dir) / f"{prefix}_predictions.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(answers.answers, indent=2, ensure_ascii=False), encoding="utf-8")
    return metrics


def comparison_table(masked: dict[str, float], slim: dict[str, float]) -> str:
    """Masked (dense shapes) against slim: exact match, F1, parameters, prediction time."""
    rows = [("exact match", "eval_exact_match", "slim_exact_match", "{:.2f}"),
            ("F1", "eval_f1", "slim_f1", "{:.2f}"),
            ("parameters", "dense_parameters", "slim_parameters", "{:,}"),
            ("prediction seconds", "eval_runtime", "slim_runtime", "{:.3f}")]
    lines = [f"{'':<20} {'masked':>14} {'slim':>14}"]
    for label, masked_key, slim_key, form in rows:
        lines.append(f"{label:<20} {form.format(masked[masked_key]):>14} {form.format(slim[slim_key]):>14}")
    return "\n".join(lines)


def evaluate_masked_and_slim(
    trainer: SparseTrainer,
    slim: transformers.PreTrainedModel,
    questions: datasets.Dataset,
    features: datasets.Dataset,
    data_args: DataArguments,
    metric: evaluate.EvaluationModule,
) -> dict[str, float]:
    """Evaluate the masked model and the slim one the same way; log, save and compare the metrics.

    Returns:
        `eval_*` metrics of the masked model (with its density where it is patched) and `slim_*`
        ones of the slim model, with parameter counts; also saved as `eval_results.json` and
        `slim_results.json`.
    """
    dense_parameters, slim_parameters = slim.slim_report.parameters
    masked = evaluate_qa(trainer, questions, features, data_args, metric, "eval")
    if is_patched(trainer.model):
        masked.update({f"eval_{name}": value for name, value in trainer.evaluation_density().items()})
    masked["dense_parameters"] = dense_parameters
    trainer.log_metrics("eval", masked)
    trainer.save_metrics("eval", masked)
    # A plain Trainer: the slim model is not patched.
    slim_trainer = Trainer(
        model=slim, args=trainer.args, data_collator=trainer.data_collator, processing_class=trainer.processing_class
    )
    slimmed = evaluate_qa(slim_trainer, questions, features, data_args, metric, "slim")
    slimmed["slim_parameters"] = slim_parameters
    trainer.log_metrics("slim", slimmed)
    trainer.save_metrics("slim", slimmed)
    if trainer.is_world_process_zero():
        print("masked model (dense shapes) against slim model:\n" + comparison_table(masked, slimmed))
    return {**masked, **slimmed}


# ----- the script --------------------------------------------------------------------------
def setup_logging(training_args: TrainingArguments) -> None:
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", datefmt="%m/%d/%Y %H:%M:%S",
                        handlers=[logging.StreamHandler(sys.stdout)])
    level = training_args.get_process_log_level()
    logger.setLevel(level)
    datasets.utils.logging.set_verbosity(level)
    transformers.utils.logging.set_verbosity(level)


def parse_arguments(
    argv: list[str] | None = None,
) -> tuple[ModelArguments, DataArguments, TrainingArguments, SparseArgs]:
    """The four argument dataclasses, from the command line or from a single .json file of them."""
    parser = HfArgumentParser((ModelArguments, DataArguments, TrainingArguments, SparseArgs))
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 1 and argv[0].endswith(".json"):
        return parser.parse_json_file(json_file=os.path.abspath(argv[0]))
    return parser.parse_args_into_dataclasses(args=argv)


def load_model_and_tokenizer(
    model_args: ModelArguments, data_args: DataArguments
) -> tuple[transformers.PreTrainedModel, PreTrainedTokenizerBase]:
    """The question-answering model and its fast tokenizer; fails early for what cannot work."""
    hub = dict(cache_dir=model_args.cache_dir, revision=model_args.model_revision, token=model_args.token,
               trust_remote_code=model_args.trust_remote_code)
    config = AutoConfig.from_pretrained(model_args.model_name_or_path, **hub)
    get_layout(config)  # raises UnsupportedArchitectureError, naming the supported types, before weights load
    tokenizer = AutoTokenizer.from_pretrained(model_args.tokenizer_name or model_args.model_name_or_path, **hub)
    check_tokenizer(tokenizer, data_args.max_seq_length, config)
    model = AutoModelForQuestionAnswering.from_pretrained(model_args.model_name_or_path, config=config, **hub)
    return model, tokenizer


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the example.

    Args:
        argv: Command-line arguments (default: `sys.argv[1:]`), or the path of one .json file.

    Returns:
        The train metrics, and the `eval_*` and `slim_*` metrics.
    """
    model_args, data_args, training_args, sparse_args = parse_arguments(argv)
    if training_args.eval_strategy != "no":
        raise ValueError(
            f"--eval_strategy {training_args.eval_strategy.value}: this example evaluates once, after training, "
            "because scoring answers needs the post-processing of the logits; use --eval_strategy no with --do_eval."
        )
    setup_logging(training_args)
    set_seed(training_args.seed)
    model, tokenizer = load_model_and_tokenizer(model_args, data_args)
    raw = load_questions(data_args, model_args)

    train_features = None
    if training_args.do_train:
        if "train" not in raw:
            raise ValueError("--do_train needs training questions: --train_file or a dataset with a train split.")
        train_questions = select(raw["train"], data_args.max_train_samples)
        check_answerable(train_questions, data_args.version_2_with_negative)
        train_features = featurize(
            train_questions, prepare_train_features, tokenizer, data_args, training_args,
            "Tokenizing training questions",
        )
    if training_args.do_eval:
        if "validation" not in raw:
            raise ValueError(
                "--do_eval needs evaluation questions: --validation_file or a dataset with a validation split."
            )
        eval_questions = select(raw["validation"], data_args.max_eval_samples)
        eval_features = featurize(
            eval_questions, prepare_eval_features, tokenizer, data_args, training_args,
            "Tokenizing evaluation questions",
        )
        metric = evaluate.load(data_args.metric_name_or_path, cache_dir=model_args.cache_dir, keep_in_memory=True)

    trainer = SparseTrainer(
        model=model,
        args=training_args,
        sparse_args=sparse_args,
        train_dataset=train_features,
        processing_class=tokenizer,
        data_collator=default_data_collator,  # features are all max_seq_length long: nothing to pad
    )
    results: dict[str, Any] = {}
    if training_args.do_train:
        train_result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
        trainer.save_model()
        trainer.log_metrics("train", train_result.metrics)
        trainer.save_metrics("train", train_result.metrics)
        trainer.save_state()
        results.update(train_result.metrics)

    # The heads and FFN units the masks emptied leave the weights. Slim at the thresholds evaluation
    # uses (the final ones), which a run without training has not reached.
    with trainer.controller.evaluation(trainer.model):
        slim = optimize_model(trainer.model)
    if training_args.do_eval:
        results.update(evaluate_masked_and_slim(trainer, slim, eval_questions, eval_features, data_args, metric))

    if trainer.is_world_process_zero():
        print(slim.slim_report)
        slim_dir = Path(training_args.output_dir) / SLIM_DIR
        slim.save_pretrained(slim_dir)
        tokenizer.save_pretrained(slim_dir)
        print(f"slim checkpoint and tokenizer written to {slim_dir}")
    return results


if __name__ == "__main__":
    main()
    # Leave the process group before exiting: a gloo rank that exits with it open can abort at shutdown.
    PartialState().destroy_process_group()
