"""What a checkpoint's pruning keeps, as `nn-prune report` prints it.

`nn-prune report` imports this module once its arguments and paths are checked: it imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..arch import get_layout
from ..patch import densities, is_patched
from ..slim import LayerReport, SlimReport, kept_head_indices
from ..slim.layers import kept_layer_indices
from ..slim.model_card import SPEEDUP_KEY
from ..slim.modeling_slim import is_slim_config, slim_spec
from ..summary import summary

__all__ = ["CheckpointSummary", "summarize", "dense_head_numbers", "importance_table"]


@dataclass
class CheckpointSummary:
    """What a checkpoint keeps of its dense model.

    Args:
        description: The model class and what kind of checkpoint it is.
        report: Per layer, heads / key-value heads / FFN width as (dense, kept); parameters as (dense, kept).
        flops: FLOPs of the transformer layers for one sequence, (dense, kept).
        seq_len: The sequence length of `flops`.
        mask_densities: `nn_prune_ext.densities` of a patched checkpoint's masks, else `None`.
        measured_speedup: The speedup a slim checkpoint records (`record_measured_speedup`), else `None`.
    """

    description: str
    report: SlimReport
    flops: tuple[int, int]
    seq_len: int
    mask_densities: dict[str, float] | None = None
    measured_speedup: dict | None = None

    def __str__(self) -> str:
        lines = [self.description]
        if self.mask_densities is not None:
            lines.append(
                "mask densities at the final threshold: "
                + ", ".join(f"{kind} {value:.1%}" for kind, value in self.mask_densities.items())
            )
        lines += ["kept per layer (dense -> kept):", str(self.report)]
        dense, kept = self.flops
        lines.append(
            f"FLOPs of the transformer layers, one sequence of {self.seq_len} tokens: {dense:,} -> {kept:,} "
            f"({kept / max(dense, 1):.1%})"
        )
        measured = self.measured_speedup
        lines.append(
            f"measured speedup x{measured['speedup']:.2f} (batch {measured['batch_size']} x {measured['seq_len']} tokens, "
            f"{measured['device']}), as recorded in the checkpoint" if measured else
            "measured speedup: not recorded in this checkpoint; `nn-prune bench CHECKPOINT` measures it here"
        )
        return "\n".join(lines)


def summarize(model: nn.Module, slim: nn.Module, seq_len: int) -> CheckpointSummary:
    """Summarize a loaded checkpoint.

    Args:
        model: The checkpoint as `load_for_slimming` loads it.
        slim: What slimming keeps of it (`nn_prune_ext.plots.as_slim(model)`).
        seq_len: Sequence length for the FLOPs.

    Returns:
        The summary; every size is read from `slim` and its config's dense sizes (`nn_prune_ext.summary`).
    """
    described = summary(slim, seq_len)
    notes = _layer_notes(model, slim)
    layers = [
        LayerReport(
            index=layer.index,
            heads=(layer.dense_heads, layer.heads),
            kv_heads=(layer.dense_kv_heads, layer.kv_heads),
            ffn_width=(layer.dense_ffn_width, layer.ffn_width),
            notes=notes.get(layer.index) or (["dropped"] if layer.dropped else []),
            dropped=layer.dropped,
        )
        for layer in described.layers
    ]
    patched = is_patched(model)
    if patched:
        kind = "SparseTrainer checkpoint (patched; slimmed here at its final threshold)"
    elif slim is model:
        kind = "slim checkpoint"
    else:
        kind = "dense, baked or zero-filled checkpoint (slimmed here)"
    return CheckpointSummary(
        description=f"{type(model).__name__} ({model.config.model_type}), {kind}",
        report=SlimReport(layers, (described.dense_parameters, described.parameters)),
        flops=(described.dense_flops, described.flops),
        seq_len=seq_len,
        mask_densities=densities(model) if patched else None,
        measured_speedup=slim_spec(slim.config).get(SPEEDUP_KEY) if is_slim_config(slim.config) else None,
    )


def _layer_notes(model: nn.Module, slim: nn.Module) -> dict[int, list[str]]:
    """`optimize_model`'s notes per layer of the dense model (none when the checkpoint was slim already)."""
    report = getattr(slim, "slim_report", None)
    if report is None:
        return {}
    dense_index = kept_layer_indices(model.config)  # the slimmed model's layers, numbered in the dense model
    return {dense_index[layer.index]: list(layer.notes) for layer in report.layers}


def dense_head_numbers(model: nn.Module) -> list[list[int | None]] | None:
    """For every layer of `model` (in `iter_layers` order), the dense model's index of each of its heads.

    Args:
        model: The checkpoint as `load_for_slimming` loads it.

    Returns:
        What the slim config records for a slim model (`kept_head_indices`: `None` entries for the zero
        heads slimming added to fill a key/value group), the positions for any other model (its heads
        are the dense ones), `None` for a slim checkpoint saved before the heads were recorded.
    """
    if is_slim_config(model.config):
        return kept_head_indices(model)
    return [list(range(layer.num_heads)) for layer in get_layout(model).iter_layers(model)]


def importance_table(
    heads: torch.Tensor, layer_indices: list[int], head_numbers: list[list[int | None]] | None = None
) -> str:
    """The head importance of each layer as text rows, numbered like `nn_prune_ext.plots.plot_head_importance`.

    Args:
        heads: `[layers, heads]` importance of the checkpoint's layers, NaN beyond a slim layer's heads.
        layer_indices: The dense model's index of each row (`kept_layer_indices`).
        head_numbers: The dense model's index of each head of each row (`dense_head_numbers`): each score
            is written `head:score`, as the picture places it; zero heads slimming added (`None`) have
            no dense head and are left out, as in the picture. `None` where they are not known (a slim
            checkpoint saved before heads were recorded): the scores in the slim layer's order.

    Returns:
        A title line, then one row per layer.
    """
    if head_numbers is None:
        rows = ["head importance per layer (heads in the slim layer's order; this checkpoint does not record "
                "the dense model's head numbers):"]
    else:
        rows = ["head importance per layer (head:score, heads numbered as in the dense model):"]
    for row, (index, values) in enumerate(zip(layer_indices, heads.tolist())):
        kept = [value for value in values if value == value]  # drop the NaN padding of slim layers
        if head_numbers is None:
            cells = [f"{value:.3g}" for value in kept]
        else:
            cells = [f"{head}:{value:.3g}" for head, value in zip(head_numbers[row], kept) if head is not None]
        rows.append(f"{index:>5}  {' '.join(cells)}".rstrip())
    return "\n".join(rows)
