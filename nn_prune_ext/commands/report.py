"""`nn-prune report CKPT`: a text summary and PNG pictures of what a checkpoint's pruning keeps.

For a slim checkpoint it shows what each layer kept of the dense model; for a `SparseTrainer`
checkpoint, the densities of its masks (at the final threshold) and what slimming would keep;
for a baked or zero-filled checkpoint, what slimming would keep. With `--importance-data` it
also measures head importance on labelled examples (`nn_prune_ext.importance`).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..checkpoints import load_for_slimming
from ..importance import MaskImportance, collect_mask_gradients, fisher_importance, taylor_importance
from ..patch import densities, is_patched
from ..plots import INSTALL_HINT, as_slim, plot_density_heatmaps, plot_head_importance, plot_kept_heads
from ..slim import LayerReport, SlimReport
from ..slim.layers import kept_layer_indices
from ..summary import summary

SUMMARY_NAME = "summary.txt"
DENSITY_PICTURE = "density.png"
KEPT_PICTURE = "kept_heads.png"
IMPORTANCE_PICTURE = "head_importance.png"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "report",
        help="print what a checkpoint's pruning keeps per layer and draw it as PNG pictures",
        description="Summarize a slim, SparseTrainer, baked or zero-filled checkpoint: heads, key/value heads "
        "and FFN width kept per layer against the dense model, parameters and FLOPs; write the summary and "
        f"PNG pictures ({DENSITY_PICTURE}, {KEPT_PICTURE}, and {IMPORTANCE_PICTURE} with --importance-data).",
    )
    parser.add_argument("checkpoint", help="checkpoint folder")
    parser.add_argument("--output-dir", help="folder for the summary and pictures (default: CHECKPOINT-report)")
    parser.add_argument("--seq-len", type=int, default=128, help="sequence length the FLOPs are counted for")
    parser.add_argument("--no-plots", action="store_true", help="write the text summary only (no matplotlib needed)")
    group = parser.add_argument_group(
        "head importance", "measured on labelled examples of a JSON-lines file (one object per line)"
    )
    group.add_argument("--importance-data", help="JSON-lines file of examples with a text and a label field")
    group.add_argument("--text-column", default="text", help="field holding the text (default: text)")
    group.add_argument("--text-pair-column", help="field holding the second text of sentence-pair tasks")
    group.add_argument("--label-column", default="label", help="field holding the label, an id or a name")
    group.add_argument("--tokenizer", help="tokenizer name or folder (default: the checkpoint's own)")
    group.add_argument("--importance", choices=("taylor", "fisher"), default="taylor",
                       help="taylor: summed |gradient| (Michel et al.); fisher: summed squared gradient (Kwon et al.)")
    group.add_argument("--batch-size", type=int, default=16, help="examples per batch (default: 16)")
    group.add_argument("--max-batches", type=int, default=8, help="batches to use (default: 8)")
    group.add_argument("--max-length", type=int, default=128, help="truncate examples to this many tokens")
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
    """

    description: str
    report: SlimReport
    flops: tuple[int, int]
    seq_len: int
    mask_densities: dict[str, float] | None = None

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
    )


def _layer_notes(model: nn.Module, slim: nn.Module) -> dict[int, list[str]]:
    """`optimize_model`'s notes per layer of the dense model (none when the checkpoint was slim already)."""
    report = getattr(slim, "slim_report", None)
    if report is None:
        return {}
    dense_index = kept_layer_indices(model.config)  # the slimmed model's layers, numbered in the dense model
    return {dense_index[layer.index]: list(layer.notes) for layer in report.layers}


# ----- head importance from a JSON-lines file ------------------------------------------------
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


def importance_batches(args: argparse.Namespace, config) -> list[dict[str, torch.Tensor]]:
    """Tokenized, labelled batches of the `--importance-data` file.

    Args:
        args: The parsed `report` arguments (data file, fields, tokenizer, batch sizes).
        config: The model's config, whose `label2id` maps label names to ids.

    Returns:
        Up to `--max-batches` batches of `--batch-size` examples, with `labels`.
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
    columns = [args.text_column] + ([args.text_pair_column] if args.text_pair_column else []) + [args.label_column]
    examples = _read_examples(args.importance_data, columns, args.batch_size * args.max_batches)
    batches = []
    for start in range(0, len(examples), args.batch_size):
        chunk = examples[start : start + args.batch_size]
        pairs = [example[args.text_pair_column] for example in chunk] if args.text_pair_column else None
        batch = tokenizer([example[args.text_column] for example in chunk], pairs, padding=True, truncation=True,
                          max_length=args.max_length, return_tensors="pt")
        batch["labels"] = _label_tensor([example[args.label_column] for example in chunk], config)
        batches.append(dict(batch))
    return batches


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
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}.")
    # Checked before the model is loaded and the importance measured, not when the first picture is drawn.
    if not args.no_plots and importlib.util.find_spec("matplotlib") is None:
        raise ValueError(f"The pictures need matplotlib: {INSTALL_HINT}, or pass --no-plots for the text only.")


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
        batches = importance_batches(args, model.config)
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
        written.append(plot_density_heatmaps(model, output_dir / DENSITY_PICTURE))
        written.append(plot_kept_heads(slim, output_dir / KEPT_PICTURE))
        if importance is not None:
            title = f"Head importance ({args.importance}, {len(batches)} batches of {Path(args.importance_data).name})"
            written.append(plot_head_importance(
                importance, output_dir / IMPORTANCE_PICTURE, title=title, layer_indices=layer_indices
            ))
    print("written:\n" + "\n".join(f"  {path}" for path in written))
    return written
