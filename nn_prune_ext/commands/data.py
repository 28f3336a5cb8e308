"""Reading examples from a JSON-lines file into tokenized batches, for the commands that measure on data."""

from __future__ import annotations

import argparse
import json
from typing import Any

import torch


def add_data_arguments(group: argparse._ArgumentGroup, *, batch_size: int, max_batches: int) -> None:
    """The flags of `examples_batches`: fields, tokenizer and batch sizes."""
    group.add_argument("--text-column", default="text", help="field holding the text (default: text)")
    group.add_argument("--text-pair-column", help="field holding the second text of sentence-pair tasks")
    group.add_argument("--label-column", default="label",
                       help="field holding the label, an id or a name (default: label); '' for unlabelled data")
    group.add_argument("--tokenizer", help="tokenizer name or folder (default: the checkpoint's own)")
    group.add_argument("--batch-size", type=int, default=batch_size, help=f"examples per batch (default: {batch_size})")
    group.add_argument("--max-batches", type=int, default=max_batches, help=f"batches to use (default: {max_batches})")
    group.add_argument("--max-length", type=int, default=128, help="truncate examples to this many tokens")


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
                raise ValueError(
                    f"Line {number} of {path} is not valid JSON ({error.msg}); write one JSON object per line."
                ) from error
            if not isinstance(record, dict):
                raise ValueError(f"Line {number} of {path} is not a JSON object; write one object per line.")
            missing = [column for column in columns if column not in record]
            if missing:
                raise ValueError(
                    f"Line {number} of {path} has no field {missing[0]!r} (it has {sorted(record)}); name the "
                    "fields with --text-column, --text-pair-column and --label-column."
                )
            examples.append(record)
    if not examples:
        raise ValueError(f"{path} holds no examples.")
    return examples


def _label_tensor(labels: list[Any], config) -> torch.Tensor:
    if all(isinstance(label, str) for label in labels):
        unknown = sorted({label for label in labels if label not in config.label2id})
        if unknown:
            raise ValueError(
                f"Labels {unknown[:5]} are not in the checkpoint's label2id {config.label2id}; "
                "write label ids (integers) or the names of config.label2id."
            )
        return torch.tensor([config.label2id[label] for label in labels])
    if all(isinstance(label, int) and not isinstance(label, bool) for label in labels):
        return torch.tensor(labels)
    if all(isinstance(label, (int, float)) and not isinstance(label, bool) for label in labels):
        return torch.tensor(labels, dtype=torch.float32)  # regression targets
    raise ValueError(f"Labels must be all ids, all names or all numbers; got {labels[:5]}.")


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
        raise ValueError(f"Could not load a tokenizer from {source} ({error}). {hint}") from error
    # From a folder without tokenizer files, transformers v5 builds a tokenizer of special tokens
    # only, which would turn every word into the unknown token.
    if len(tokenizer) <= len(tokenizer.all_special_tokens):
        raise ValueError(f"Could not load a tokenizer from {source}: it has only special tokens. {hint}")
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError(f"The tokenizer of {source} has no pad or end-of-sequence token to pad batches with.")
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
        if label_column:
            batch["labels"] = _label_tensor([example[label_column] for example in chunk], config)
        batches.append(dict(batch))
    return batches
