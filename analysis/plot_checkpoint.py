"""Draw the density of every pruned matrix and the heads / FFN units kept per layer of a checkpoint.

    python analysis/plot_checkpoint.py CHECKPOINT -o DIR

CHECKPOINT is anything `nn-prune optimize` accepts: a slim checkpoint, a SparseTrainer checkpoint
(its masks at the final threshold are drawn, and what slimming would keep), a baked or zero-filled
one. `nn-prune report CHECKPOINT` writes the same pictures with a text summary.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from nn_prune_ext.checkpoints import load_for_slimming
from nn_prune_ext.plots import as_slim, plot_density_heatmaps, plot_kept_heads


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="checkpoint folder")
    parser.add_argument("-o", "--output-dir", default=".", help="folder for density.png and kept_heads.png")
    args = parser.parse_args(argv)
    model = load_for_slimming(args.checkpoint)
    output = Path(args.output_dir)
    print(f"written {plot_density_heatmaps(model, output / 'density.png')}")
    print(f"written {plot_kept_heads(as_slim(model), output / 'kept_heads.png')}")


if __name__ == "__main__":
    main()
