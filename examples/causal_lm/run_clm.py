#!/usr/bin/env python
"""Fine-tune a causal language model (Llama family) while pruning it, then slim it.

    python examples/causal_lm/run_clm.py \
        --model_name_or_path PATH_OR_HUB_ID \
        --train_file examples/causal_lm/sample/train.txt \
        --validation_file examples/causal_lm/sample/validation.txt \
        --do_train --do_eval --output_dir out/clm \
        --attention_granularity head --dense_granularity unit --final_threshold 0.5

    accelerate launch examples/causal_lm/run_clm.py ...   # the same, on several processes

Texts (a dataset through `--dataset_name`, or local `.txt`/`.json`/`.jsonl`/`.csv` files) are
tokenized, concatenated and cut into blocks of `--block_size` tokens. `SparseTrainer` fine-tunes
and prunes the model with the `SparseArgs` flags; evaluation reports the loss, the perplexity
(`exp(loss)`) and the next-token accuracy. When pruning (`--prune`, the default), the pruned
model is then slimmed with `optimize_model`, evaluated the same way, compared with the masked
model, and saved with the tokenizer to `<output_dir>/slim`. A few greedily generated tokens from
the slim model are printed as a smoke check.
"""

from __future__ import annotations

import logging
import math
import os
import sys
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any

import datasets
import evaluate
import torch
import transformers
from accelerate import PartialState
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    EvalPrediction,
    HfArgumentParser,
    PreTrainedTokenizerBase,
    Trainer,
    TrainingArguments,
    default_data_collator,
    set_seed,
)

from nn_prune_ext import SparseArgs, SparseTrainer, get_layout, optimize_model

logger = logging.getLogger(__name__)

# The accuracy metric script the repository ships: `evaluate` loads it from a path, offline.
ACCURACY_METRIC = Path(__file__).resolve().parent.parent / "metrics" / "accuracy"
# File extension -> `datasets` builder.
FILE_BUILDERS = {".txt": "text", ".json": "json", ".jsonl": "json", ".csv": "csv"}
SLIM_DIR = "slim"


@dataclass
class ModelArguments:
    """Which model and tokenizer to fine-tune."""

    model_name_or_path: str = field(metadata={"help": "Model folder or Hub id of a causal LM (Llama family)."})
    tokenizer_name: str | None = field(
        default=None, metadata={"help": "Tokenizer folder or Hub id, if not the model's own."}
    )
    cache_dir: str | None = field(default=None, metadata={"help": "Where downloaded models and datasets are cached."})
    model_revision: str = field(default="main", metadata={"help": "Branch, tag or commit of the model on the Hub."})
    token: str | None = field(default=None, metadata={"help": "Hub token, for private models and datasets."})
    trust_remote_code: bool = field(
        default=False,
        metadata={"help": "Run modeling code stored with the model (e.g. to fine-tune a slim checkpoint again)."},
    )
    dtype: str | None = field(
        default=None,
        metadata={
            "help": "dtype to load the weights in: 'auto' (the checkpoint's), 'float32', 'bfloat16' or 'float16'.",
            "choices": ["auto", "float32", "bfloat16", "float16"],
        },
    )


@dataclass
class DataArguments:
    """Which texts to train and evaluate on, and how to cut them into blocks."""

    dataset_name: str | None = field(default=None, metadata={"help": "Dataset name for datasets.load_dataset."})
    dataset_config_name: str | None = field(default=None, metadata={"help": "Configuration of that dataset."})
    train_file: str | None = field(
        default=None, metadata={"help": "Training texts: a .txt file (one text per line) or .json/.jsonl/.csv."}
    )
    validation_file: str | None = field(
        default=None, metadata={"help": "Evaluation texts, in the same formats as train_file."}
    )
    text_column: str = field(
        default="text", metadata={"help": "Column holding the text in .json/.jsonl/.csv files and datasets."}
    )
    validation_split_percentage: int = field(
        default=5,
        metadata={"help": "Percentage of the training texts held out for evaluation when there is no validation set."},
    )
    block_size: int | None = field(
        default=None,
        metadata={
            "help": "Tokens per training block; the concatenated texts are cut into blocks of this size. Default: "
            "the model's maximum length, at most 1024."
        },
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Use at most this many training blocks."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Use at most this many evaluation blocks."})
    keep_linebreaks: bool = field(default=True, metadata={"help": "Keep the line breaks of .txt files."})
    preprocessing_num_workers: int | None = field(
        default=None, metadata={"help": "Processes for tokenizing and grouping."}
    )
    overwrite_cache: bool = field(default=False, metadata={"help": "Redo the preprocessing even if cached."})
    generation_prompt: str = field(
        default="The river", metadata={"help": "Prompt the slim model continues as a smoke check."}
    )
    generation_tokens: int = field(default=10, metadata={"help": "Tokens to generate from the prompt (0: skip)."})

    def __post_init__(self):
        if self.dataset_name is None and self.train_file is None and self.validation_file is None:
            raise ValueError("Give texts: --dataset_name NAME, or --train_file and/or --validation_file.")
        for name in ("train_file", "validation_file"):
            path = getattr(self, name)
            if path is None:
                continue
            if Path(path).suffix not in FILE_BUILDERS:
                raise ValueError(
                    f"--{name} {path}: the extension must be one of {', '.join(FILE_BUILDERS)} "
                    "(.txt: one text per line; .json/.jsonl/.csv: a column named by --text_column)."
                )
            if not Path(path).is_file():
                raise ValueError(f"--{name} {path}: no such file.")
        if not 0 < self.validation_split_percentage < 100:
            raise ValueError(
                f"--validation_split_percentage must be between 0 and 100, got {self.validation_split_percentage}."
            )


# ----- data --------------------------------------------------------------------------------
def load_texts(data_args: DataArguments, model_args: ModelArguments, seed: int) -> datasets.DatasetDict:
    """Load the raw texts.

    Args:
        data_args: Where the texts are (`dataset_name`, or `train_file` / `validation_file`).
        model_args: For the Hub cache and token.
        seed: Seed of the held-out split.

    Returns:
        The splits of the dataset or files; without a validation split, `validation_split_percentage`
        of the training texts is held out as one.
    """
    hub = dict(cache_dir=model_args.cache_dir, token=model_args.token)
    if data_args.dataset_name is not None:
        raw = datasets.load_dataset(data_args.dataset_name, data_args.dataset_config_name, **hub)
    else:
        files = {
            split: path
            for split, path in (("train", data_args.train_file), ("validation", data_args.validation_file))
            if path is not None
        }
        builders = {FILE_BUILDERS[Path(path).suffix] for path in files.values()}
        if len(builders) > 1:
            raise ValueError(f"--train_file and --validation_file must have the same format, got {sorted(files.values())}.")
        builder = builders.pop()
        options = {"keep_linebreaks": data_args.keep_linebreaks} if builder == "text" else {}
        raw = datasets.load_dataset(builder, data_files=files, **options, **hub)
    if "validation" not in raw and "train" in raw:
        held_out = raw["train"].train_test_split(test_size=data_args.validation_split_percentage / 100, seed=seed)
        raw = datasets.DatasetDict(train=held_out["train"], validation=held_out["test"])
    return raw


def resolve_block_size(requested: int | None, tokenizer: PreTrainedTokenizerBase, config) -> int:
    """Check `--block_size`, or choose one.

    Args:
        requested: `--block_size`, or `None`.
        tokenizer: Its `model_max_length` bounds the block.
        config: Its `max_position_embeddings` bounds the block.

    Returns:
        `requested`, or the longest block the model and the tokenizer take, at most 1024.
    """
    limit = min(tokenizer.model_max_length, getattr(config, "max_position_embeddings", tokenizer.model_max_length))
    if requested is None:
        return min(limit, 1024)
    if requested < 2:
        raise ValueError(f"--block_size must be at least 2 (a token and the next one to predict), got {requested}.")
    if requested > limit:
        raise ValueError(f"--block_size {requested} is longer than the model takes ({limit}); pass at most {limit}.")
    return requested


def group_texts(examples: dict[str, list], block_size: int) -> dict[str, list]:
    """Concatenate tokenized texts and cut them into blocks.

    Args:
        examples: A batch of tokenized texts (`input_ids`, `attention_mask`, ...).
        block_size: Tokens per block; the remainder of the batch is dropped.

    Returns:
        The blocks, with `labels` a copy of `input_ids` (the model shifts them by one itself).
    """
    concatenated = {key: list(chain.from_iterable(values)) for key, values in examples.items()}
    total = len(next(iter(concatenated.values()))) // block_size * block_size
    blocks = {key: [values[i : i + block_size] for i in range(0, total, block_size)] for key, values in concatenated.items()}
    blocks["labels"] = [list(block) for block in blocks["input_ids"]]
    return blocks


def tokenize_into_blocks(
    raw: datasets.DatasetDict,
    tokenizer: PreTrainedTokenizerBase,
    data_args: DataArguments,
    training_args: TrainingArguments,
    block_size: int,
) -> datasets.DatasetDict:
    """Tokenize every split and cut it into blocks.

    The main process goes first, so that the others read its cached results.

    Args:
        raw: The texts, by split.
        tokenizer: The model's tokenizer.
        data_args: `text_column` and the preprocessing options.
        training_args: For `main_process_first`.
        block_size: Tokens per block.

    Returns:
        The blocks, by split. Raises `ValueError` for a split too short to fill one block.
    """
    columns = raw[next(iter(raw))].column_names
    if data_args.text_column not in columns:
        raise ValueError(f"The texts have no column {data_args.text_column!r} (columns: {columns}); set --text_column.")
    common = dict(batched=True, num_proc=data_args.preprocessing_num_workers,
                  load_from_cache_file=not data_args.overwrite_cache)
    with training_args.main_process_first(desc="tokenizing"):
        tokenized = raw.map(
            # Causal LMs take no token type ids (BERT-style tokenizers would add them).
            lambda batch: tokenizer(batch[data_args.text_column], return_token_type_ids=False),
            remove_columns=columns,
            desc="Tokenizing",
            **common,
        )
    with training_args.main_process_first(desc="grouping into blocks"):
        blocks = tokenized.map(
            group_texts, fn_kwargs={"block_size": block_size}, desc=f"Grouping into blocks of {block_size}", **common
        )
    for split, dataset in blocks.items():
        if len(dataset) == 0:
            tokens = sum(len(ids) for ids in tokenized[split]["input_ids"])
            raise ValueError(
                f"The {split} texts hold {tokens} tokens, fewer than one block of {block_size}; give more text or a "
                "smaller --block_size."
            )
    return blocks


def select(dataset: datasets.Dataset, limit: int | None) -> datasets.Dataset:
    return dataset if limit is None else dataset.select(range(min(limit, len(dataset))))


# ----- metrics -----------------------------------------------------------------------------
def predicted_tokens(logits: torch.Tensor | tuple, labels: torch.Tensor) -> torch.Tensor:
    """Keep only the argmax of the logits: evaluation then gathers token ids, not vocabulary-wide logits."""
    if isinstance(logits, tuple):
        logits = logits[0]
    return logits.argmax(dim=-1)


def token_accuracy_metric():
    """A `compute_metrics` for the Trainer: next-token accuracy with the shipped accuracy metric."""
    # keep_in_memory: every process computes on the gathered predictions, with no shared cache files.
    metric = evaluate.load(str(ACCURACY_METRIC), keep_in_memory=True)

    def compute_metrics(prediction: EvalPrediction) -> dict[str, float]:
        predictions, labels = prediction.predictions, prediction.label_ids
        # The prediction at position i is for the token at i + 1.
        predictions, labels = predictions[:, :-1].reshape(-1), labels[:, 1:].reshape(-1)
        keep = labels != -100
        return metric.compute(predictions=predictions[keep], references=labels[keep])

    return compute_metrics


def with_perplexity(metrics: dict[str, float], prefix: str) -> dict[str, float]:
    """Add `<prefix>_perplexity`, `exp(<prefix>_loss)` (infinite when that overflows)."""
    try:
        metrics[f"{prefix}_perplexity"] = math.exp(metrics[f"{prefix}_loss"])
    except OverflowError:
        metrics[f"{prefix}_perplexity"] = float("inf")
    return metrics


# ----- the slim model ----------------------------------------------------------------------
def generate_text(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, prompt: str, new_tokens: int) -> str:
    """Greedily continue a prompt: a smoke check that generation runs (slim layers, empty ones included).

    Args:
        model: A causal LM.
        tokenizer: Its tokenizer (with a pad token).
        prompt: The text to continue.
        new_tokens: How many tokens to generate.

    Returns:
        The decoded prompt and continuation, special tokens left out.
    """
    inputs = tokenizer(prompt, return_tensors="pt", return_token_type_ids=False).to(model.device)
    with torch.inference_mode():
        output = model.generate(
            **inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
        )
    return tokenizer.decode(output[0], skip_special_tokens=True)


def comparison_table(masked: dict[str, float], slim: dict[str, float]) -> str:
    """Masked (dense shapes) against slim: perplexity, accuracy, parameters."""
    rows = [("perplexity", "eval_perplexity", "slim_perplexity", "{:.3f}"),
            ("next-token accuracy", "eval_accuracy", "slim_accuracy", "{:.4f}"),
            ("parameters", "dense_parameters", "slim_parameters", "{:,}")]
    lines = [f"{'':<20} {'masked':>14} {'slim':>14}"]
    for label, masked_key, slim_key, form in rows:
        lines.append(f"{label:<20} {form.format(masked[masked_key]):>14} {form.format(slim[slim_key]):>14}")
    return "\n".join(lines)


def evaluate_model(trainer: SparseTrainer, **extra: Any) -> dict[str, float]:
    """Evaluate the trainer's model (masked at its final thresholds when pruning); log and save the metrics.

    Args:
        trainer: The `SparseTrainer` holding the model.
        extra: Entries added to the metrics before they are logged and saved.

    Returns:
        The `eval_*` metrics with perplexity and `extra`, also saved as `eval_results.json`.
    """
    metrics = {**with_perplexity(trainer.evaluate(), "eval"), **extra}
    trainer.log_metrics("eval", metrics)
    trainer.save_metrics("eval", metrics)
    return metrics


def evaluate_masked_and_slim(trainer: SparseTrainer, slim: torch.nn.Module) -> dict[str, float]:
    """Evaluate the masked model and the slim one the same way; log, save and compare the metrics.

    Args:
        trainer: The `SparseTrainer` holding the masked model (evaluated at its final threshold).
        slim: `optimize_model` of that model.

    Returns:
        `eval_*` metrics of the masked model and `slim_*` ones of the slim model, with perplexity
        and parameter counts; they are also saved as `eval_results.json` and `slim_results.json`.
    """
    dense_parameters, slim_parameters = slim.slim_report.parameters
    masked = evaluate_model(trainer, dense_parameters=dense_parameters)
    # A plain Trainer with the same data, collator and metric: the slim model is not patched.
    slim_trainer = Trainer(
        model=slim, args=trainer.args, eval_dataset=trainer.eval_dataset, data_collator=trainer.data_collator,
        processing_class=trainer.processing_class, compute_metrics=trainer.compute_metrics,
        preprocess_logits_for_metrics=trainer.preprocess_logits_for_metrics,
    )
    slimmed = with_perplexity(slim_trainer.evaluate(metric_key_prefix="slim"), "slim")
    slimmed.pop("epoch", None)  # that trainer never trained: its epoch 0 would hide the real one
    slimmed["slim_parameters"] = slim_parameters
    trainer.log_metrics("slim", slimmed)
    trainer.save_metrics("slim", slimmed)
    if trainer.is_world_process_zero():
        print("masked model (dense shapes) against slim model:\n" + comparison_table(masked, slimmed))
    return {**masked, **slimmed}


def slim_evaluate_and_save(trainer: SparseTrainer, data_args: DataArguments) -> dict[str, Any]:
    """Slim the pruned model, evaluate it against the masked one, save it to `<output_dir>/slim`.

    Args:
        trainer: The `SparseTrainer` holding the pruned (masked) model and the tokenizer.
        data_args: The generation prompt and number of tokens of the smoke check.

    Returns:
        The `eval_*` and `slim_*` metrics (with `--do_eval`) and the generated smoke-check text.
    """
    # The heads and FFN units the masks emptied leave the weights. Slim at the thresholds evaluation
    # uses (the final ones), which a run without training has not reached.
    with trainer.controller.evaluation(trainer.model):
        slim = optimize_model(trainer.model)
    results: dict[str, Any] = evaluate_masked_and_slim(trainer, slim) if trainer.args.do_eval else {}
    trainer.accelerator.wait_for_everyone()  # all ranks have finished evaluating before the main one writes
    if trainer.is_world_process_zero():
        print(slim.slim_report)
        slim_dir = Path(trainer.args.output_dir) / SLIM_DIR
        slim.save_pretrained(slim_dir)
        trainer.processing_class.save_pretrained(slim_dir)
        print(f"slim checkpoint and tokenizer written to {slim_dir}")
        if data_args.generation_tokens > 0:
            results["generated"] = generate_text(slim, trainer.processing_class, data_args.generation_prompt,
                                                 data_args.generation_tokens)
            print(f"slim model generates: {results['generated']!r}")
    return results


# ----- the script --------------------------------------------------------------------------
def setup_logging(training_args: TrainingArguments) -> None:
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", datefmt="%m/%d/%Y %H:%M:%S",
                        handlers=[logging.StreamHandler(sys.stdout)])
    level = training_args.get_process_log_level()
    logger.setLevel(level)
    datasets.utils.logging.set_verbosity(level)
    transformers.utils.logging.set_verbosity(level)


def parse_arguments(argv: list[str] | None = None) -> tuple[ModelArguments, DataArguments, TrainingArguments, SparseArgs]:
    """The four argument dataclasses, from the command line or from a single .json file of them."""
    parser = HfArgumentParser((ModelArguments, DataArguments, TrainingArguments, SparseArgs))
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 1 and argv[0].endswith(".json"):
        return parser.parse_json_file(json_file=os.path.abspath(argv[0]))
    return parser.parse_args_into_dataclasses(args=argv)


def load_model_and_tokenizer(model_args: ModelArguments) -> tuple[torch.nn.Module, PreTrainedTokenizerBase]:
    """The causal LM and its tokenizer; fails early for an architecture nn_prune_ext has no layout for."""
    hub = dict(cache_dir=model_args.cache_dir, revision=model_args.model_revision, token=model_args.token,
               trust_remote_code=model_args.trust_remote_code)
    config = AutoConfig.from_pretrained(model_args.model_name_or_path, **hub)
    get_layout(config)  # raises UnsupportedArchitectureError, naming the supported types, before weights load
    tokenizer = AutoTokenizer.from_pretrained(model_args.tokenizer_name or model_args.model_name_or_path, **hub)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token  # Llama tokenizers have none; generate needs one
    dtype = {"dtype": model_args.dtype} if model_args.dtype else {}
    model = AutoModelForCausalLM.from_pretrained(model_args.model_name_or_path, config=config, **dtype, **hub)
    if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tokenizer))
    return model, tokenizer


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the example.

    Args:
        argv: Command-line arguments (default: `sys.argv[1:]`), or the path of one .json file.

    Returns:
        The train metrics, the `eval_*` and `slim_*` metrics, and the generated smoke-check text.
    """
    model_args, data_args, training_args, sparse_args = parse_arguments(argv)
    setup_logging(training_args)
    set_seed(training_args.seed)
    model, tokenizer = load_model_and_tokenizer(model_args)

    block_size = resolve_block_size(data_args.block_size, tokenizer, model.config)
    raw = load_texts(data_args, model_args, training_args.seed)
    blocks = tokenize_into_blocks(raw, tokenizer, data_args, training_args, block_size)
    train_dataset = select(blocks["train"], data_args.max_train_samples) if "train" in blocks else None
    if training_args.do_train and train_dataset is None:
        raise ValueError("--do_train needs training texts: --train_file or a dataset with a train split.")
    trainer = SparseTrainer(
        model=model,
        args=training_args,
        sparse_args=sparse_args,
        train_dataset=train_dataset,
        eval_dataset=select(blocks["validation"], data_args.max_eval_samples),
        processing_class=tokenizer,
        data_collator=default_data_collator,  # blocks are all block_size long: nothing to pad
        compute_metrics=token_accuracy_metric(),
        preprocess_logits_for_metrics=predicted_tokens,
    )
    results: dict[str, Any] = {}
    if training_args.do_train:
        train_result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
        trainer.save_model()
        trainer.log_metrics("train", train_result.metrics)
        trainer.save_metrics("train", train_result.metrics)
        trainer.save_state()
        results.update(train_result.metrics)
    if sparse_args.prune:
        results.update(slim_evaluate_and_save(trainer, data_args))
    elif training_args.do_eval:
        results.update(evaluate_model(trainer))  # nothing was pruned, so there is nothing to slim
    return results


if __name__ == "__main__":
    main()
    # Leave the process group before exiting: a gloo rank that exits with it open can abort at shutdown.
    PartialState().destroy_process_group()
