"""Inputs a model of a registered family takes, made up for checks and timing (no data needed).

The input kind is a property of the family (`ArchitectureLayout.input_kind`): `"text"` models take
`input_ids` and an `attention_mask`. Code that runs a model on made-up inputs (the check of a slim
model against its masked twin, latency tables) asks for them here instead of assuming text.
"""

from __future__ import annotations

import torch
from torch import nn

from .registry import get_layout

__all__ = ["probe_inputs"]


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
    if layout.input_kind != "text":
        raise NotImplementedError(f"No made-up inputs for input kind {layout.input_kind!r}.")
    embeddings = model.get_input_embeddings()
    vocab = int(getattr(embeddings, "num_embeddings", None) or getattr(model.config, "vocab_size", 100))
    generator = torch.Generator().manual_seed(seed)
    # Ids from 5 up: the special tokens (padding, start, end) sit at the bottom of most vocabularies.
    input_ids = torch.randint(min(5, vocab - 1), vocab, (batch_size, seq_len), generator=generator)
    return {"input_ids": input_ids.to(device), "attention_mask": torch.ones_like(input_ids, device=device)}
