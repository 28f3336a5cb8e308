#!/usr/bin/env python
"""Fine-tune a sequence classifier (GLUE-style) while pruning it, then slim it.

    python examples/text_classification/run_text_classification.py \
        --model_name_or_path PATH_OR_HUB_ID --dataset_name wordnet_nouns \
        --sparse_preset hybrid --regularization_final_lambda 20 \
        --do_train --do_eval --output_dir out/wordnet

    accelerate launch examples/text_classification/run_text_classification.py ...   # several processes

Texts and labels come from the data set nn_prune_ext ships (`--dataset_name wordnet_nouns`), a
`datasets` data set (`--dataset_name nyu-mll/glue --dataset_config_name mrpc`), or local `.csv`/`.json`/
`.jsonl` files with one text column or a sentence pair and a label column. `SparseTrainer`
fine-tunes and prunes the model with the `SparseArgs` flags (on top of `--sparse_preset`);
evaluation reports the loss and the metrics of `--metric_name_or_path` (the accuracy script the
repository ships by default: no Hub needed). The pruned model is then slimmed with
`optimize_model`, evaluated the same way, compared with the masked model, and saved with the
tokenizer to `<output_dir>/slim`.
"""

from __future__ import annotations

import inspect
import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import datasets
import evaluate
import numpy as np
import transformers
from accelerate import PartialState
from transformers import (
    MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING,
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    EvalPrediction,
    HfArgumentParser,
    PreTrainedConfig,
    PreTrainedTokenizerBase,
    Trainer,
    TrainingArguments,
    default_data_collator,
    set_seed,
)

from nn_prune_ext import SparseArgs, SparseTrainer, get_layout, optimize_model
from nn_prune_ext.data import wordnet_nouns
from nn_prune_ext.slim import slim_class_for
from nn_prune_ext.slim.modeling_slim import is_slim_config

logger = logging.getLogger(__name__)

# The metric scripts the repository ships: `evaluate` loads them from a path, offline.
METRICS_DIR = Path(__file__).resolve().parent.parent / "metrics"
DEFAULT_METRIC = METRICS_DIR / "accuracy"
# Data sets that load with no file and no Hub, by `--dataset_name`.
BUILTIN_DATASETS: dict[str, Callable[[], datasets.DatasetDict]] = {"wordnet_nouns": wordnet_nouns.load_sample}
# File extension -> `datasets` builder.
FILE_BUILDERS = {".csv": "csv", ".json": "json", ".jsonl": "json"}
# Text columns recognised without --text_column_names (GLUE's names and the usual single ones);
# pairs come first so that ("question", "sentence") is not taken for a lone "sentence".
KNOWN_TEXT_COLUMNS = (
    ("sentence1", "sentence2"), ("question1", "question2"), ("premise", "hypothesis"), ("question", "sentence"),
    ("sentence",), ("text",),
)
# SparseArgs presets by `--sparse_preset` name; "none" is SparseArgs' own field defaults.
SPARSE_PRESETS: dict[str, Callable[[], SparseArgs]] = {
    "none": SparseArgs, "hybrid": SparseArgs.hybrid, "struct": SparseArgs.struct,
}
SLIM_DIR = "slim"


@dataclass
class ModelArguments:
    """Which model, config and tokenizer to fine-tune."""

    model_name_or_path: str = field(metadata={"help": "Model folder or Hub id, of a registered architecture."})
    config_name: str | None = field(default=None, metadata={"help": "Config folder or Hub id, if not the model's."})
    tokenizer_name: str | None = field(
        default=None, metadata={"help": "Tokenizer folder or Hub id, if not the model's own."}
    )
    cache_dir: str | None = field(
        default=None, metadata={"help": "Where downloaded models, data sets and metrics are cached."}
    )
    model_revision: str = field(default="main", metadata={"help": "Branch, tag or commit of the model on the Hub."})
    token: str | None = field(default=None, metadata={"help": "Hub token, for private models and data sets."})
    trust_remote_code: bool = field(
        default=False,
        metadata={"help": "Run modeling code stored with the model (e.g. to fine-tune a slim checkpoint again)."},
    )
    ignore_mismatched_sizes: bool = field(
        default=False,
        metadata={"help": "Start a new classifier when the checkpoint's has a different number of labels."},
    )


@dataclass
class DataArguments:
    """Which texts and labels to train and evaluate on, and how to tokenize them."""

    dataset_name: str | None = field(
        default=None,
        metadata={
            "help": f"A data set for datasets.load_dataset, or one shipped with nn_prune_ext that needs no Hub: "
            f"{', '.join(BUILTIN_DATASETS)}."
        },
    )
    dataset_config_name: str | None = field(default=None, metadata={"help": "Configuration of that data set."})
    train_file: str | None = field(
        default=None, metadata={"help": "Training examples: a .csv, .json or .jsonl file with text and label columns."}
    )
    validation_file: str | None = field(
        default=None, metadata={"help": "Evaluation examples, in the same format as train_file."}
    )
    eval_split_name: str = field(
        default="validation", metadata={"help": "Split evaluated on (e.g. validation_matched for GLUE's MNLI)."}
    )
    text_column_names: str | None = field(
        default=None,
        metadata={
            "help": "Text column, or two comma-separated columns for sentence pairs (e.g. 'premise,hypothesis'). "
            "Default: GLUE's column names, 'sentence' or 'text', else the only string column."
        },
    )
    label_column_name: str = field(default="label", metadata={"help": "Column holding the labels."})
    max_seq_length: int | None = field(
        default=None,
        metadata={"help": "Texts are truncated to this many tokens. Default: 128, or less if the model takes less."},
    )
    pad_to_max_length: bool = field(
        default=False,
        metadata={"help": "Pad every text to max_seq_length; by default batches are padded to their longest text."},
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Use at most this many training examples."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Use at most this many evaluation examples."})
    preprocessing_num_workers: int | None = field(default=None, metadata={"help": "Processes for tokenizing."})
    overwrite_cache: bool = field(default=False, metadata={"help": "Tokenize again even if cached."})

    def __post_init__(self):
        if self.dataset_name is None and self.train_file is None and self.validation_file is None:
            raise ValueError(
                f"Give examples: --dataset_name NAME ({', '.join(BUILTIN_DATASETS)} needs no download), or "
                "--train_file and/or --validation_file."
            )
        if self.dataset_name is not None and (self.train_file or self.validation_file):
            raise ValueError("Give either --dataset_name or --train_file/--validation_file, not both.")
        builders = set()
        for name in ("train_file", "validation_file"):
            path = getattr(self, name)
            if path is None:
                continue
            if Path(path).suffix not in FILE_BUILDERS:
                raise ValueError(f"--{name} {path}: the extension must be one of {', '.join(FILE_BUILDERS)}.")
            if not Path(path).is_file():
                raise ValueError(f"--{name} {path}: no such file.")
            builders.add(FILE_BUILDERS[Path(path).suffix])
        if len(builders) > 1:
            raise ValueError("--train_file and --validation_file must have the same format (both csv or both json).")
        if self.max_seq_length is not None and self.max_seq_length < 2:
            raise ValueError(
                f"--max_seq_length must be at least 2 (room for the special tokens), got {self.max_seq_length}."
            )


@dataclass
class ExampleArguments:
    """The pruning preset and the evaluation metrics."""

    sparse_preset: str = field(
        default="none",
        metadata={
            "help": "SparseArgs preset whose values replace the SparseArgs defaults; SparseArgs flags given on the "
            "command line (or keys of the .json file) still win. 'none': SparseArgs' own defaults.",
            "choices": tuple(SPARSE_PRESETS),
        },
    )
    metric_name_or_path: list[str] = field(
        default_factory=lambda: [str(DEFAULT_METRIC)],
        metadata={
            "help": "One or more evaluate metrics: folders holding a metric script, names of the scripts this "
            "repository ships in examples/metrics (accuracy, f1, matthews_correlation: no Hub needed), or Hub names."
        },
    )
    metric_average: str | None = field(
        default=None,
        metadata={
            "help": "The `average` of metrics that take one (f1): 'binary' (two labels), 'micro', 'macro' or "
            "'weighted'. Default: the metric's own ('binary' for f1)."
        },
    )

    def __post_init__(self):
        if self.sparse_preset not in SPARSE_PRESETS:
            raise ValueError(f"--sparse_preset {self.sparse_preset!r} is not one of {', '.join(SPARSE_PRESETS)}.")


ARGUMENT_TYPES = (ModelArguments, DataArguments, ExampleArguments, TrainingArguments, SparseArgs)


# ----- arguments ---------------------------------------------------------------------------
def preset_defaults(preset: str) -> dict[str, Any]:
    """Every `SparseArgs` field as the preset `preset` sets it."""
    if preset not in SPARSE_PRESETS:
        raise ValueError(f"sparse_preset {preset!r} is not one of {', '.join(SPARSE_PRESETS)}.")
    return SPARSE_PRESETS[preset]().to_dict()


def build_parser(preset: str = "none") -> HfArgumentParser:
    """The parser of all five argument dataclasses, with `preset`'s values as the SparseArgs defaults.

    Abbreviated flags are refused: the preset is read before the full parse, which must see the
    same flags.
    """
    parser = HfArgumentParser(ARGUMENT_TYPES, allow_abbrev=False)
    parser.set_defaults(**preset_defaults(preset))
    return parser


def parse_arguments(argv: list[str] | None = None) -> tuple:
    """The five argument dataclasses, from the command line or from a single .json file of them.

    `--sparse_preset` changes the SparseArgs defaults, so it is read first; the SparseArgs flags
    given explicitly then override the preset like any default.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    if len(argv) == 1 and argv[0].endswith(".json"):
        settings = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
        preset = settings.get("sparse_preset", "none")
        return build_parser(preset).parse_dict({**preset_defaults(preset), **settings})
    first_pass = HfArgumentParser(ExampleArguments, add_help=False, allow_abbrev=False)
    example_args, _ = first_pass.parse_known_args(argv)
    return build_parser(example_args.sparse_preset).parse_args_into_dataclasses(args=argv)


# ----- data --------------------------------------------------------------------------------
def load_raw_datasets(data_args: DataArguments, model_args: ModelArguments) -> datasets.DatasetDict:
    """The raw examples: a shipped data set, a `datasets` data set, or the local files."""
    if data_args.dataset_name in BUILTIN_DATASETS:
        return BUILTIN_DATASETS[data_args.dataset_name]()
    hub = dict(cache_dir=model_args.cache_dir, token=model_args.token)
    if data_args.dataset_name is not None:
        return datasets.load_dataset(data_args.dataset_name, data_args.dataset_config_name, **hub)
    files = {
        split: path
        for split, path in (("train", data_args.train_file), (data_args.eval_split_name, data_args.validation_file))
        if path is not None
    }
    builder = FILE_BUILDERS[Path(next(iter(files.values()))).suffix]
    return datasets.load_dataset(builder, data_files=files, **hub)


def resolve_text_columns(dataset: datasets.Dataset, requested: str | None, label_column: str) -> tuple[str, ...]:
    """The one or two columns tokenized as the input, as named or recognised (see `KNOWN_TEXT_COLUMNS`)."""
    columns = dataset.column_names
    if requested is not None:
        names = tuple(name.strip() for name in requested.split(","))
        if not 1 <= len(names) <= 2:
            raise ValueError(f"--text_column_names takes one column or two (a pair), got {requested!r}.")
        missing = [name for name in names if name not in columns]
        if missing:
            raise ValueError(f"No column {missing} in the data (columns: {columns}); fix --text_column_names.")
        return names
    for names in KNOWN_TEXT_COLUMNS:
        if all(name in columns for name in names):
            return names
    strings = [
        name for name, feature in dataset.features.items()
        if name != label_column and getattr(feature, "dtype", None) in ("string", "large_string")
    ]
    if len(strings) == 1:
        return (strings[0],)
    raise ValueError(
        f"Cannot tell which of the columns {columns} hold the text; name them with --text_column_names "
        "(e.g. 'text', or 'sentence1,sentence2' for pairs)."
    )


def label_namer(dataset: datasets.Dataset, column: str) -> Callable[[Any], str]:
    """Turns a raw label of `column` into its name: the class name of a `ClassLabel`, else `str(value)`."""
    if column not in dataset.column_names:
        raise ValueError(
            f"No label column {column!r} in the data (columns: {dataset.column_names}); set --label_column_name."
        )
    feature = dataset.features[column]
    if isinstance(feature, datasets.ClassLabel):
        return feature.int2str
    if getattr(feature, "dtype", "").startswith("float"):
        raise ValueError(
            f"The labels of {column!r} are floats: regression (e.g. GLUE's STS-B) is not supported by this "
            "example, only classification. Give integer or string labels."
        )
    return str


def dataset_label_names(dataset: datasets.Dataset, column: str) -> list[str]:
    """The label names of `dataset`: a `ClassLabel`'s names, else its distinct values in sorted order."""
    to_name = label_namer(dataset, column)
    if isinstance(dataset.features[column], datasets.ClassLabel):
        return list(dataset.features[column].names)
    values = dataset.unique(column)
    if None in values:
        raise ValueError(f"Some examples have no label in column {column!r}; remove them or fill them in.")
    return [to_name(value) for value in sorted(values)]


def model_label_order(names: list[str], config: PreTrainedConfig) -> list[str]:
    """The model's labels, in its classifier's order, when it was fine-tuned on every label in `names`.

    Otherwise `names`, the data's labels: the classifier is trained from scratch (or, with as many
    labels, from the checkpoint's head, which a warning points out).
    """
    existing = [config.id2label[index] for index in sorted(config.id2label)]
    if set(names) <= set(existing):
        return existing
    generic = all(name == f"LABEL_{index}" for index, name in enumerate(existing))
    if not generic:
        logger.warning("The model was fine-tuned on the labels %s, not on the data's %s.", existing, names)
    return names


def resolve_max_seq_length(
    requested: int | None, tokenizer: PreTrainedTokenizerBase, config: PreTrainedConfig
) -> int:
    """`--max_seq_length`, or the default of 128 capped by what the model and tokenizer take."""
    limit = min(tokenizer.model_max_length, getattr(config, "max_position_embeddings", tokenizer.model_max_length))
    if requested is None:
        return min(128, limit)
    if requested > limit:
        raise ValueError(f"--max_seq_length {requested} is longer than the model takes ({limit}); pass at most that.")
    return requested


def encode(
    raw: datasets.DatasetDict,
    tokenizer: PreTrainedTokenizerBase,
    text_columns: tuple[str, ...],
    label_column: str,
    label2id: dict[str, int],
    max_seq_length: int,
    data_args: DataArguments,
    training_args: TrainingArguments,
) -> datasets.DatasetDict:
    """Tokenize every split and turn its labels into the model's label ids (column `labels`).

    The main process goes first, so that the others reuse its cache.
    """
    for split, dataset in raw.items():
        to_name = label_namer(dataset, label_column)
        unknown = sorted({to_name(value) for value in dataset.unique(label_column)} - set(label2id))
        if unknown:
            raise ValueError(
                f"The {split} split has labels {unknown} the model does not know ({sorted(label2id)}); every "
                "label must occur in the training data (or the fine-tuned model's labels)."
            )

    def tokenize(batch: dict[str, list], to_name: Callable[[Any], str]) -> dict[str, list]:
        encoded = tokenizer(
            *(batch[column] for column in text_columns),
            truncation=True,
            max_length=max_seq_length,
            padding="max_length" if data_args.pad_to_max_length else False,
        )
        encoded["labels"] = [label2id[to_name(value)] for value in batch[label_column]]
        return encoded

    with training_args.main_process_first(desc="tokenizing"):
        return datasets.DatasetDict({
            split: dataset.map(
                tokenize,
                fn_kwargs={"to_name": label_namer(dataset, label_column)},
                batched=True,
                num_proc=data_args.preprocessing_num_workers,
                load_from_cache_file=not data_args.overwrite_cache,
                remove_columns=dataset.column_names,
                desc=f"Tokenizing {split}",
            )
            for split, dataset in raw.items()
        })


def select(dataset: datasets.Dataset, limit: int | None) -> datasets.Dataset:
    return dataset if limit is None else dataset.select(range(min(limit, len(dataset))))


def classifier_class(config: PreTrainedConfig) -> type:
    """The class to load the model with: slim checkpoints get nn_prune_ext's own slim class.

    Fine-tuning a slim model again (`--no_prune`) then runs no remote code, and the slim class
    knows its stock class (e.g. to load a dense teacher for distillation).
    """
    if is_slim_config(config):
        return slim_class_for(MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING[type(config)])
    return AutoModelForSequenceClassification


# ----- metrics -----------------------------------------------------------------------------
def resolve_metric(name_or_path: str) -> str:
    """A metric folder as given, a script this repository ships by its name, or a Hub name unchanged."""
    if Path(name_or_path).exists():
        return str(Path(name_or_path).resolve())
    shipped = METRICS_DIR / name_or_path
    if (shipped / f"{name_or_path}.py").is_file():
        return str(shipped)
    return name_or_path


def classification_metrics(
    names_or_paths: list[str], average: str | None, cache_dir: str | None
) -> Callable[[EvalPrediction], dict[str, float]]:
    """A `compute_metrics` for the Trainer: the given metrics of the argmax predictions.

    Args:
        names_or_paths: `evaluate` metrics, see `resolve_metric`.
        average: Passed as `average` to the metrics whose `compute` takes one, if not `None`.
        cache_dir: `evaluate`'s cache folder.
    """
    # keep_in_memory: every process computes on the gathered predictions, with no shared cache files.
    metrics = [evaluate.load(resolve_metric(name), cache_dir=cache_dir, keep_in_memory=True) for name in names_or_paths]
    takes_average = [metric for metric in metrics if "average" in inspect.signature(metric._compute).parameters]
    if average is not None and not takes_average:
        raise ValueError(f"--metric_average {average} applies to none of the metrics {names_or_paths}; drop it.")

    def compute_metrics(prediction: EvalPrediction) -> dict[str, float]:
        logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
        predicted = np.argmax(logits, axis=-1)
        results: dict[str, float] = {}
        for metric in metrics:
            options = {"average": average} if average is not None and metric in takes_average else {}
            results.update(metric.compute(predictions=predicted, references=prediction.label_ids, **options))
        return results

    return compute_metrics


# ----- reporting ---------------------------------------------------------------------------
def comparison_table(masked: dict[str, float], slim: dict[str, float]) -> str:
    """Masked model (dense shapes) against slim model: loss, every metric, parameters."""
    names = [key[len("slim_"):] for key in slim if key.startswith("slim_") and f"eval_{key[len('slim_'):]}" in masked]
    shown = [name for name in names if name == "loss" or not name.endswith(("runtime", "per_second"))]
    lines = [f"{'':<24} {'masked':>14} {'slim':>14}"]
    for name in shown:
        lines.append(f"{name:<24} {masked[f'eval_{name}']:>14.4f} {slim[f'slim_{name}']:>14.4f}")
    lines.append(f"{'parameters':<24} {masked['dense_parameters']:>14,} {slim['slim_parameters']:>14,}")
    return "\n".join(lines)


def setup_logging(training_args: TrainingArguments) -> None:
    logging.basicConfig(
        format="%(asctime)s - %(levelname)s - %(name)s - %(message)s",
        datefmt="%m/%d/%Y %H:%M:%S",
        handlers=[logging.StreamHandler(sys.stdout)],
    )
    level = training_args.get_process_log_level()
    logger.setLevel(level)
    datasets.utils.logging.set_verbosity(level)
    transformers.utils.logging.set_verbosity(level)
    # Every process says where it runs: the quickest check that a launch really is distributed.
    logger.warning(
        "Process rank: %d, world size: %d, device: %s, distributed: %s",
        training_args.process_index, training_args.world_size, training_args.device,
        training_args.parallel_mode.value == "distributed",
    )


# ----- main --------------------------------------------------------------------------------
def load_examples(data_args: DataArguments, model_args: ModelArguments, training_args: TrainingArguments):
    """The raw splits the run uses: `train` for `--do_train`, the evaluation split for `--do_eval`."""
    raw = load_raw_datasets(data_args, model_args)
    wanted = {"train": (training_args.do_train, data_args.max_train_samples),
              data_args.eval_split_name: (training_args.do_eval, data_args.max_eval_samples)}
    if not training_args.do_train and not training_args.do_eval:
        raise ValueError("Nothing to do: pass --do_train and/or --do_eval.")
    for split, (needed, _) in wanted.items():
        if needed and split not in raw:
            raise ValueError(
                f"The data has no {split!r} split (it has {list(raw)}): give --train_file/--validation_file, or set "
                "--eval_split_name."
            )
    return datasets.DatasetDict(
        {split: select(raw[split], limit) for split, (needed, limit) in wanted.items() if needed}
    )


def load_classifier(model_args: ModelArguments, label_names: list[str]):
    """The config (with the labels), tokenizer and model to fine-tune.

    Returns:
        `(config, tokenizer, model)`.
    """
    hub = dict(cache_dir=model_args.cache_dir, revision=model_args.model_revision, token=model_args.token,
               trust_remote_code=model_args.trust_remote_code)
    config = AutoConfig.from_pretrained(model_args.config_name or model_args.model_name_or_path, **hub)
    get_layout(config)  # unsupported architectures fail here, before any weights load
    label_names = model_label_order(label_names, config)
    config.id2label = dict(enumerate(label_names))
    config.label2id = {name: index for index, name in enumerate(label_names)}
    tokenizer = AutoTokenizer.from_pretrained(model_args.tokenizer_name or model_args.model_name_or_path, **hub)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token  # Llama-family tokenizers have none
    if getattr(config, "pad_token_id", None) is None:
        config.pad_token_id = tokenizer.pad_token_id  # decoder classifiers read the last non-pad token
    model = classifier_class(config).from_pretrained(
        model_args.model_name_or_path, config=config, ignore_mismatched_sizes=model_args.ignore_mismatched_sizes, **hub
    )
    return config, tokenizer, model


def load_and_encode(model_args: ModelArguments, data_args: DataArguments, training_args: TrainingArguments):
    """The classifier with the data's labels, its tokenizer, and the splits the run uses, tokenized.

    Returns:
        `(tokenizer, model, encoded splits)`.
    """
    raw = load_examples(data_args, model_args, training_args)
    first = next(iter(raw.values()))
    text_columns = resolve_text_columns(first, data_args.text_column_names, data_args.label_column_name)
    config, tokenizer, model = load_classifier(model_args, dataset_label_names(first, data_args.label_column_name))
    max_seq_length = resolve_max_seq_length(data_args.max_seq_length, tokenizer, config)
    encoded = encode(raw, tokenizer, text_columns, data_args.label_column_name, config.label2id, max_seq_length,
                     data_args, training_args)
    return tokenizer, model, encoded


def slim_evaluate_and_save(
    trainer: SparseTrainer, evaluation: dict[str, Any], masked_metrics: dict[str, Any]
) -> dict[str, Any]:
    """Slim the trained model, evaluate it like the masked one, and save it to `<output_dir>/slim`.

    Returns:
        The slim model's metrics (`slim_*`, if evaluating) and both parameter counts.
    """
    # The heads and FFN units the masks emptied leave the weights. Slim at the thresholds evaluation
    # uses (the final ones), which a run without training has not reached.
    with trainer.controller.evaluation(trainer.model):
        slim = optimize_model(trainer.model)
    dense_parameters, slim_parameters = slim.slim_report.parameters
    results: dict[str, Any] = {"dense_parameters": dense_parameters, "slim_parameters": slim_parameters}
    if trainer.args.do_eval:
        # The slim model is an ordinary transformers model: a plain Trainer evaluates it the same way.
        metrics = Trainer(model=slim, args=trainer.args, **evaluation).evaluate(metric_key_prefix="slim")
        metrics.pop("epoch", None)  # that trainer never trained: its epoch 0 would hide the real one
        metrics["slim_parameters"] = slim_parameters
        trainer.log_metrics("slim", metrics)
        trainer.save_metrics("slim", metrics)
        results.update(metrics)
        if trainer.is_world_process_zero():
            print("masked model (dense shapes) against slim model:\n"
                  + comparison_table({**masked_metrics, "dense_parameters": dense_parameters}, metrics))
    trainer.accelerator.wait_for_everyone()  # all ranks have finished evaluating before the main one writes
    if trainer.is_world_process_zero():
        print(slim.slim_report)
        slim_dir = Path(trainer.args.output_dir) / SLIM_DIR
        slim.save_pretrained(slim_dir)
        trainer.processing_class.save_pretrained(slim_dir)
        print(f"slim checkpoint and tokenizer written to {slim_dir}")
    return results


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the example; returns the metrics it logged (train, eval, slim) and the parameter counts."""
    model_args, data_args, example_args, training_args, sparse_args = parse_arguments(argv)
    setup_logging(training_args)
    set_seed(training_args.seed)

    tokenizer, model, encoded = load_and_encode(model_args, data_args, training_args)
    evaluation = dict(
        eval_dataset=encoded.get(data_args.eval_split_name),
        data_collator=default_data_collator if data_args.pad_to_max_length else DataCollatorWithPadding(tokenizer),
        processing_class=tokenizer,
        compute_metrics=classification_metrics(
            example_args.metric_name_or_path, example_args.metric_average, model_args.cache_dir
        ),
    )
    trainer = SparseTrainer(model=model, args=training_args, sparse_args=sparse_args,
                            train_dataset=encoded.get("train"), **evaluation)

    results: dict[str, Any] = {}
    if training_args.do_train:
        train_result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
        trainer.save_model()  # with sparse_state.json when pruning, so `nn-prune optimize` can slim it later
        metrics = {**train_result.metrics, "train_samples": len(encoded["train"])}
        trainer.log_metrics("train", metrics)
        trainer.save_metrics("train", metrics)
        trainer.save_state()
        results.update(metrics)
    if training_args.do_eval:
        metrics = {**trainer.evaluate(), "eval_samples": len(encoded[data_args.eval_split_name])}
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", metrics)
        results.update(metrics)
    if sparse_args.prune:
        results.update(slim_evaluate_and_save(trainer, evaluation, results))
    return results


if __name__ == "__main__":
    main()
    # Leave the process group before exiting: a gloo rank that exits with it open can abort at shutdown.
    PartialState().destroy_process_group()
