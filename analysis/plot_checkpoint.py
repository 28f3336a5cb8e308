"""Draw what each layer of a checkpoint keeps and, for a SparseTrainer checkpoint, the density of its masks.

    python analysis/plot_checkpoint.py CHECKPOINT -o DIR

CHECKPOINT is anything `nn-prune optimize` accepts: a slim checkpoint, a SparseTrainer checkpoint
(what slimming would keep of it, and its masks at the final threshold in mask_density.png), a baked
or zero-filled one (what slimming would keep). `nn-prune report CHECKPOINT` writes the same
pictures with a text summary.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from nn_prune_ext.checkpoints import load_for_slimming
from nn_prune_ext.patch import is_patched
from nn_prune_ext.plots import KEPT_PER_LAYER_PICTURE, MASK_DENSITY_PICTURE, plot_kept_per_layer, plot_mask_density


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="checkpoint folder")
    parser.add_argument(
        "-o", "--output-dir", default=".",
        help=f"folder for {KEPT_PER_LAYER_PICTURE} (and {MASK_DENSITY_PICTURE} of a SparseTrainer checkpoint)",
    )
    args = parser.parse_args(argv)
    model = load_for_slimming(args.checkpoint)
    output = Path(args.output_dir)
    print(f"written {plot_kept_per_layer(model, output / KEPT_PER_LAYER_PICTURE)}")
    if is_patched(model):  # only masks have a mask density
        print(f"written {plot_mask_density(model, output / MASK_DENSITY_PICTURE)}")


if __name__ == "__main__":
    main()
