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
from pathlib import Path

from ..atomic_files import write_text_atomically
from ..validation import InputError
from .arguments import checkpoint_config, checkpoint_folder, input_file, output_folder, whole_number
from .data import add_data_arguments, examples_batches

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
    parser.add_argument("checkpoint", metavar="CKPT", help="checkpoint folder (with its config.json)")
    parser.add_argument("--output-dir", help="folder for the summary and pictures (default: CKPT-report)")
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


# ----- the command ---------------------------------------------------------------------------
def _check_arguments(args: argparse.Namespace) -> None:
    """The ranges argparse checks, for callers that build the Namespace themselves; then matplotlib and the paths.

    Raises:
        InputError: Before torch is imported.
    """
    for name in ("seq_len", "batch_size", "max_batches", "max_length"):
        if not isinstance(getattr(args, name), int) or getattr(args, name) < 1:
            raise InputError(f"--{name.replace('_', '-')} must be a whole number >= 1, got {getattr(args, name)!r}.")
    # Checked before the model is loaded and the importance measured, not when the first picture is drawn.
    if not args.no_plots and importlib.util.find_spec("matplotlib") is None:
        from ..plots import INSTALL_HINT

        raise InputError(f"The pictures need matplotlib: {INSTALL_HINT}, or pass --no-plots for the text only.")
    checkpoint_folder(str(args.checkpoint), "CKPT")
    output_folder(str(_output_dir(args)), "--output-dir" if args.output_dir else "--output-dir (default CKPT-report)")
    if args.importance_data:
        input_file(args.importance_data, "--importance-data", "a JSON-lines file of labelled examples")


def _output_dir(args: argparse.Namespace) -> Path:
    checkpoint = Path(args.checkpoint).resolve()
    return Path(args.output_dir) if args.output_dir else checkpoint.with_name(f"{checkpoint.name}-report")


def run(args: argparse.Namespace) -> list[Path]:
    """Print the summary, write it and the pictures.

    Returns:
        The written files: `summary.txt`, then the pictures.
    """
    _check_arguments(args)
    checkpoint = Path(args.checkpoint).resolve()
    output_dir = _output_dir(args)
    config = checkpoint_config(str(checkpoint), "CKPT")
    from ..checkpoints import load_for_slimming  # torch: imported once the arguments and paths are checked
    from ..importance import MaskImportance, collect_mask_gradients, fisher_importance, taylor_importance
    from ..patch import is_patched
    from ..plots import as_slim, plot_head_importance, plot_kept_per_layer, plot_mask_density
    from ..slim.layers import kept_layer_indices
    from .checkpoint_summary import dense_head_numbers, importance_table, summarize

    # The examples are read and checked before the model loads: a bad line costs no loading time.
    batches = examples_batches(args, args.importance_data, config) if args.importance_data else None
    model = load_for_slimming(checkpoint)
    slim = as_slim(model)
    text = str(summarize(model, slim, args.seq_len))
    importance: MaskImportance | None = None
    if batches is not None:
        # On the checkpoint as loaded: a patched model's heads keep their dense numbering.
        importance = {"taylor": taylor_importance, "fisher": fisher_importance}[args.importance](
            collect_mask_gradients(model, batches)
        )
        # Rows are the checkpoint's layers and heads, named by their dense index as in the picture.
        layer_indices = kept_layer_indices(model.config)
        text += "\n" + importance_table(importance.heads, layer_indices, dense_head_numbers(model))
    print(text)

    output_dir.mkdir(parents=True, exist_ok=True)
    written = [output_dir / SUMMARY_NAME]
    write_text_atomically(written[0], text + "\n")
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
