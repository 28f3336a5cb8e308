"""Training-step time and peak memory of `SparseTrainer` (hybrid preset) relative to `transformers.Trainer`.

    .venv/bin/python benchmarks/train_step_overhead.py
    .venv/bin/python benchmarks/train_step_overhead.py --model small --steps 30 --warmup 5
    .venv/bin/python benchmarks/train_step_overhead.py --model small --steps 30 --warmup 5 --compile

The project's goal is at most 1.05x the step time and 1.05x the peak memory of a plain
`Trainer`. This script prints both ratios for two BERT shapes built from configs (no Hub, no
network): `small` (4 layers, 256 wide, 4 heads, FFN 1024) and `base` (BERT-base shape), with a
sequence-classification head and a fixed random batch.

Step time. Both trainers are built once in this process on the same initial weights and the
same batch, then their optimizer steps are interleaved (A, B, A, B, ...) so that drift in the
machine's speed hits both alike; separate processes on a shared machine differ by up to 20%
for the same code. One step is what `Trainer._run_epoch` does for one batch without gradient
accumulation: `training_step` (forward, loss, backward through the accelerator), gradient
clipping, the step of the trainer's own accelerate-wrapped optimizer (for `SparseTrainer` a
`ScoreOptimizer` that adds the L1 penalty), the lr-scheduler step, `zero_grad`, and the
callbacks, so the `SparseTrainer`'s threshold schedule moves every step and the masks are
recomputed in every forward. The median step time of each is reported, with two cross-checks
for a busy machine: the median of the per-round ratios and the ratio of CPU times. A second comparison
does the same for a plain PyTorch loop (forward, `loss.backward()`, fused AdamW step) of the
unpatched model against the patched one (`patch_model` + `ScoreOptimizer` + the schedule):
the overhead of the library without the Trainer around it (its peak memory with `--loop-memory`).
On a 2-core CPU the ratio still scatters by about +-0.01 to 0.02 between runs of this script: the largest
source measured is glibc returning heap memory to the system between steps, so that some steps
page-fault thousands of times (up to ~20 MB of activations touched afresh) and others not at all,
in either variant.

`--compile` builds both variants of each pair compiled (`TrainingArguments(torch_compile=True)`,
`torch.compile` for the loops; inductor). The masked linears' passes over each weight then fuse,
and the thresholds enter the compiled graph as tensors, so the moving schedule does not recompile.
Memory is not measured then (the compiler's own memory would count).

Peak memory. With CUDA: `torch.cuda.max_memory_allocated` during the steps, minus what was
allocated before the model was built. On CPU there is no allocator statistic, so each
variant runs its steps alone in a fresh subprocess of this script and the figure is the peak
resident set size (Linux `VmHWM`) during the steps minus the RSS before the model was built:
weights, gradients, optimizer state, activations and the trainer's own objects, the CPU
analogue of `max_memory_allocated`. The peak is reset (`/proc/self/clear_refs`) once the
model and trainer are built so that transient allocations of model construction do not count;
where that file is not writable, `ru_maxrss` (peak over the whole process) is used instead,
which the output says. The subprocess runs with `MALLOC_MMAP_THRESHOLD_=65536`, so glibc maps
every allocation of 64 KiB or more on its own and unmaps it when freed: the RSS then follows
the live tensor bytes rather than what the heap keeps cached, and repeated runs agree to
within about 0.5 MB (without it they scatter by +-10 MB, more than the 5% being measured).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Callable

import torch
import transformers
from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments

from nn_prune_ext import ScoreOptimizer, SparseArgs, SparseTrainer, SparsityController, densities, iter_mask_scores
from nn_prune_ext import patch_model

GOAL = 1.05
SEED = 0
LEARNING_RATE = 5e-5
NUM_LABELS = 2
MODEL_SHAPES = {
    "small": dict(num_hidden_layers=4, hidden_size=256, num_attention_heads=4, intermediate_size=1024),
    "base": dict(num_hidden_layers=12, hidden_size=768, num_attention_heads=12, intermediate_size=3072),
}
# A BERT-base step takes 5-15 s on 2 busy CPU cores: fewer of them keep the default run to a few minutes.
DEFAULT_STEPS = {"small": (3, 10), "base": (1, 3)}  # (warmup, timed)
LABELS = {
    "trainer": "Trainer",
    "sparse_trainer": "SparseTrainer hybrid",
    "loop": "torch loop",
    "loop_patched": "torch loop, patched",
}
RESULT_PREFIX = "MEMORY_RESULT "
MEMORY_METHODS = {
    "cuda": "torch.cuda.max_memory_allocated during the steps minus the memory allocated before the model was built",
    "vmhwm": "peak RSS during the steps (VmHWM, reset once model and trainer are built) minus the RSS before the model "
    "was built: weights, grads, optimizer state, activations, trainer objects; run with MALLOC_MMAP_THRESHOLD_=65536 "
    "so that RSS follows live tensors rather than glibc's heap cache",
    "ru_maxrss": "peak RSS of the whole process (ru_maxrss: /proc/self/clear_refs is not writable, so model "
    "construction counts too) minus the RSS before the model was built; run with MALLOC_MMAP_THRESHOLD_=65536",
}

Step = Callable[[], None]
# Trainers need an output_dir though nothing is saved; removed when the interpreter exits.
_OUTPUT_DIR = tempfile.TemporaryDirectory(prefix="train_step_overhead-")


# ----- models, batch and pruning arguments ---------------------------------------------
def build_model(name: str, reference: BertForSequenceClassification | None = None) -> BertForSequenceClassification:
    """Build a randomly initialised BERT classifier of shape `name`.

    Args:
        name: A key of `MODEL_SHAPES`.
        reference: Copy this model's weights, so that two variants start identical.

    Returns:
        The model, in training mode, on the CPU.
    """
    config = BertConfig(num_labels=NUM_LABELS, **MODEL_SHAPES[name])
    torch.manual_seed(SEED)
    model = BertForSequenceClassification(config)
    if reference is not None:
        model.load_state_dict(reference.state_dict())
    return model.train()


def make_batch(name: str, batch_size: int, seq_len: int) -> dict[str, torch.Tensor]:
    """A fixed random batch of token ids and labels for model shape `name`.

    Returns:
        `input_ids`, `attention_mask`, `token_type_ids` and `labels`, on the CPU.
    """
    generator = torch.Generator().manual_seed(SEED)
    vocab_size = BertConfig(**MODEL_SHAPES[name]).vocab_size
    return {
        "input_ids": torch.randint(0, vocab_size, (batch_size, seq_len), generator=generator),
        "attention_mask": torch.ones(batch_size, seq_len, dtype=torch.long),
        "token_type_ids": torch.zeros(batch_size, seq_len, dtype=torch.long),
        "labels": torch.randint(0, NUM_LABELS, (batch_size,), generator=generator),
    }


def hybrid_args() -> SparseArgs:
    """The hybrid preset with 32x32 attention blocks (divides both 256 and 768)."""
    return SparseArgs.hybrid(attention_block_rows=32, attention_block_cols=32)


def device() -> torch.device:
    """Where the plain loops run: the GPU if there is one, as the Trainer would choose."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def synchronize() -> None:
    # CUDA kernels run asynchronously: wait for them so a step's time is its own.
    if torch.cuda.is_available():
        torch.cuda.synchronize()


# ----- one optimizer step of each variant -----------------------------------------------
def make_trainer(model: BertForSequenceClassification, batch_size: int, sparse: bool, compile: bool) -> Trainer:
    """A `Trainer` (or `SparseTrainer` with the hybrid preset) that never logs, saves or evaluates.

    With `compile`, `torch_compile=True`: accelerate's `prepare` compiles the model (inductor).
    """
    args = TrainingArguments(
        torch_compile=compile,
        output_dir=_OUTPUT_DIR.name,
        per_device_train_batch_size=batch_size,
        learning_rate=LEARNING_RATE,
        logging_strategy="no",
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        use_cpu=not torch.cuda.is_available(),
        seed=SEED,
    )
    if sparse:
        return SparseTrainer(model=model, args=args, sparse_args=hybrid_args())
    return Trainer(model=model, args=args)


def trainer_stepper(trainer: Trainer, batch: dict[str, torch.Tensor], total_steps: int) -> Step:
    """Prepare `trainer` as `Trainer._prepare_for_training` does and return one optimizer step.

    The step mirrors `Trainer._run_epoch` for a single batch per optimizer step; only the
    loss bookkeeping for logging (a tensor addition) and the log/save/evaluate checks, which
    are off here, are left out.

    Args:
        trainer: A freshly built `Trainer` or `SparseTrainer`.
        batch: The inputs, on the CPU (`training_step` moves them, as in training).
        total_steps: Steps of the run: sets the lr schedule and the sparsity schedule.

    Returns:
        A function taking one optimizer step.
    """
    trainer.create_optimizer()
    model, trainer.optimizer = trainer.accelerator.prepare(trainer.model, trainer.optimizer)
    trainer.create_scheduler(num_training_steps=total_steps)
    trainer.model_wrapped = model
    trainer.state.max_steps = total_steps
    trainer.state.global_step = 0
    trainer.current_gradient_accumulation_steps = 1
    model.zero_grad()
    # SparseTrainer's callback starts the threshold schedule here and moves it in on_step_end.
    trainer.control = trainer.callback_handler.on_train_begin(trainer.args, trainer.state, trainer.control)
    handler, args, state = trainer.callback_handler, trainer.args, trainer.state

    def step() -> None:
        batches, num_items_in_batch = trainer.get_batch_samples(iter([dict(batch)]), 1, args.device)
        trainer.accelerator.gradient_state._set_sync_gradients(True)
        trainer.control = handler.on_step_begin(args, state, trainer.control)
        trainer.training_step(model, batches[0], num_items_in_batch)
        if args.max_grad_norm > 0:
            trainer._clip_grad_norm(model)
        trainer.control = handler.on_pre_optimizer_step(args, state, trainer.control)
        trainer.optimizer.step()
        trainer.control = handler.on_optimizer_step(args, state, trainer.control)
        if not trainer.accelerator.optimizer_step_was_skipped:
            trainer.lr_scheduler.step()
        model.zero_grad()
        state.global_step += 1
        trainer.control = handler.on_step_end(args, state, trainer.control)

    return step


def loop_stepper(
    model: BertForSequenceClassification,
    batch: dict[str, torch.Tensor],
    total_steps: int,
    patched: bool,
    compile: bool,
) -> tuple[Step, SparsityController | None]:
    """A plain PyTorch training step, optionally on the patched model with the library's optimizer wrapper.

    Args:
        model: The model, on the CPU; moved to `device()`.
        batch: The inputs, on the CPU.
        total_steps: Steps of the run, for the sparsity schedule.
        patched: Patch the model with the hybrid preset, wrap AdamW in a `ScoreOptimizer` and
            move the threshold every step, as a user's own loop would.
        compile: Run the (patched) model through `torch.compile` (inductor).

    Returns:
        The step function and, when patched, the controller moving the thresholds.
    """
    model.to(device())
    inputs = {key: value.to(device()) for key, value in batch.items()}
    sparse_args = hybrid_args()
    controller = SparsityController(sparse_args) if patched else None
    if patched:
        patch_model(model, sparse_args)
    # The Trainer's defaults (optim="adamw_torch_fused", weight_decay=0): the single-tensor AdamW that
    # torch picks on CPU otherwise costs a third of a small-model step and would dilute the ratio.
    optimizer: torch.optim.Optimizer = torch.optim.AdamW(
        model.parameters(), lr=LEARNING_RATE, weight_decay=0.0, fused=True
    )
    if controller is not None:
        optimizer = ScoreOptimizer(
            optimizer,
            list(iter_mask_scores(model)),
            learning_rate=sparse_args.mask_scores_learning_rate,
            regularization_lambda=controller.regularization_lambda,
            kind_multipliers={"attention": sparse_args.attention_lambda, "dense": sparse_args.dense_lambda},
        )
        controller.start(model, total_steps, 0)
    forward = torch.compile(model) if compile else model
    count = 0

    def step() -> None:
        nonlocal count
        forward(**inputs).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        count += 1
        if controller is not None:
            controller.set_step(model, count)

    return step, controller


def build_variant(
    variant: str,
    model: BertForSequenceClassification,
    batch: dict[str, torch.Tensor],
    batch_size: int,
    total_steps: int,
    compile: bool = False,
) -> tuple[Step, Callable[[], str]]:
    """Build one variant's step function around `model` (compiled with `compile`).

    Returns:
        The step and a function describing its sparsity state (empty for unpatched variants).
    """
    if variant in ("trainer", "sparse_trainer"):
        trainer = make_trainer(model, batch_size, sparse=variant == "sparse_trainer", compile=compile)
        step = trainer_stepper(trainer, batch, total_steps)
        controller = getattr(trainer, "controller", None)
        return step, lambda: describe_sparsity(trainer.model, controller)
    step, controller = loop_stepper(model, batch, total_steps, patched=variant == "loop_patched", compile=compile)
    return step, lambda: describe_sparsity(model, controller)


def describe_sparsity(model: torch.nn.Module, controller: SparsityController | None) -> str:
    """Threshold, penalty weight and density reached, showing that the schedule really moved."""
    if controller is None:
        return ""
    density = densities(model)["total"]
    return (
        f"step {controller.step}: threshold {controller.threshold():.4f}, "
        f"lambda {controller.regularization_lambda():.3f}, density {density:.3f}"
    )


# ----- timing -----------------------------------------------------------------------------
@dataclass
class Timings:
    """Per-step times in seconds by variant: wall clock, and CPU time of this process (all threads)."""

    wall: dict[str, list[float]]
    cpu: dict[str, list[float]]


def time_alternately(steps: dict[str, Step], warmup: int, timed: int) -> Timings:
    """Run the steps in turn (A, B, A, B, ...) and time each one.

    Args:
        steps: Step functions by variant name.
        warmup: Untimed rounds first (allocator, thread pools and optimizer state settle).
        timed: Timed rounds.

    Returns:
        The wall-clock and CPU times of the timed steps.
    """
    timings = Timings({name: [] for name in steps}, {name: [] for name in steps})
    for round_index in range(warmup + timed):
        for name, step in steps.items():
            synchronize()
            wall, cpu = time.perf_counter(), time.process_time()
            step()
            synchronize()
            if round_index >= warmup:
                timings.wall[name].append(time.perf_counter() - wall)
                # CPU time is less sensitive than wall time to other processes sharing the cores.
                timings.cpu[name].append(time.process_time() - cpu)
    return timings


def time_pair(
    name: str,
    variants: tuple[str, str],
    batch: dict[str, torch.Tensor],
    batch_size: int,
    warmup: int,
    timed: int,
    compile: bool = False,
) -> tuple[Timings, str]:
    """Build two variants on identical weights in this process and time them alternately.

    Returns:
        The step times by variant and the sparsity state the patched variant reached.
    """
    reference = build_model(name)
    models = {variants[0]: reference, variants[1]: build_model(name, reference=reference)}
    built = {
        variant: build_variant(variant, models[variant], batch, batch_size, warmup + timed, compile)
        for variant in variants
    }
    timings = time_alternately({variant: step for variant, (step, _) in built.items()}, warmup, timed)
    sparsity = built[variants[1]][1]()
    del built, models, reference
    gc.collect()
    return timings, sparsity


# ----- peak memory (one fresh process per variant) -----------------------------------------
def _rss_kib(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark of this process; False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def measure_memory_here(name: str, variant: str, batch_size: int, seq_len: int, steps: int) -> dict[str, object]:
    """Build one variant, take `steps` steps, and return its peak memory in MiB (run in a fresh process).

    Returns:
        `{"peak_mb": ..., "method": ...}`: the peak during the steps minus the memory in use
        before the model was built, and a key of `MEMORY_METHODS`.
    """
    batch = make_batch(name, batch_size, seq_len)
    cuda = torch.cuda.is_available()
    gc.collect()
    before = torch.cuda.memory_allocated() if cuda else _rss_kib("VmRSS") * 1024
    step, _ = build_variant(variant, build_model(name), batch, batch_size, steps)
    gc.collect()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        method = "cuda"
    else:
        method = "vmhwm" if _reset_peak_rss() else "ru_maxrss"
    for _ in range(steps):
        step()
    synchronize()
    if cuda:
        peak = torch.cuda.max_memory_allocated()
    elif method == "vmhwm":
        peak = _rss_kib("VmHWM") * 1024
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    return {"peak_mb": (peak - before) / 2**20, "method": method}


def measure_memory(name: str, variant: str, options: argparse.Namespace) -> dict[str, object]:
    """Run `measure_memory_here` for one variant in a fresh subprocess of this script."""
    command = [
        sys.executable, os.path.abspath(__file__),
        "--_memory-child", f"{name}:{variant}",
        "--batch-size", str(options.batch_size),
        "--seq-len", str(options.seq_len),
        "--threads", str(options.threads),
        "--memory-steps", str(options.memory_steps),
    ]
    # glibc: serve every allocation >= 64 KiB by mmap, so a freed tensor leaves the RSS at once and
    # the RSS follows live tensor bytes (as CUDA's statistic does) instead of the heap's caching,
    # which otherwise adds +-10 MB of run-to-run noise. Other C libraries ignore the variable.
    environment = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(64 * 1024)}
    completed = subprocess.run(command, capture_output=True, text=True, check=False, env=environment)
    for line in completed.stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX):])
    raise RuntimeError(f"Memory run of {name}/{variant} failed:\n{completed.stderr[-3000:]}")


# ----- report -----------------------------------------------------------------------------
@dataclass
class Row:
    """One line of the table; the ratios are set on the pruned variant's line only."""

    model: str
    variant: str
    median_ms: float
    time_ratio: float | None = None
    peak_mb: float | None = None
    memory_ratio: float | None = None


def verdict(ratio: float | None) -> str:
    """PASS within the project's goal, OVER beyond it (reported, never an error)."""
    if ratio is None:
        return ""
    return "PASS" if ratio <= GOAL else "OVER"


def format_table(rows: list[Row]) -> str:
    header = f"{'model':<6} {'variant':<21} {'median ms':>10} {'ratio':>7} {'':<4} {'peak MB':>9} {'ratio':>7} {'':<4}"
    lines = [header, "-" * len(header)]
    for row in rows:
        time_ratio = f"{row.time_ratio:.3f}" if row.time_ratio is not None else ""
        peak = f"{row.peak_mb:.1f}" if row.peak_mb is not None else "-"
        memory_ratio = f"{row.memory_ratio:.3f}" if row.memory_ratio is not None else ""
        lines.append(
            f"{row.model:<6} {LABELS[row.variant]:<21} {row.median_ms:>10.1f} {time_ratio:>7} "
            f"{verdict(row.time_ratio):<4} {peak:>9} {memory_ratio:>7} {verdict(row.memory_ratio):<4}"
        )
    return "\n".join(lines)


def pair_rows(
    name: str, variants: tuple[str, str], times: dict[str, list[float]], memory: dict[str, dict[str, object]]
) -> list[Row]:
    """Table rows of a (baseline, pruned) pair; the ratios sit on the pruned row."""
    base, pruned = variants
    medians = {variant: statistics.median(times[variant]) * 1000 for variant in variants}
    peaks = {variant: memory[variant]["peak_mb"] if variant in memory else None for variant in variants}
    memory_ratio = peaks[pruned] / peaks[base] if peaks[base] and peaks[pruned] is not None else None
    return [
        Row(name, base, medians[base], peak_mb=peaks[base]),
        Row(name, pruned, medians[pruned], medians[pruned] / medians[base], peaks[pruned], memory_ratio),
    ]


def timing_note(timings: Timings, variants: tuple[str, str]) -> str:
    """Two cross-checks of the time ratio on a busy machine.

    The per-round ratios compare two steps that ran back to back under about the same load;
    the CPU-time ratio leaves out the time the process waited for a core.
    """
    base, pruned = variants
    ratios = [b / a for a, b in zip(timings.wall[base], timings.wall[pruned])]
    cpu_ratio = statistics.median(timings.cpu[pruned]) / statistics.median(timings.cpu[base])
    return (
        f"per-round wall ratio median {statistics.median(ratios):.3f} (range {min(ratios):.3f}-{max(ratios):.3f}), "
        f"CPU-time ratio {cpu_ratio:.3f}"
    )


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ----- main -------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=("small", "base", "both"), default="both")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads.")
    parser.add_argument("--steps", type=int, default=None, help="Timed steps per variant (default: 10 small, 3 base).")
    parser.add_argument(
        "--warmup", type=int, default=None, help="Untimed steps per variant first (default: 3 small, 1 base)."
    )
    parser.add_argument("--memory-steps", type=int, default=2, help="Steps of each fresh memory process (>= 2: the "
                        "second step is the first with optimizer state and gradients alive together).")
    parser.add_argument("--loop-memory", action="store_true", help="Also measure the peak memory of the torch loops.")
    parser.add_argument("--compile", action="store_true", help="Compile both variants of each pair with "
                        "torch.compile (inductor; the Trainers through torch_compile=True) and time them; the "
                        "first warmup step compiles. Peak memory is not measured then.")
    parser.add_argument("--_memory-child", dest="memory_child", default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def run_model(name: str, options: argparse.Namespace) -> tuple[list[Row], list[str], set[str]]:
    """Time both pairs of one model shape and measure their peak memory.

    Returns:
        The table rows, notes on timing and on the sparsity schedule, and the memory methods used.
    """
    default_warmup, default_steps = DEFAULT_STEPS[name]
    warmup = default_warmup if options.warmup is None else options.warmup
    steps = default_steps if options.steps is None else options.steps
    batch = make_batch(name, options.batch_size, options.seq_len)
    rows, notes, methods = [], [], set()
    for variants in (("trainer", "sparse_trainer"), ("loop", "loop_patched")):
        pair = f"{LABELS[variants[0]]} vs {LABELS[variants[1]]}"
        log(f"[{name}] timing {pair}: {warmup} warmup + {steps} timed steps each, interleaved")
        timings, sparsity = time_pair(name, variants, batch, options.batch_size, warmup, steps, options.compile)
        memory = {}
        # A compiled step's peak would include the compiler's own memory: time only.
        if not options.compile and (variants[0] == "trainer" or options.loop_memory):
            for variant in variants:
                log(f"[{name}] peak memory of {LABELS[variant]} ({options.memory_steps} steps, fresh process)")
                memory[variant] = measure_memory(name, variant, options)
        rows += pair_rows(name, variants, timings.wall, memory)
        notes.append(f"{name} / {LABELS[variants[1]]}: {timing_note(timings, variants)}")
        notes.append(f"{name} / {LABELS[variants[1]]}: schedule at {sparsity}")
        methods |= {str(result["method"]) for result in memory.values()}
    return rows, notes, methods


def main(argv: list[str] | None = None) -> None:
    options = parse_args(argv)
    torch.set_num_threads(options.threads)
    transformers.logging.set_verbosity_error()
    if options.memory_child:
        name, variant = options.memory_child.split(":")
        result = measure_memory_here(name, variant, options.batch_size, options.seq_len, options.memory_steps)
        print(RESULT_PREFIX + json.dumps(result), flush=True)
        return

    if options.compile:
        # Both models of a pair share their classes' forward code, so their compiled graphs share one cache
        # (each entry guarded on its model's modules); with the default limit of 8 entries per code object,
        # alternating them would end in recompiling every step or falling back to eager.
        torch._dynamo.config.recompile_limit = 64
    names = ("small", "base") if options.model == "both" else (options.model,)
    rows, notes, methods = [], [], set()
    for name in names:
        model_rows, model_notes, model_methods = run_model(name, options)
        rows += model_rows
        notes += model_notes
        methods |= model_methods

    where = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU, {options.threads} threads"
    print(
        f"torch {torch.__version__}, transformers {transformers.__version__}, {where}; "
        f"batch {options.batch_size} x {options.seq_len}; SparseArgs.hybrid: 32x32 attention blocks, FFN units"
        + ("; both variants compiled (torch.compile, inductor)" if options.compile else "")
    )
    print(f"goal: ratio <= {GOAL} for step time and peak memory (PASS / OVER)\n")
    print(format_table(rows))
    print(
        "\nmedian ms: median optimizer-step time, the pair's two variants interleaved in one process on the same "
        "weights and batch; ratio = pruned / unpruned."
    )
    for method in sorted(methods):
        print(f"peak MB: {options.memory_steps} steps in a fresh process per variant; {MEMORY_METHODS[method]}.")
    for note in notes:
        print(f"  {note}")


if __name__ == "__main__":
    main()
