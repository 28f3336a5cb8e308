"""Inference latency: one model (`inference_time`) or several side by side (`compare_latency`).

Every forward runs under `torch.inference_mode()` with the model in eval mode (its mode is
restored afterwards), after untimed warm-up forwards that let the allocator, the kernels'
caches and lazy initialisation settle. On an accelerator the device is synchronized before
and after each forward, so a sample covers the work, not only its launch.

`compare_latency` times its models round by round: each round runs every model once, and the
order flips from one round to the next, so slow spells of a shared machine (another process
taking a core, frequency changes) hit every model alike instead of whichever ran then.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping, Sequence

import torch
from torch import nn
from .validation import InputError, check_model, check_whole

__all__ = ["LatencyStats", "LatencyComparison", "inference_time", "compare_latency", "describe_device"]

Inputs = Mapping[str, Any] | Sequence[Any] | torch.Tensor


@dataclass(frozen=True)
class LatencyStats:
    """Latency samples of one model, in milliseconds, with their summary statistics.

    Args:
        samples_ms: Wall-clock time (`time.perf_counter`) of each timed forward, in order.
        cpu_samples_ms: Process CPU time (`time.process_time`) of the same forwards. It counts
            less of the time lost when another process takes a core from one of torch's
            threads, so it is a cross-check on a busy machine (meaningless on an accelerator).
    """

    samples_ms: tuple[float, ...]
    cpu_samples_ms: tuple[float, ...] = field(default=())

    def __post_init__(self):
        if not self.samples_ms:
            raise InputError("LatencyStats needs at least one sample.")

    @property
    def repeats(self) -> int:
        """Number of timed forwards."""
        return len(self.samples_ms)

    @property
    def median_ms(self) -> float:
        return statistics.median(self.samples_ms)

    @property
    def min_ms(self) -> float:
        return min(self.samples_ms)

    @property
    def max_ms(self) -> float:
        return max(self.samples_ms)

    @property
    def quartiles_ms(self) -> tuple[float, float]:
        """First and third quartiles (inclusive method: both lie within min..max)."""
        if self.repeats == 1:
            return self.samples_ms[0], self.samples_ms[0]
        first, _, third = statistics.quantiles(self.samples_ms, n=4, method="inclusive")
        return first, third

    @property
    def iqr_ms(self) -> float:
        """Interquartile range: the spread of the middle half of the samples, robust to outliers."""
        first, third = self.quartiles_ms
        return third - first

    @property
    def std_ms(self) -> float:
        """Sample standard deviation (0 for a single sample)."""
        return statistics.stdev(self.samples_ms) if self.repeats > 1 else 0.0

    @property
    def cpu_median_ms(self) -> float | None:
        """Median process CPU time, or `None` when it was not recorded."""
        return statistics.median(self.cpu_samples_ms) if self.cpu_samples_ms else None

    def to_dict(self) -> dict[str, Any]:
        """The statistics and the samples, JSON-ready."""
        first, third = self.quartiles_ms
        return {
            "repeats": self.repeats,
            "median_ms": self.median_ms,
            "q1_ms": first,
            "q3_ms": third,
            "iqr_ms": self.iqr_ms,
            "min_ms": self.min_ms,
            "max_ms": self.max_ms,
            "std_ms": self.std_ms,
            "cpu_median_ms": self.cpu_median_ms,
            "samples_ms": list(self.samples_ms),
        }

    def __str__(self) -> str:
        return (
            f"median {self.median_ms:.3f} ms (IQR {self.iqr_ms:.3f}, min {self.min_ms:.3f}, max {self.max_ms:.3f}; "
            f"{self.repeats} repeats)"
        )


@dataclass(frozen=True)
class LatencyComparison:
    """Latencies of several models timed alternately.

    Args:
        results: Per model name, its `LatencyStats`.
        orders: The order the models ran in, for every timed round.
        baseline: The name speedups are measured against (the first model by default).
    """

    results: dict[str, LatencyStats]
    orders: tuple[tuple[str, ...], ...]
    baseline: str

    def speedup(self, name: str, reference: str | None = None) -> float:
        """How many times faster `name` is than `reference` (default: the baseline), by median latency."""
        reference = self.baseline if reference is None else reference
        for key in (name, reference):
            if key not in self.results:
                raise InputError(f"No model named {key!r} was timed; the models are {list(self.results)}.")
        return self.results[reference].median_ms / self.results[name].median_ms

    @property
    def speedups(self) -> dict[str, float]:
        """Speedup of every model over the baseline (1.0 for the baseline itself)."""
        return {name: self.speedup(name) for name in self.results}

    def to_dict(self) -> dict[str, Any]:
        """Results, speedups and orders, JSON-ready."""
        return {
            "baseline": self.baseline,
            "results": {name: stats.to_dict() for name, stats in self.results.items()},
            "speedups": self.speedups,
            "orders": [list(order) for order in self.orders],
        }


# ----- measuring ---------------------------------------------------------------------------
def _check_counts(warmup: int, repeats: int, threads: int | None) -> None:
    # check_whole refuses bools too: repeats=True is a mistake, not one repeat.
    check_whole(warmup, "warmup", 0)
    check_whole(repeats, "repeats", 1)
    check_whole(threads, "threads", 1, optional=True)


def _check_inputs(inputs: Any) -> None:
    """Refuse inputs that are none of the three forms `_forward` passes on (text would be unpacked per letter)."""
    if isinstance(inputs, (str, bytes)) or not (
        isinstance(inputs, Mapping) or torch.is_tensor(inputs) or isinstance(inputs, Sequence)
    ):
        raise InputError(
            "inputs must be a mapping of keyword arguments (a tokenizer's batch), a tensor, or a sequence of "
            f"positional arguments, got {type(inputs).__name__}: tokenize text first, e.g. "
            "tokenizer(texts, return_tensors='pt')."
        )


@contextlib.contextmanager
def _num_threads(threads: int | None) -> Iterator[None]:
    """Run with `threads` intra-op threads, restoring torch's setting afterwards."""
    if threads is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@contextlib.contextmanager
def _eval_mode(models: Sequence[nn.Module]) -> Iterator[None]:
    """Eval mode (no dropout) while timing; each model's own mode comes back afterwards."""
    modes = [model.training for model in models]
    for model in models:
        model.eval()
    try:
        yield
    finally:
        for model, mode in zip(models, modes):
            model.train(mode)


def _devices(inputs: Inputs, models: Sequence[nn.Module]) -> set[torch.device]:
    """The non-CPU devices the inputs and the models' parameters live on (to synchronize)."""
    values = inputs.values() if isinstance(inputs, Mapping) else [inputs] if torch.is_tensor(inputs) else inputs
    tensors = [value for value in values if torch.is_tensor(value)]
    tensors += [parameter for model in models for parameter in model.parameters()]
    return {tensor.device for tensor in tensors if tensor.device.type not in ("cpu", "meta")}


def _synchronize(devices: set[torch.device]) -> None:
    for device in devices:
        if hasattr(torch, "accelerator"):
            torch.accelerator.synchronize(device)
        else:  # torch < 2.6: CUDA is the only accelerator setup.py's range can meet there
            torch.cuda.synchronize(device)


def _forward(model: nn.Module, inputs: Inputs) -> Any:
    if isinstance(inputs, Mapping):
        return model(**inputs)
    if torch.is_tensor(inputs):
        return model(inputs)
    return model(*inputs)


def _first_timed_forward(model: nn.Module, inputs: Inputs, devices: set[torch.device], name: str) -> tuple[float, float]:
    """`_timed_forward`, turning a model that refuses the inputs into an `InputError` naming the model.

    Only each model's first forward is guarded: an error there means the inputs do not fit that model
    (argument names, dtype, device), which with several models the bare error does not say.
    """
    try:
        return _timed_forward(model, inputs, devices)
    except torch.cuda.OutOfMemoryError:  # (torch.OutOfMemoryError from torch 2.5 on): not the inputs
        raise
    except (TypeError, ValueError, IndexError, KeyError, AttributeError, RuntimeError) as error:
        keys = f" (keys {sorted(map(str, inputs))})" if isinstance(inputs, Mapping) else ""
        raise InputError(
            f"The model {name!r} fails on the inputs{keys}: {type(error).__name__}: {error}. Pass what its forward "
            "takes, on its device (e.g. a tokenizer's batch moved with .to(device))."
        ) from error


def _timed_forward(model: nn.Module, inputs: Inputs, devices: set[torch.device]) -> tuple[float, float]:
    """One forward's wall and process CPU time, in milliseconds."""
    _synchronize(devices)
    wall, cpu = time.perf_counter(), time.process_time()
    _forward(model, inputs)
    _synchronize(devices)
    return (time.perf_counter() - wall) * 1000, (time.process_time() - cpu) * 1000


def compare_latency(
    models: Mapping[str, nn.Module],
    inputs: Inputs,
    *,
    warmup: int = 3,
    repeats: int = 20,
    threads: int | None = None,
    baseline: str | None = None,
) -> LatencyComparison:
    """Time several models on the same inputs, alternating them round by round.

    Every round runs each model once: round 0 in the mapping's order, round 1 in reverse, and so
    on, warm-up rounds included. Each model thus goes first in half the rounds, and machine noise
    is shared out evenly.

    Args:
        models: The models by name, e.g. `{"dense": dense, "slim": slim}`.
        inputs: What each forward gets: a mapping of keyword arguments (a tokenizer's batch), a
            tensor, or a sequence of positional arguments. Put them on the models' device.
        warmup: Untimed rounds before the timed ones.
        repeats: Timed rounds, i.e. timed forwards per model.
        threads: Intra-op threads (`torch.set_num_threads`) while timing; `None` keeps torch's
            setting. The previous setting is restored afterwards.
        baseline: The model speedups are measured against; by default the first one.

    Returns:
        The `LatencyComparison`: per-model `LatencyStats`, the order of every timed round, speedups.

    Raises:
        InputError: If `models` is not a non-empty mapping of names to modules, `baseline` is not one of
            them, a count is not a whole number in range, the inputs are of none of the three forms, or
            a model fails on them (the message names the model).
    """
    if not isinstance(models, Mapping):
        raise InputError(
            "compare_latency takes the models as a mapping of names to models, e.g. {'dense': dense, 'slim': slim}, "
            f"got {type(models).__name__}."
        )
    if not models:
        raise InputError("compare_latency needs at least one model, e.g. {'dense': dense, 'slim': slim}.")
    for name, model in models.items():
        check_model(model, "compare_latency", f"models[{name!r}]")
    names = list(models)
    baseline = names[0] if baseline is None else baseline
    if baseline not in models:
        raise InputError(f"baseline={baseline!r} is not one of the models {names}.")
    _check_counts(warmup, repeats, threads)
    _check_inputs(inputs)
    devices = _devices(inputs, list(models.values()))
    wall: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names}
    orders: list[tuple[str, ...]] = []
    with _num_threads(threads), _eval_mode(list(models.values())), torch.inference_mode():
        for index in range(warmup + repeats):
            order = tuple(names if index % 2 == 0 else reversed(names))
            for name in order:
                if index == 0:
                    wall_ms, cpu_ms = _first_timed_forward(models[name], inputs, devices, name)
                else:
                    wall_ms, cpu_ms = _timed_forward(models[name], inputs, devices)
                if index >= warmup:
                    wall[name].append(wall_ms)
                    cpu[name].append(cpu_ms)
            if index >= warmup:
                orders.append(order)
    results = {name: LatencyStats(tuple(wall[name]), tuple(cpu[name])) for name in names}
    return LatencyComparison(results=results, orders=tuple(orders), baseline=baseline)


def inference_time(
    model: nn.Module, inputs: Inputs, *, warmup: int = 3, repeats: int = 20, threads: int | None = None
) -> LatencyStats:
    """Time the forward of one model.

    Args:
        model: The model; timed in eval mode under `torch.inference_mode()`.
        inputs: A mapping of keyword arguments, a tensor, or a sequence of positional arguments,
            on the model's device.
        warmup: Untimed forwards first.
        repeats: Timed forwards.
        threads: Intra-op threads while timing (`None`: torch's setting, restored afterwards).

    Returns:
        The `LatencyStats` of the timed forwards: median, quartiles, min, max, standard deviation
        and every sample.

    Raises:
        InputError: As `compare_latency`.
    """
    check_model(model, "inference_time")
    return compare_latency({"model": model}, inputs, warmup=warmup, repeats=repeats, threads=threads).results["model"]


def describe_device(model: nn.Module) -> str:
    """Where `model` runs, in words for a record of a measurement, e.g. "2-thread cpu, torch 2.13.0"."""
    device = next(model.parameters()).device
    threads = f"{torch.get_num_threads()}-thread " if device.type == "cpu" else ""
    return f"{threads}{device}, torch {torch.__version__}"
