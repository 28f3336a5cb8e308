"""Reading examples from a JSON-lines file into tokenized batches, for the commands that measure on data."""

from __future__ import annotations

import argparse
import json
import math
from typing import Any

import torch

from ..validation import InputError
from .arguments import whole_number


def add_data_arguments(group: argparse._ArgumentGroup, *, batch_size: int, max_batches: int) -> None:
    """The flags of `examples_batches`: fields, tokenizer and batch sizes."""
    group.add_argument("--text-column", default="text", help="field holding the text (default: text)")
    group.add_argument("--text-pair-column", help="field holding the second text of sentence-pair tasks")
    group.add_argument("--label-column", default="label",
                       help="field holding the label, an id or a name (default: label); '' for unlabelled data")
    group.add_argument("--tokenizer", help="tokenizer name or folder (default: the checkpoint's own)")
    group.add_argument("--batch-size", type=whole_number(1), default=batch_size,
                       help=f"examples per batch (default: {batch_size})")
    group.add_argument("--max-batches", type=whole_number(1), default=max_batches,
                       help=f"batches to use (default: {max_batches})")
    group.add_argument("--max-length", type=whole_number(1), default=128,
                       help="truncate examples to this many tokens (default: 128)")


def _read_examples(path: str, columns: list[str], limit: int) -> list[dict[str, Any]]:
    examples = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if len(examples) == limit:
                break
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise InputError(
                    f"Line {number} of {path} is not valid JSON ({error.msg}); write one JSON object per line."
                ) from error
            if not isinstance(record, dict):
                raise InputError(f"Line {number} of {path} is not a JSON object; write one object per line.")
            missing = [column for column in columns if column not in record]
            if missing:
                raise InputError(
                    f"Line {number} of {path} has no field {missing[0]!r} (it has {sorted(record)}); name the "
                    "fields with --text-column, --text-pair-column and --label-column."
                )
            examples.append(record)
    if not examples:
        raise InputError(f"{path} holds no examples.")
    return examples


def _label_tensor(labels: list[Any], config) -> torch.Tensor:
    """The labels as ids of `config.label2id` (names or ids), or as float targets for a regression head.

    Raises:
        InputError: Mixed kinds, unknown names, ids outside the classifier's labels, or fractional numbers for a
            classifier (torch would fail deep inside the loss, or a regression loss would be computed silently).
    """
    classes = config.num_labels if getattr(config, "problem_type", None) != "regression" else 1
    if all(isinstance(label, str) for label in labels):
        unknown = sorted({label for label in labels if label not in config.label2id})
        if unknown:
            raise InputError(
                f"Labels {unknown[:5]} are not in the checkpoint's label2id {config.label2id}; "
                "write label ids (integers) or the names of config.label2id."
            )
        return torch.tensor([config.label2id[label] for label in labels])
    if all(isinstance(label, int) and not isinstance(label, bool) for label in labels):
        outside = sorted({label for label in labels if not 0 <= label < classes})
        if classes > 1 and outside:
            raise InputError(
                f"Label ids {outside[:5]} are outside the checkpoint's {classes} labels (0 to {classes - 1}); write "
                "ids of config.id2label, or --label-column '' for unlabelled data."
            )
        return torch.tensor(labels)
    if all(isinstance(label, (int, float)) and not isinstance(label, bool) for label in labels):
        if classes > 1:
            raise InputError(
                f"Labels {labels[:5]} are fractional numbers, but the checkpoint classifies into {classes} labels; "
                "write label ids (integers) or names of config.label2id."
            )
        if not all(math.isfinite(label) for label in labels):
            raise InputError(f"Regression targets must be finite numbers; got {labels[:5]}.")
        return torch.tensor(labels, dtype=torch.float32)  # regression targets
    raise InputError(f"Labels must be all ids, all names or all numbers; got {labels[:5]}.")


def examples_batches(args: argparse.Namespace, path: str, config) -> list[dict[str, torch.Tensor]]:
    """Tokenized batches of the JSON-lines file `path`, with `labels` unless `--label-column` is empty.

    Args:
        args: Parsed arguments with the fields of `add_data_arguments` and `checkpoint`.
        path: The JSON-lines file.
        config: The model's config, whose `label2id` maps label names to ids.

    Returns:
        Up to `--max-batches` batches of `--batch-size` examples.
    """
    from transformers import AutoTokenizer

    source = args.tokenizer or args.checkpoint
    hint = "Save the tokenizer into the checkpoint (tokenizer.save_pretrained) or pass --tokenizer NAME_OR_FOLDER."
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as error:
        raise InputError(f"Could not load a tokenizer from {source} ({error}). {hint}") from error
    # From a folder without tokenizer files, transformers v5 builds a tokenizer of special tokens
    # only, which would turn every word into the unknown token.
    if len(tokenizer) <= len(tokenizer.all_special_tokens):
        raise InputError(f"Could not load a tokenizer from {source}: it has only special tokens. {hint}")
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise InputError(f"The tokenizer of {source} has no pad or end-of-sequence token to pad batches with.")
        tokenizer.pad_token = tokenizer.eos_token  # decoder tokenizers usually ship without a pad token
    label_column = args.label_column or None
    columns = [args.text_column] + ([args.text_pair_column] if args.text_pair_column else [])
    columns += [label_column] if label_column else []
    examples = _read_examples(path, columns, args.batch_size * args.max_batches)
    batches = []
    for start in range(0, len(examples), args.batch_size):
        chunk = examples[start : start + args.batch_size]
        pairs = [example[args.text_pair_column] for example in chunk] if args.text_pair_column else None
        batch = tokenizer([example[args.text_column] for example in chunk], pairs, padding=True, truncation=True,
                          max_length=args.max_length, return_tensors="pt")
        vocab_size = getattr(config, "vocab_size", None)
        if isinstance(vocab_size, int) and int(batch["input_ids"].max()) >= vocab_size:
            raise InputError(
                f"The tokenizer of {source} gives token id {int(batch['input_ids'].max())}, outside the model's "
                f"vocabulary of {vocab_size}: pass this checkpoint's own tokenizer with --tokenizer."
            )
        if label_column:
            batch["labels"] = _label_tensor([example[label_column] for example in chunk], config)
        batches.append(dict(batch))
    return batches
