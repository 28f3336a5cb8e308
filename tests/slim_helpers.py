"""Masked tiny models for the slimming tests."""

from __future__ import annotations

import torch

from nn_prune_ext import SparseArgs, get_layout, patch_model
from nn_prune_ext.scores import MaskScores

from conftest import tiny_model

# Raw-score thresholding at 0: a structure is kept when its score is positive, so a test sets
# exactly which heads and FFN units survive.
HEAD_AND_UNIT_ARGS = dict(
    attention_pruning_method="threshold",
    dense_pruning_method="threshold",
    attention_granularity="head",
    dense_granularity="unit",
    initial_threshold=0.0,
    final_threshold=0.0,
    regularization="disabled",
)


def masked_model(model_type: str, seed: int = 0, empty_last_layer: bool = True, **config_overrides):
    """A tiny patched model with random head and FFN-unit masks.

    In every layer but the last, each head / KV head / FFN unit survives with probability 0.6, and
    the first survives and the last dies for sure; the last layer loses everything when
    `empty_last_layer`.
    """
    model = tiny_model(model_type, seed=seed, **config_overrides)
    patch_model(model, SparseArgs(**HEAD_AND_UNIT_ARGS))
    generator = torch.Generator().manual_seed(seed)
    layers = get_layout(model).layer_list(model)
    with torch.no_grad():
        for index, layer in enumerate(layers):
            for scores in (module for module in layer.modules() if isinstance(module, MaskScores)):
                values = torch.rand(scores.shape, generator=generator) - 0.4
                values[0], values[-1] = 1.0, -1.0
                if empty_last_layer and index == len(layers) - 1:
                    values.fill_(-1.0)
                scores.scores.copy_(values)
    return model.eval()


def train_half_the_heads_and_units(model, rows: dict[str, list], output_dir: str, steps: int = 4) -> None:
    """A few SparseTrainer steps that end keeping half of every layer's heads and FFN units (topK).

    Args:
        model: A tiny classifier.
        rows: The training columns (`input_ids`, `attention_mask`, `labels`), one list entry per example.
        output_dir: Where the Trainer may write (nothing is saved).
        steps: Optimizer steps.
    """
    from datasets import Dataset
    from transformers import TrainingArguments

    from nn_prune_ext import SparseTrainer

    sparse_args = SparseArgs(
        attention_pruning_method="topK", dense_pruning_method="topK", attention_granularity="head",
        dense_granularity="unit", initial_threshold=1.0, final_threshold=0.5, initial_warmup=0, final_warmup=0,
        regularization="disabled",
    )
    args = TrainingArguments(
        output_dir, max_steps=steps, per_device_train_batch_size=8, learning_rate=1e-3, report_to=[],
        save_strategy="no", use_cpu=True, seed=0, disable_tqdm=True,
    )
    SparseTrainer(model=model, args=args, train_dataset=Dataset.from_dict(rows), sparse_args=sparse_args).train()
