"""Reading examples from a JSON-lines file into tokenized batches, for the commands that measure on data."""

from __future__ import annotations

import argparse
import json
import math
from typing import TYPE_CHECKING, Any

from ..validation import InputError, describe
from .arguments import whole_number

if TYPE_CHECKING:
    import torch  # imported where batches are made: the parsers of the commands need no torch


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


def _read_examples(path: str, columns: list[str], limit: int) -> list[tuple[int, dict[str, Any]]]:
    """Up to `limit` examples of the JSON-lines file `path`, each with its line number (for the error messages).

    Raises:
        InputError: Naming the file and line of the first example that is not UTF-8 text, not a JSON object or
            lacks one of `columns`; or when the file cannot be read or holds no examples.
    """
    examples = []
    try:
        handle = open(path, "rb")  # bytes, decoded line by line, so a bad byte is reported with its line
    except OSError as error:
        raise InputError(f"{path} cannot be read ({error.strerror}); give a readable JSON-lines file.") from None
    with handle:
        for number, raw in enumerate(handle, start=1):
            if len(examples) == limit:
                break
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise InputError(
                    f"Line {number} of {path} is not UTF-8 text (byte {raw[error.start]:#04x} at column "
                    f"{error.start + 1}); save the file as UTF-8."
                ) from None
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise InputError(
                    f"Line {number} of {path} is not valid JSON ({error.msg}, column {error.colno}); write one JSON "
                    "object per line."
                ) from None
            if not isinstance(record, dict):
                raise InputError(
                    f"Line {number} of {path} is a JSON {type(record).__name__}, not an object; write one object "
                    "per line, such as {\"text\": \"...\", \"label\": 0}."
                )
            missing = [column for column in columns if column not in record]
            if missing:
                raise InputError(
                    f"Line {number} of {path} has no field {missing[0]!r} (it has {sorted(record)}); name the "
                    "fields with --text-column, --text-pair-column and --label-column."
                )
            examples.append((number, record))
    if not examples:
        raise InputError(
            f"{path} holds no examples (it is empty or blank); write one JSON object per line, such as "
            '{"text": "...", "label": 0}.'
        )
    return examples


def _check_texts(examples: list[tuple[int, dict[str, Any]]], columns: list[str], path: str) -> None:
    """Refuse a text field that is not a string: the tokenizer would fail with a message naming no line."""
    for number, record in examples:
        for column in columns:
            if not isinstance(record[column], str):
                raise InputError(
                    f"Line {number} of {path}: field {column!r} is {describe(record[column])}, "
                    "not text; write a string there, or name the text fields with --text-column and --text-pair-column."
                )


def _labels(examples: list[tuple[int, dict[str, Any]]], column: str, path: str, config) -> list[int | float]:
    """The labels of `examples` as class ids of `config` (from ids or `label2id` names), or as regression targets.

    A checkpoint with `problem_type == "regression"` or a single label is a regression model: its labels are
    finite numbers. Otherwise they are all ids from 0 to `num_labels - 1` or all names of `config.label2id`.

    Raises:
        InputError: Naming the file, line and field of the first label the model cannot take: a fraction or float
            where class ids are expected (torch would refuse it deep inside the loss, or a regression loss would
            be computed silently), an id outside the classifier's labels (torch's "Target 7 is out of bounds"
            during the run), an unknown name, or ids mixed with names.
    """
    regression = getattr(config, "problem_type", None) == "regression" or config.num_labels == 1
    classes = config.num_labels
    fix = f"write class ids from 0 to {classes - 1} or names of config.label2id {sorted(config.label2id)[:8]}"
    values: list[int | float] = []
    first_kind: tuple[int, str] | None = None  # (line, "id" or "name") of the first label
    for number, record in examples:
        label = record[column]
        where = f"Line {number} of {path}, field {column!r}"
        if isinstance(label, bool) or not isinstance(label, (int, float, str)):
            raise InputError(
                f"{where}: the label {describe(label)} is not "
                + ("a number; the checkpoint is a regression model, write finite numbers." if regression else
                   f"a class id or name; {fix}.")
            )
        if regression:
            if isinstance(label, str) or not math.isfinite(label):
                raise InputError(
                    f"{where}: the label {label!r} is not a finite number, and the checkpoint is a regression model "
                    "(one output); write finite numbers."
                )
            values.append(float(label))
            continue
        if isinstance(label, float):
            raise InputError(
                f"{where}: the label {label!r} is a float, but the checkpoint classifies into {classes} labels; "
                f"{fix} (whole numbers such as 1, not 1.0)."
            )
        kind = "name" if isinstance(label, str) else "id"
        if first_kind is None:
            first_kind = (number, kind)
        elif kind != first_kind[1]:
            raise InputError(
                f"{where}: the label {label!r} is a {kind}, but line {first_kind[0]} has a label {first_kind[1]}; "
                "write all labels as ids or all as names."
            )
        if kind == "name":
            if label not in config.label2id:
                raise InputError(f"{where}: the label {label!r} is not in the checkpoint's label2id; {fix}.")
            values.append(config.label2id[label])
        elif not 0 <= label < classes:
            raise InputError(
                f"{where}: the label id {label} is outside the checkpoint's {classes} labels (0 to {classes - 1}); "
                f"{fix}, or pass --label-column '' for unlabelled data."
            )
        else:
            values.append(label)
    return values


def _check_token_ids(batch: dict[str, torch.Tensor], lines: list[int], path: str, source: str, config) -> None:
    """Refuse token ids or token type ids the model's embeddings do not have (an IndexError deep in torch)."""
    for key, limit_name, fix in (
        ("input_ids", "vocab_size", f"pass this checkpoint's own tokenizer with --tokenizer (now {source})"),
        ("token_type_ids", "type_vocab_size",
         "the model takes no second text: drop --text-pair-column, or pass a tokenizer made for this model"),
    ):
        limit = getattr(config, limit_name, None)
        if key not in batch or not isinstance(limit, int):
            continue
        beyond = (batch[key] >= limit).any(dim=1)
        if bool(beyond.any()):
            row = int(beyond.nonzero()[0])
            value = int(batch[key][row].max())
            raise InputError(
                f"Line {lines[row]} of {path}: the tokenizer gives {key} {value}, outside the model's {limit_name} "
                f"of {limit}; {fix}."
            )


def _load_tokenizer(source: str):
    """The tokenizer of `source`, with a pad token.

    Raises:
        InputError: When none can be loaded, it has only special tokens, or it has no token to pad with.
    """
    from transformers import AutoTokenizer

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
    return tokenizer


def examples_batches(args: argparse.Namespace, path: str, config) -> list[dict[str, torch.Tensor]]:
    """Tokenized batches of the JSON-lines file `path`, with `labels` unless `--label-column` is empty.

    Every example is checked before the first batch is returned, so a bad line stops the command before the
    pruning runs rather than in the middle of it.

    Args:
        args: Parsed arguments with the fields of `add_data_arguments` and `checkpoint`.
        path: The JSON-lines file.
        config: The model's config: `num_labels`, `label2id` and `problem_type` for the labels, `vocab_size`
            (and `type_vocab_size`) for the token ids.

    Returns:
        Up to `--max-batches` batches of `--batch-size` examples.

    Raises:
        InputError: For a tokenizer that cannot be loaded, or a line the model cannot take (naming the file, the
            line and the field).
    """
    import torch

    source = args.tokenizer or args.checkpoint
    tokenizer = _load_tokenizer(source)
    label_column = args.label_column or None
    texts = [args.text_column] + ([args.text_pair_column] if args.text_pair_column else [])
    examples = _read_examples(path, texts + ([label_column] if label_column else []), args.batch_size * args.max_batches)
    _check_texts(examples, texts, path)
    labels = _labels(examples, label_column, path, config) if label_column else None
    batches = []
    for start in range(0, len(examples), args.batch_size):
        chunk = [record for _, record in examples[start : start + args.batch_size]]
        pairs = [record[args.text_pair_column] for record in chunk] if args.text_pair_column else None
        batch = tokenizer([record[args.text_column] for record in chunk], pairs, padding=True, truncation=True,
                          max_length=args.max_length, return_tensors="pt")
        _check_token_ids(batch, [number for number, _ in examples[start : start + args.batch_size]], path, source,
                         config)
        if labels is not None:
            chunk_labels = labels[start : start + args.batch_size]
            dtype = torch.float32 if any(isinstance(label, float) for label in chunk_labels) else torch.long
            batch["labels"] = torch.tensor(chunk_labels, dtype=dtype)
        batches.append(dict(batch))
    return batches
