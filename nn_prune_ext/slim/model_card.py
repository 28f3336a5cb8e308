"""The model card (`README.md`) and its picture of what each layer kept (`kept_per_layer.svg`), written into every slim checkpoint."""

from __future__ import annotations

import os
from html import escape

from torch import nn

from ..flops import LayerShape, dense_layer_shapes, kept_layer_shapes, model_flops
from . import modeling_slim
from .layers import dropped_layer_indices
from .optimize import count_parameters

__all__ = ["write_model_card", "kept_per_layer_svg", "record_measured_speedup", "FLOPS_SEQ_LEN", "PICTURE_NAME"]

FLOPS_SEQ_LEN = 128
# The SVG twin of `nn_prune_ext.plots.plot_kept_per_layer` (kept_per_layer.png): same name, same meaning.
# Checkpoints saved by earlier versions hold it as density.svg; nothing reads either file back.
PICTURE_NAME = "kept_per_layer.svg"
PICTURE_TITLE = "Kept per layer, as a share of the dense model"
SPEEDUP_KEY = "measured_speedup"  # in the slim description of the config: what the card reports


def record_measured_speedup(
    model: nn.Module, speedup: float, *, batch_size: int, seq_len: int, device: str, threads: int | None = None
) -> None:
    """Record a speedup measured against the dense model in `model`'s config, for its model card.

    The next `save_pretrained` writes it into `config.json` and into the card's size table, beside
    the FLOPs ratio; the latest measurement replaces an earlier one.

    Args:
        model: A slim model.
        speedup: Dense latency over slim latency, measured side by side (`compare_latency`).
        batch_size: Sequences per timed forward.
        seq_len: Tokens per sequence.
        device: Where it was measured, in words (e.g. "2-core CPU, torch 2.13").
        threads: Intra-op threads while timing, if set.
    """
    if not (isinstance(speedup, (int, float)) and speedup > 0):
        raise modeling_slim._input_error(f"speedup must be a positive number, got {speedup!r}.")
    modeling_slim.slim_spec(model.config)[SPEEDUP_KEY] = dict(
        speedup=float(speedup), batch_size=int(batch_size), seq_len=int(seq_len), device=str(device), threads=threads
    )


def _speedup_row(spec: dict) -> str:
    measured = spec.get(SPEEDUP_KEY)
    if not measured:
        return ("| measured speedup | | not measured | `nn-prune bench <this folder>` measures it on your "
                "hardware |")
    threads = f", {measured['threads']} threads" if measured.get("threads") else ""
    return (f"| measured speedup, batch {measured['batch_size']} x {measured['seq_len']} tokens | 1 | "
            f"x{measured['speedup']:.2f} | {escape(measured['device'])}{threads} |")


def kept_per_layer_svg(dense: list[LayerShape], slim: list[LayerShape], dropped: frozenset[int] = frozenset()) -> str:
    """A bar chart of the share of the dense model's heads and FFN units each layer keeps, as SVG text.

    Each layer has a bar for its attention heads and one for its FFN units, over a grey bar of the
    dense size (100%), labelled kept/dense: what `nn_prune_ext.plots.plot_kept_per_layer` draws.

    Args:
        dense: The shape of every layer of the dense model (`dense_layer_shapes`).
        slim: What the slim model keeps of each of them (`kept_layer_shapes`).
        dropped: Indices of the layers of the dense model that were dropped whole.

    Returns:
        The SVG document.
    """
    row, bar, label_width, chart_width = 26, 9, 110, 360
    top = 44  # the title and the legend above the bars
    height = top + 4 + row * len(slim)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{label_width + chart_width + 70}" height="{height}" '
        'font-family="sans-serif" font-size="11">',
        f"<title>{escape(PICTURE_TITLE)}</title>",
        '<rect width="100%" height="100%" fill="white"/>',
        f'<text x="4" y="15" font-size="13">{escape(PICTURE_TITLE)}</text>',
        '<rect x="4" y="26" width="10" height="8" fill="#4c72b0"/><text x="18" y="34">attention heads kept</text>',
        '<rect x="154" y="26" width="10" height="8" fill="#dd8452"/><text x="168" y="34">FFN units kept</text>',
        '<rect x="274" y="26" width="10" height="8" fill="#e3e3e3"/><text x="288" y="34">dense model (100%)</text>',
    ]
    for index, (before, after) in enumerate(zip(dense, slim)):
        y = top + row * index
        label = f"layer {index}" + (" (dropped)" if index in dropped else "")
        parts.append(f'<text x="4" y="{y + 13}">{label}</text>')
        parts.append(f'<rect x="{label_width}" y="{y - 1}" width="{chart_width}" height="{2 * bar + 3}" fill="#e3e3e3"/>')
        for offset, color, kept, total in (
            (0, "#4c72b0", after.num_heads, before.num_heads),
            (bar + 1, "#dd8452", after.ffn_width, before.ffn_width),
        ):
            fraction = kept / total if total else 0.0
            parts.append(
                f'<rect x="{label_width}" y="{y + offset}" width="{chart_width * fraction:.1f}" height="{bar}" '
                f'fill="{color}"/>'
            )
            text = "dropped" if index in dropped else f"{kept}/{total}"
            parts.append(
                f'<text x="{label_width + chart_width * max(fraction, 1.0) + 4:.1f}" y="{y + offset + 8}">'
                f"{escape(text)}</text>"
            )
    parts.append("</svg>")
    return "\n".join(parts)


def _loading_class(model: nn.Module) -> str:
    """The auto class that maps to the model's own class (every auto class of its type is mapped)."""
    auto_map = getattr(model.config, "auto_map", None) or {}
    own = [name for name, target in auto_map.items() if target.rsplit(".", 1)[-1] == type(model).__name__]
    specific = [name for name in own if name != "AutoModel"]
    return (specific or own or ["AutoModel"])[0]


def _model_card(model: nn.Module, dense: list[LayerShape], slim: list[LayerShape], dropped: list[int]) -> str:
    config = model.config
    spec = modeling_slim.slim_spec(config)
    parameters = count_parameters(model)
    dense_parameters = spec.get("dense_num_parameters")
    dense_flops, slim_flops = model_flops(dense, FLOPS_SEQ_LEN), model_flops(slim, FLOPS_SEQ_LEN)
    auto_class = _loading_class(model)
    rows = [
        f"| {i}{' (dropped)' if i in dropped else ''} | {s.num_heads} / {d.num_heads} | "
        f"{s.num_kv_heads} / {d.num_kv_heads} | {s.ffn_width} / {d.ffn_width} |"
        for i, (d, s) in enumerate(zip(dense, slim))
    ]
    dropped_text = []
    if dropped:
        dropped_text = [
            f"Layer(s) {', '.join(map(str, dropped))} of the {len(dense)} layers of the dense model were removed "
            f"whole; this checkpoint numbers the {len(dense) - len(dropped)} remaining layers from 0.",
            "",
        ]
    size_rows = []
    if dense_parameters:
        size_rows.append(
            f"| parameters | {dense_parameters:,} | {parameters:,} | {parameters / dense_parameters:.1%} |"
        )
    size_rows.append(
        f"| FLOPs of the transformer layers, one sequence of {FLOPS_SEQ_LEN} tokens | {dense_flops:,} | "
        f"{slim_flops:,} | {slim_flops / max(dense_flops, 1):.1%} |"
    )
    size_rows.append(_speedup_row(spec))
    return "\n".join(
        [
            "---",
            "library_name: transformers",
            "tags:",
            "- pruning",
            "- structured-pruning",
            "- nn_prune_ext",
            "---",
            "",
            f"# Slim {config.model_type} model",
            "",
            "Attention heads and FFN units that pruning emptied were removed physically with "
            "nn_prune_ext's `optimize_model`: this is a smaller dense model, faster "
            "on any hardware, with the outputs of the pruned one.",
            "",
            *dropped_text,
            "## Size",
            "",
            "| | dense | slim | slim / dense |",
            "|---|---:|---:|---:|",
            *size_rows,
            "",
            "## Kept per layer (slim / dense)",
            "",
            "| layer | attention heads | key/value heads | FFN width |",
            "|---:|---:|---:|---:|",
            *rows,
            "",
            f"![Attention heads and FFN units kept per layer, as a share of the dense model]({PICTURE_NAME})",
            "",
            "## Loading",
            "",
            "```python",
            f"from transformers import {auto_class}",
            "",
            f'model = {auto_class}.from_pretrained("<this folder or repo id>", trust_remote_code=True)',
            "```",
            "",
            f"`trust_remote_code=True` runs `{modeling_slim.MODELING_FILE_NAME}` from this checkpoint; it imports "
            "only torch and transformers and gives each layer its own number of heads and FFN width "
            "(`per_layer_config` in `config.json`). Without it, loading fails instead of building a "
            "dense model of the wrong shape (unless `ignore_mismatched_sizes=True` is passed, which "
            "would load a wrong model).",
            "",
            "With nn_prune_ext installed, no remote code is needed:",
            "",
            "```python",
            "from nn_prune_ext import load_slim",
            "",
            'model = load_slim("<this folder or repo id>")',
            "```",
            "",
        ]
    )


def write_model_card(model: nn.Module, directory: str) -> None:
    """Write `README.md` and the picture of what each layer kept (`PICTURE_NAME`) of a slim model into `directory`."""
    slim = kept_layer_shapes(model)
    dense = dense_layer_shapes(model)
    dropped = dropped_layer_indices(model.config)
    with open(os.path.join(directory, PICTURE_NAME), "w", encoding="utf-8") as handle:
        handle.write(kept_per_layer_svg(dense, slim, frozenset(dropped)))
    with open(os.path.join(directory, "README.md"), "w", encoding="utf-8") as handle:
        handle.write(_model_card(model, dense, slim, dropped))
