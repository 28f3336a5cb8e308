"""The frontier on the shipped task: accuracy against measured speedup for every way of pruning, with its Pareto line.

    .venv/bin/python analysis/frontier.py                              # the sweep below, then the picture
    .venv/bin/python analysis/frontier.py --output_dir runs/frontier --settings heal:0.4:2 movement:10
    .venv/bin/python analysis/frontier.py --quick                      # every setting on a few examples

Every setting is one run of the demo's pipeline (`nn_prune_ext.demo`) on all-MiniLM-L6-v2 and the
shipped WordNet noun glosses, sharing one dense model: the first run fine-tunes it and leaves it in
`<output_dir>/dense`, the others start from it (`--dense_model_path`). A setting is written
`METHOD:VALUE[:ROUNDS_OR_EPOCHS]`:

- `posttrain:B`: `post_training_prune` at a FLOPs budget B, no retraining;
- `heal:B:R`: `prune_and_heal` at budget B in R rounds (one epoch of healing each);
- `movement:L[:E]`: `SparseTrainer`, hybrid preset, penalty lambda L, E epochs (default 1).

Each run appends its line to `<output_dir>/results.jsonl` (accuracy, measured speedup at batch 32
on held-out glosses, FLOPs ratio, and the whole run: agreement with the dense model, speed limit,
seconds of pruning). At the end every slim model and the dense one are timed again, all in one
process and interleaved round by round on the same 32 held-out glosses, and these speedups
replace the runs' own in `results.jsonl`, as do their speed limits, fitted once in that process (each run's measurement shared the machine with whatever
ran then; this one compares all of them under the same conditions). The script then writes
`frontier.png` (accuracy against measured speedup, Pareto line, dense baseline) and `frontier.md`
(the table, sorted by speedup, with the command that made it) into `--output_dir`. A setting already in `results.jsonl` is not run again
unless `--rerun` is given, so a sweep that was stopped continues where it was.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding

from nn_prune_ext import calibrate_speed_model, compare_latency, load_slim
from nn_prune_ext.demo import DemoArguments, latency_batch, load_texts, run, setting_name, tokenize
from nn_prune_ext.plots import load_runs, pareto_frontier, plot_frontier

DEFAULT_SETTINGS = (
    "posttrain:0.6", "posttrain:0.4",
    "heal:0.5:2", "heal:0.4:2", "heal:0.3:2",
    "movement:10", "movement:20", "movement:10:2", "movement:20:2",
)


def demo_arguments(setting: str, output_dir: str, quick: bool) -> DemoArguments:
    """The demo's arguments of one `METHOD:VALUE[:EXTRA]` setting."""
    method, _, rest = setting.partition(":")
    values = rest.split(":") if rest else []
    common = dict(output_dir=output_dir, quick=quick)
    dense = os.path.join(output_dir, "dense")
    if os.path.isfile(os.path.join(dense, "config.json")):
        common["dense_model_path"] = dense
    try:
        if method == "posttrain" and len(values) == 1:
            return DemoArguments(method="posttrain", flops_budget=float(values[0]), **common)
        if method == "heal" and len(values) == 2:
            return DemoArguments(method="heal", flops_budget=float(values[0]), heal_rounds=int(values[1]), **common)
        if method == "movement" and len(values) in (1, 2):
            epochs = float(values[1]) if len(values) == 2 else 1.0
            return DemoArguments(method="movement", regularization_lambda=float(values[0]), sparse_epochs=epochs,
                                 **common)
    except ValueError as error:
        raise SystemExit(f"frontier: setting {setting!r}: {error}") from None
    raise SystemExit(f"frontier: setting {setting!r} is not posttrain:B, heal:B:R or movement:L[:E].")


def remeasure(output_dir: str, results_path: str, *, batch_size: int = 32, warmup: int = 3, repeats: int = 15) -> None:
    """Time the dense model and every run's slim model in one process, interleaved, and rewrite their speedups."""
    with open(results_path, encoding="utf-8") as handle:
        runs = [json.loads(line) for line in handle if line.strip()]
    dense_dir = os.path.join(output_dir, "dense")
    models = {"dense": AutoModelForSequenceClassification.from_pretrained(dense_dir).eval()}
    models.update({entry["name"]: load_slim(entry["run"]["slim_dir"]).eval() for entry in runs if entry["name"] != "dense"})
    tokenizer = AutoTokenizer.from_pretrained(dense_dir)
    arguments = DemoArguments()
    held_out = tokenize(load_texts(arguments)[0], tokenizer, arguments.max_length)["eval"]
    batch = latency_batch(held_out, DataCollatorWithPadding(tokenizer), batch_size)
    comparison = compare_latency(models, batch, warmup=warmup, repeats=repeats)
    speed = calibrate_speed_model(models["dense"], batch_size=batch["input_ids"].shape[0],
                                  seq_len=batch["input_ids"].shape[1], warmup=warmup, repeats=max(2, repeats // 2))
    for entry in runs:
        entry["speedup"] = comparison.speedup(entry["name"])
        if entry["name"] != "dense":
            entry["run"]["speed_limit"] = speed.speedup(models["dense"], models[entry["name"]])
    temporary = f"{results_path}.tmp-{os.getpid()}"
    with open(temporary, "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(entry) + "\n" for entry in runs)
    os.replace(temporary, results_path)


def table(results_path: str, command: str) -> str:
    """The markdown table of every run in `results_path`, by measured speedup."""
    lines = [line for line in open(results_path, encoding="utf-8") if line.strip()]
    runs = [json.loads(line) for line in lines]
    dense = next(run for run in runs if run["name"] == "dense")
    frontier = {run.name for run in pareto_frontier(load_runs(results_path))}
    rows = [
        f"Made with `{command}`.",
        "",
        "| setting | accuracy | vs dense | agreement | measured speedup | FLOPs limit | speed limit | pruning s | Pareto |",
        "|---|---:|---:|---:|---:|---:|---:|---:|:---:|",
        f"| dense | {dense['accuracy']:.2%} | | | 1.00x | | | | {'yes' if 'dense' in frontier else ''} |",
    ]
    for entry in sorted((run for run in runs if run["name"] != "dense"), key=lambda run: run["speedup"]):
        detail = entry.get("run", {})
        limit = detail.get("speed_limit")
        rows.append(
            f"| {entry['name']} | {entry['accuracy']:.2%} | {100 * (entry['accuracy'] - dense['accuracy']):+.1f} | "
            f"{detail.get('agreement', float('nan')):.1%} | {entry['speedup']:.2f}x | "
            f"{1 / entry['flops_ratio'] if entry['flops_ratio'] else float('inf'):.2f}x | "
            f"{f'{limit:.2f}x' if limit else 'n/a'} | {detail.get('pruning_seconds', float('nan')):.0f} | "
            f"{'yes' if entry['name'] in frontier else ''} |"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output_dir", default="analysis_output/frontier", help="where the runs and pictures go")
    parser.add_argument("--settings", nargs="+", default=list(DEFAULT_SETTINGS), help="METHOD:VALUE[:EXTRA] each")
    parser.add_argument("--rerun", action="store_true", help="run settings already in results.jsonl again")
    parser.add_argument("--quick", action="store_true", help="every stage on a few examples (a smoke test)")
    args = parser.parse_args(argv)
    os.makedirs(args.output_dir, exist_ok=True)
    results_path = os.path.join(args.output_dir, "results.jsonl")
    for setting in args.settings:
        demo_args = demo_arguments(setting, args.output_dir, args.quick)
        done = {run.name for run in load_runs(results_path)} if os.path.isfile(results_path) else set()
        if setting_name(demo_args) in done and not args.rerun:
            print(f"== {setting}: in {results_path} already (--rerun runs it again)")
            continue
        started = time.perf_counter()
        print(f"== {setting}", flush=True)
        result = run(demo_args)
        print(f"== {setting}: accuracy {result.slim_accuracy:.2%} (dense {result.dense_accuracy:.2%}), measured "
              f"x{result.speedup:.2f}, FLOPs limit x{result.flops_limit:.2f}, "
              f"{time.perf_counter() - started:.0f} s", flush=True)
    print("== timing the dense model and every slim model again, interleaved in one process", flush=True)
    remeasure(args.output_dir, results_path, warmup=1 if args.quick else 5, repeats=2 if args.quick else 40)
    command = "python analysis/frontier.py " + " ".join(argv if argv is not None else sys.argv[1:])
    picture = plot_frontier(load_runs(results_path), os.path.join(args.output_dir, "frontier.png"),
                            title="all-MiniLM-L6-v2 on WordNet noun glosses")
    markdown = os.path.join(args.output_dir, "frontier.md")
    with open(markdown, "w", encoding="utf-8") as handle:
        handle.write(table(results_path, command.strip()) + "\n")
    print(open(markdown, encoding="utf-8").read())
    print(f"written {picture} and {markdown}")


if __name__ == "__main__":
    main()
