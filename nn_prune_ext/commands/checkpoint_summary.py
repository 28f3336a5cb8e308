"""What a checkpoint's pruning keeps, as `nn-prune report` prints it.

`nn-prune report` imports this module once its arguments and paths are checked: it imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..patch import densities, is_patched
from ..slim import LayerReport, SlimReport
from ..slim.layers import kept_layer_indices
from ..slim.model_card import SPEEDUP_KEY
from ..slim.modeling_slim import is_slim_config, slim_spec
from ..summary import summary

__all__ = ["CheckpointSummary", "summarize", "importance_table"]


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


def importance_table(heads: torch.Tensor, layer_indices: list[int]) -> str:
    """The head importance of each layer as text rows, the layers named by `layer_indices`."""
    rows = ["head importance per layer (heads in order):"]
    for index, values in zip(layer_indices, heads.tolist()):
        kept = [value for value in values if value == value]  # drop the NaN padding of slim layers
        rows.append(f"{index:>5}  {' '.join(f'{value:.3g}' for value in kept)}".rstrip())
    return "\n".join(rows)
