"""Inputs a model of a registered family takes, made up for checks and timing (no data needed).

The input kind is a property of the family (`ArchitectureLayout.input_kind`): `"text"` models take
`input_ids` and an `attention_mask`, `"pixels"` models `pixel_values`, `"seq2seq"` models (encoder-
decoders) also `decoder_input_ids`. Code that runs a model on made-up inputs (the check of a slim
model against its masked twin, latency tables) asks for them here instead of assuming text.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn

from .registry import get_layout
from ..validation import InputError

__all__ = ["probe_inputs", "seq2seq_inputs", "tokens_per_example", "check_batch"]


def probe_inputs(model: nn.Module, batch_size: int = 1, seq_len: int = 8, seed: int = 0) -> dict[str, torch.Tensor]:
    """Deterministic made-up inputs for `model`, on its device.

    Args:
        model: A model of a registered family.
        batch_size: Rows of the batch.
        seq_len: Tokens per row.
        seed: Seed of the token draw.

    Returns:
        Keyword arguments for `model(**inputs)`.
    """
    layout = get_layout(model)
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    if layout.input_kind == "pixels":  # seq_len does not apply: the image size sets the number of patches
        config = model.config
        shape = (batch_size, int(config.num_channels), int(config.image_size), int(config.image_size))
        dtype = next(model.parameters()).dtype
        return {"pixel_values": torch.randn(shape, generator=generator).to(device=device, dtype=dtype)}
    embeddings = model.get_input_embeddings()
    vocab = int(getattr(embeddings, "num_embeddings", None) or getattr(model.config, "vocab_size", 100))
    # Ids from 5 up: the special tokens (padding, start, end) sit at the bottom of most vocabularies.
    input_ids = torch.randint(min(5, vocab - 1), vocab, (batch_size, seq_len), generator=generator)
    inputs = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}
    if layout.input_kind == "seq2seq":
        inputs.update(seq2seq_inputs(model.config, input_ids))
    return {name: tensor.to(device) for name, tensor in inputs.items()}


def seq2seq_inputs(config, input_ids: torch.Tensor) -> dict[str, torch.Tensor]:
    """The encoder-decoder part of made-up inputs: rows that end with the end-of-sequence token (sequence
    classification heads read the decoder state there), and the decoder inputs they imply (shifted right
    behind the decoder's start token).

    Args:
        config: The model's config.
        input_ids: `[batch, length]` token ids, changed in place (the last column becomes the end token).

    Returns:
        `{"decoder_input_ids": ...}`.
    """
    eos = getattr(config, "eos_token_id", None)
    if isinstance(eos, int):
        input_ids[:, -1] = eos
    start = getattr(config, "decoder_start_token_id", None)
    start = start if isinstance(start, int) else getattr(config, "pad_token_id", None) or 0
    decoder_input_ids = torch.cat([torch.full_like(input_ids[:, :1], start), input_ids[:, :-1]], dim=1)
    return {"decoder_input_ids": decoder_input_ids}


def tokens_per_example(model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[int, int]:
    """`(real tokens, examples)` in a batch of `model`'s inputs.

    Text: the ones of `attention_mask` (all of `input_ids` without one). Pixels: one token per image
    patch plus the class token (`(image_size // patch_size) ** 2 + 1` per image).

    Raises:
        ValueError: If the batch lacks the inputs of the model's input kind.
    """
    kind = get_layout(model).input_kind
    key = "pixel_values" if kind == "pixels" else "input_ids"
    if key not in batch:
        raise InputError(f"A batch has no {key} (keys: {sorted(batch)}): pass the model's inputs ({kind}).")
    examples = int(batch[key].shape[0])
    if kind == "pixels":
        config = model.config
        return examples * ((int(config.image_size) // int(config.patch_size)) ** 2 + 1), examples
    mask = batch.get("attention_mask")
    return (int(mask.sum()) if mask is not None else batch[key].numel()), examples


def check_batch(model: nn.Module, batch: Any, index: int) -> None:
    """Refuse a batch `model` cannot run on, naming what is wrong, before it reaches the model.

    The input of the model's kind must be there (`input_ids` or `pixel_values`); token ids must lie in the
    vocabulary; labels must be what the model's loss takes: class ids in `[0, num_labels)` for a classifier
    (token ids, or -100 for ignored positions, for a generative model), numbers for a regression head.
    Without these checks torch fails deep inside the embedding or the loss (`IndexError: Target 7 is out of
    bounds`), or a regression loss is silently computed on class ids.

    Args:
        model: A model of a registered architecture.
        batch: One batch of inputs.
        index: Its position, for the message.

    Raises:
        InputError: Naming the batch and the problem.
    """
    if not isinstance(batch, Mapping):
        raise InputError(f"Batch {index} is a {type(batch).__name__}, not a mapping of input names to tensors.")
    kind = get_layout(model).input_kind
    key = "pixel_values" if kind == "pixels" else "input_ids"
    if not isinstance(batch.get(key), torch.Tensor):
        raise InputError(f"Batch {index} has no {key} tensor (keys: {sorted(batch)}): pass the model's inputs ({kind}).")
    config = model.config
    if kind != "pixels":
        ids = batch[key]
        vocab_size = getattr(config, "vocab_size", None)
        if ids.is_floating_point() or ids.is_complex():
            raise InputError(f"Batch {index}: input_ids are {ids.dtype}; token ids are integers.")
        if ids.numel() and (int(ids.min()) < 0 or (isinstance(vocab_size, int) and int(ids.max()) >= vocab_size)):
            raise InputError(
                f"Batch {index} has token ids from {int(ids.min())} to {int(ids.max())}, outside the model's vocabulary "
                f"[0, {vocab_size}): tokenize with the model's own tokenizer."
            )
    labels = batch.get("labels")
    if not isinstance(labels, torch.Tensor) or not labels.numel():
        return
    generative = getattr(model, "can_generate", lambda: False)()
    classes = config.vocab_size if generative else config.num_labels
    regression = not generative and (getattr(config, "problem_type", None) == "regression" or classes == 1)
    multi_label = getattr(config, "problem_type", None) == "multi_label_classification"
    if labels.is_floating_point():
        if not (regression or multi_label):
            raise InputError(
                f"Batch {index} has fractional labels (dtype {labels.dtype}), but the model predicts one of {classes} "
                "classes: pass class ids as integers (torch.long)."
            )
        if not bool(torch.isfinite(labels).all()):
            raise InputError(f"Batch {index} has NaN or infinite labels.")
        return
    if regression:
        return
    outside = labels[(labels != -100) & ((labels < 0) | (labels >= classes))]
    if outside.numel():
        raise InputError(
            f"Batch {index} has label {int(outside[0])}, outside the model's {classes} classes [0, {classes}) "
            "(-100 marks positions to ignore)."
        )
