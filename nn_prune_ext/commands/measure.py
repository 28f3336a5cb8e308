"""The dense and slim models of a checkpoint, their inputs and their side-by-side timing.

Used by `nn-prune bench` (which times a checkpoint's pair at several batch sizes) and by `nn-prune
posttrain` and `heal` (which time the slim model they wrote against their input and record the
speedup in its model card). The command modules import this module only once their arguments and
paths are checked: it imports torch and transformers, which take seconds.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..checkpoints import load_for_slimming
from ..flops import model_flops
from ..patch import bake_model, is_patched
from ..slim import is_slim_model, optimize_model, record_measured_speedup
from ..slim.classes import stock_class
from ..slim.layers import dropped_layer_indices
from ..slim.modeling_slim import dense_config, is_slim_config
from ..speed import calibrate_speed_model, can_calibrate
from ..timing import compare_latency, describe_device
from ..transformers_internals import attention_implementation, build_model
from ..validation import InputError

__all__ = [
    "SEED",
    "dense_reference",
    "load_pair",
    "random_inputs",
    "measure_and_record",
    "available_devices",
    "check_device",
    "speed_limit",
]

SEED = 0


def dense_reference(slim: nn.Module) -> nn.Module:
    """The stock model a slim model was cut from, with random weights.

    Args:
        slim: A slim model (its config carries the dense global sizes and `per_layer_config`).

    Returns:
        A model of the slim model's stock class, built from its config without the per-layer sizes
        and with every layer of the dense model (`dense_config`), with the slim model's dtype,
        device and attention implementation, in eval mode.
    """
    model = build_model(
        stock_class(type(slim)),
        dense_config(slim.config),
        dtype=slim.dtype,
        attn_implementation=attention_implementation(slim.config),
    )
    return model.to(slim.device).eval()


def load_pair(checkpoint: str | Path) -> tuple[nn.Module, nn.Module, str]:
    """The dense and slim models to compare for `checkpoint`, and how they were made.

    Args:
        checkpoint: A slim checkpoint or any folder `load_for_slimming` accepts.

    Returns:
        `(dense, slim, description)`, both models in eval mode.
    """
    model = load_for_slimming(checkpoint)
    if is_slim_model(model):
        slim, kind = model, "slim checkpoint"
    else:
        patched = is_patched(model)
        if patched:
            bake_model(model)
        slim = optimize_model(model)
        kind = ("SparseTrainer checkpoint baked at its final threshold" if patched else "baked or zero-filled "
                "checkpoint") + ", slimmed here with optimize_model"
        if not is_slim_config(model.config) and not dropped_layer_indices(model.config):
            return model.eval(), slim, f"{kind}; dense reference: the checkpoint as loaded"
    # The dense model of a slim one, or of one that lost layers, exists only as the sizes its config keeps.
    return dense_reference(slim), slim, (
        f"{kind}; dense reference: stock {stock_class(type(slim)).__name__} with the dense sizes of its config and "
        "random weights (latency depends on the shapes, not on the values)"
    )


def random_inputs(config, batch_size: int, seq_len: int, device: str | torch.device) -> dict[str, torch.Tensor]:
    """Seeded random token ids of shape `(batch_size, seq_len)` with an all-ones attention mask."""
    generator = torch.Generator().manual_seed(SEED)
    input_ids = torch.randint(0, config.vocab_size, (batch_size, seq_len), generator=generator)
    return {"input_ids": input_ids.to(device), "attention_mask": torch.ones_like(input_ids, device=device)}


def measure_and_record(source: nn.Module, slim: nn.Module, batch: dict[str, Any]) -> str:
    """Time `slim` against the dense model side by side on `batch`, record the speedup for `slim`'s model card.

    For the commands that write a slim checkpoint from a model they have loaded (`posttrain`, `heal`):
    the card then states a measured speedup beside the FLOPs. The card's reference is the dense model:
    `source` itself, or, when `source` is slim already, the dense model it was cut from, rebuilt from
    its config with random weights (`dense_reference`; timing does not depend on the weights).

    Args:
        source: The model the command pruned.
        slim: The command's result.
        batch: A calibration batch (its labels are left out).

    Returns:
        The line to print: the measured speedup and the FLOPs limit at the batch's length.
    """
    dense = dense_reference(source) if is_slim_config(source.config) else source
    inputs = {key: value for key, value in batch.items() if key != "labels"}
    comparison = compare_latency({"dense": dense, "slim": slim}, inputs, warmup=2, repeats=10)
    speedup = comparison.speedup("slim")
    batch_size, seq_len = (int(size) for size in next(iter(inputs.values())).shape[:2])
    record_measured_speedup(slim, speedup, batch_size=batch_size, seq_len=seq_len, device=describe_device(slim))
    limit = model_flops(dense, seq_len) / max(model_flops(slim, seq_len), 1)
    against = "the dense model" if dense is source else "the dense model it was cut from (rebuilt from its config)"
    return (f"measured speedup x{speedup:.2f} against {against} on a calibration batch of {batch_size} x {seq_len} "
            f"tokens, side by side (FLOPs limit x{limit:.2f}); recorded in the model card")


# ----- the device --------------------------------------------------------------------------
def available_devices() -> list[str]:
    """The devices torch can run on here, e.g. `["cpu", "cuda:0"]`."""
    devices = ["cpu"]
    for kind in ("cuda", "xpu", "mps"):
        backend = getattr(torch, kind, None)
        if backend is not None and getattr(backend, "is_available", lambda: False)():
            count = getattr(backend, "device_count", lambda: 1)()
            devices += [f"{kind}:{index}" for index in range(count)] if kind != "mps" else ["mps"]
    return devices


def check_device(device: str) -> None:
    """Refuse a `--device` that torch does not know or that this machine lacks, naming the available ones.

    Raises:
        InputError: Before any model is loaded.
    """
    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError):
        raise InputError(
            f"--device {device!r} is not a device name; use one of {', '.join(available_devices())}."
        ) from None
    available = available_devices()
    if parsed.type != "cpu" and (str(parsed) not in available and f"{parsed.type}:0" not in available
                                 or parsed.index is not None and str(parsed) not in available):
        raise InputError(
            f"--device {device!r} is not available on this machine; available: {', '.join(available)} (a GPU needs "
            "its driver and a torch build for it)."
        )


# ----- the speed limit ---------------------------------------------------------------------
def speed_limit(dense: nn.Module, slim: nn.Module, batch_size: int, args: argparse.Namespace) -> float | None:
    """The speedup the work of `dense` and `slim` allows on this device (`nn_prune_ext.speed`), or `None`
    for architectures the speed model cannot be calibrated on (encoder-decoders, unpruned experts)."""
    if not can_calibrate(dense):
        return None
    speed = calibrate_speed_model(dense, batch_size=batch_size, seq_len=args.seq_len, warmup=args.warmup,
                                  repeats=args.repeats, threads=args.threads)
    return speed.speedup(dense, slim)
