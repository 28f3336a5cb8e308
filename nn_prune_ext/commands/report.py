"""`nn-prune report CKPT`: a text summary and PNG pictures of what a checkpoint's pruning keeps.

For every checkpoint it draws what each layer keeps of the dense model (`kept_per_layer.png`:
what a slim checkpoint kept, what slimming would keep of any other); for a `SparseTrainer`
checkpoint also the density of its masks at the final threshold (`mask_density.png`). With
`--importance-data` it measures head importance on labelled examples (`nn_prune_ext.importance`)
and draws it (`head_importance.png`). The pictures are those of `nn_prune_ext.plots`.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..checkpoints import load_for_slimming
from ..validation import InputError
from .arguments import checkpoint_folder, output_folder, whole_number
from .data import add_data_arguments, examples_batches
from ..importance import MaskImportance, collect_mask_gradients, fisher_importance, taylor_importance
from ..patch import densities, is_patched
from ..plots import INSTALL_HINT, as_slim, plot_head_importance, plot_kept_per_layer, plot_mask_density
from ..slim import LayerReport, SlimReport
from ..slim.layers import kept_layer_indices
from ..slim.model_card import SPEEDUP_KEY
from ..slim.modeling_slim import is_slim_config, slim_spec
from ..summary import summary

SUMMARY_NAME = "summary.txt"
# The names nn_prune_ext.plots gives these pictures (MASK_DENSITY_PICTURE, ...), spelled out here for the help text.
MASK_DENSITY_PICTURE = "mask_density.png"
KEPT_PICTURE = "kept_per_layer.png"
IMPORTANCE_PICTURE = "head_importance.png"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "report",
        help="print what a checkpoint's pruning keeps per layer and draw it as PNG pictures",
        description="Summarize a slim, SparseTrainer, baked or zero-filled checkpoint: heads, key/value heads "
        "and FFN width kept per layer against the dense model, parameters and FLOPs; write the summary and "
        f"PNG pictures ({KEPT_PICTURE}; {MASK_DENSITY_PICTURE} of a SparseTrainer checkpoint's masks; "
        f"{IMPORTANCE_PICTURE} with --importance-data).",
    )
    parser.add_argument("checkpoint", help="checkpoint folder")
    parser.add_argument("--output-dir", help="folder for the summary and pictures (default: CHECKPOINT-report)")
    parser.add_argument("--seq-len", type=whole_number(1), default=128, help="sequence length the FLOPs are counted for")
    parser.add_argument("--no-plots", action="store_true", help="write the text summary only (no matplotlib needed)")
    group = parser.add_argument_group(
        "head importance", "measured on labelled examples of a JSON-lines file (one object per line)"
    )
    group.add_argument("--importance-data", help="JSON-lines file of examples with a text and a label field")
    group.add_argument("--importance", choices=("taylor", "fisher"), default="taylor",
                       help="taylor: summed |gradient| (Michel et al.); fisher: summed squared gradient (Kwon et al.)")
    add_data_arguments(group, batch_size=16, max_batches=8)
    parser.set_defaults(run=run)


# ----- the summary ---------------------------------------------------------------------------
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


def _importance_table(heads: torch.Tensor, layer_indices: list[int]) -> str:
    rows = ["head importance per layer (heads in order):"]
    for index, values in zip(layer_indices, heads.tolist()):
        kept = [value for value in values if value == value]  # drop the NaN padding of slim layers
        rows.append(f"{index:>5}  {' '.join(f'{value:.3g}' for value in kept)}".rstrip())
    return "\n".join(rows)


# ----- the command ---------------------------------------------------------------------------
def _check_arguments(args: argparse.Namespace) -> None:
    for name in ("seq_len", "batch_size", "max_batches", "max_length"):
        if getattr(args, name) < 1:
            raise InputError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}.")
    # Checked before the model is loaded and the importance measured, not when the first picture is drawn.
    if not args.no_plots and importlib.util.find_spec("matplotlib") is None:
        raise InputError(f"The pictures need matplotlib: {INSTALL_HINT}, or pass --no-plots for the text only.")
    checkpoint_folder(str(args.checkpoint))
    if args.output_dir:
        output_folder(args.output_dir, "--output-dir")
    if args.importance_data and not os.path.isfile(args.importance_data):
        raise InputError(f"--importance-data {args.importance_data!r} is not a file.")


def run(args: argparse.Namespace) -> list[Path]:
    """Print the summary, write it and the pictures.

    Returns:
        The written files: `summary.txt`, then the pictures.
    """
    _check_arguments(args)
    checkpoint = Path(args.checkpoint).resolve()
    output_dir = Path(args.output_dir) if args.output_dir else checkpoint.with_name(f"{checkpoint.name}-report")
    model = load_for_slimming(checkpoint)
    slim = as_slim(model)
    text = str(summarize(model, slim, args.seq_len))
    importance: MaskImportance | None = None
    if args.importance_data:
        # On the checkpoint as loaded: a patched model's heads keep their dense numbering.
        batches = examples_batches(args, args.importance_data, model.config)
        importance = {"taylor": taylor_importance, "fisher": fisher_importance}[args.importance](
            collect_mask_gradients(model, batches)
        )
        # Rows are the checkpoint's layers; a slim one that lost layers names them by their dense index.
        layer_indices = kept_layer_indices(model.config)
        text += "\n" + _importance_table(importance.heads, layer_indices)
    print(text)

    output_dir.mkdir(parents=True, exist_ok=True)
    written = [output_dir / SUMMARY_NAME]
    written[0].write_text(text + "\n", encoding="utf-8")
    if not args.no_plots:
        written.append(plot_kept_per_layer(slim, output_dir / KEPT_PICTURE))
        if is_patched(model):  # only masks have a mask density; a slim model's sizes are in the picture above
            written.append(plot_mask_density(model, output_dir / MASK_DENSITY_PICTURE))
        if importance is not None:
            title = f"Head importance ({args.importance}, {len(batches)} batches of {Path(args.importance_data).name})"
            # Rows and heads as in the dense model; heads a slim checkpoint lost are marked removed.
            written.append(plot_head_importance(importance, output_dir / IMPORTANCE_PICTURE, title=title, model=model))
    print("written:\n" + "\n".join(f"  {path}" for path in written))
    return written
