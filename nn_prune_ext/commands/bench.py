"""`nn-prune bench CKPT`: dense against slim inference latency, measured side by side.

CKPT is either
- a slim checkpoint: the slim model is loaded as saved, and the dense reference is its stock
  class built with the dense sizes its config keeps. Those dense weights are random, which does
  not matter: latency depends on the shapes, not on the values;
- any checkpoint `nn_prune_ext.checkpoints.load_for_slimming` accepts (a `SparseTrainer`
  checkpoint, baked, zero-filled): the dense reference is that model baked, the slim one
  `optimize_model` of it. When layers were dropped from it (`drop_layers`, `prune_layers`), the
  dense reference is built like that of a slim checkpoint, with all the layers of the dense model.

For every batch size both models get the same seeded random token ids (attention mask all
ones) and are timed alternately (`nn_prune_ext.timing.compare_latency`). The table gives the
median latencies, the speedup (dense / slim median), the FLOPs speedup (dense / slim FLOPs of the
transformer layers, `model_flops`: the speedup the matrix products predict), the speed limit (the
speedup the two models' work allows on this device, fixed costs included: `nn_prune_ext.speed`,
calibrated here at each batch size) and the measured speedup over each limit. `--json` writes the same numbers with every sample. (Elsewhere in nn_prune_ext a
"FLOPs ratio" is slim / dense, the inverse of the FLOPs speedup.)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch
import transformers
from torch import nn

from ..checkpoints import load_for_slimming
from ..flops import model_flops
from ..patch import bake_model, is_patched
from ..slim import is_slim_model, optimize_model
from ..slim.classes import stock_class
from ..slim.layers import dropped_layer_indices
from ..slim.modeling_slim import dense_config, is_slim_config
from ..slim.optimize import count_parameters
from ..speed import calibrate_speed_model, can_calibrate
from ..slim import record_measured_speedup
from ..timing import compare_latency, describe_device
from ..transformers_internals import attention_implementation, build_model
from ..validation import InputError
from .arguments import LARGEST_COUNT, checkpoint_config, output_file, whole_number

SEED = 0
DEFAULT_BATCH_SIZES = (1, 8)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="measure the inference latency of a checkpoint's dense and slim models side by side",
        description="Time the dense and the slim model of a checkpoint on random token ids, alternating them "
        "round by round. CHECKPOINT may be a slim checkpoint (the dense reference is then its stock class with the "
        "dense sizes, random weights) or any checkpoint `nn-prune optimize` accepts (dense: the model baked; slim: "
        "the model slimmed here).",
    )
    parser.add_argument("checkpoint", metavar="CKPT", help="checkpoint folder (with its config.json)")
    parser.add_argument(
        "--batch-size",
        dest="batch_sizes",
        type=_batch_sizes,
        action="append",
        metavar="N[,N...]",
        help=f"batch size(s) to time; repeat the flag or give a comma list (default: {','.join(map(str, DEFAULT_BATCH_SIZES))})",
    )
    parser.add_argument("--seq-len", type=whole_number(1), default=128, help="tokens per sequence (default: 128)")
    parser.add_argument("--threads", type=whole_number(1),
                        help="torch intra-op threads while timing (default: torch's setting)")
    parser.add_argument("--warmup", type=whole_number(0), default=3, help="untimed rounds per batch size (default: 3)")
    parser.add_argument("--repeats", type=whole_number(1), default=20, help="timed rounds per batch size (default: 20)")
    parser.add_argument("--device", default="cpu", help="device to time on, e.g. cpu or cuda (default: cpu)")
    parser.add_argument("--json", dest="json_path", metavar="OUT",
                        help="also write the results as JSON to the file OUT (overwritten if it exists)")
    parser.set_defaults(run=run)


def _batch_sizes(text: str) -> list[int]:
    """One `--batch-size` value: a number or a comma list of numbers, each from 1 to `LARGEST_COUNT`."""
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a batch size or a comma list such as 1,8,32; got {text!r}") from None
    if not sizes or min(sizes) < 1 or max(sizes) > LARGEST_COUNT:
        raise argparse.ArgumentTypeError(f"batch sizes must be whole numbers from 1 to {LARGEST_COUNT}; got {text!r}")
    return sizes


# ----- the two models ----------------------------------------------------------------------
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


def measure_and_record(dense: nn.Module, slim: nn.Module, batch: dict[str, Any]) -> str:
    """Time `slim` against `dense` side by side on `batch`, record the speedup for `slim`'s model card.

    For the commands that write a slim checkpoint from a model they have loaded (`posttrain`, `heal`):
    the card then states a measured speedup beside the FLOPs.

    Returns:
        The line to print: the measured speedup and the FLOPs limit at the batch's length.
    """
    inputs = {key: value for key, value in batch.items() if key != "labels"}
    comparison = compare_latency({"dense": dense, "slim": slim}, inputs, warmup=2, repeats=10)
    speedup = comparison.speedup("slim")
    batch_size, seq_len = (int(size) for size in next(iter(inputs.values())).shape[:2])
    record_measured_speedup(slim, speedup, batch_size=batch_size, seq_len=seq_len, device=describe_device(slim))
    limit = model_flops(dense, seq_len) / max(model_flops(slim, seq_len), 1)
    return (f"measured speedup x{speedup:.2f} on a calibration batch of {batch_size} x {seq_len} tokens, side by side "
            f"(FLOPs limit x{limit:.2f}); recorded in the model card")


# ----- the command -------------------------------------------------------------------------
def _check_arguments(args: argparse.Namespace) -> None:
    """The checks argparse makes, for callers that build the Namespace themselves, then the device and paths.

    Raises:
        InputError: Before any model is loaded.
    """
    for name, low in (("seq_len", 1), ("warmup", 0), ("repeats", 1)):
        if not isinstance(getattr(args, name), int) or getattr(args, name) < low:
            raise InputError(f"--{name.replace('_', '-')} must be a whole number >= {low}, got {getattr(args, name)!r}.")
    if args.threads is not None and (not isinstance(args.threads, int) or args.threads < 1):
        raise InputError(f"--threads must be a whole number >= 1, got {args.threads!r}.")
    check_device(args.device)
    _check_seq_len(checkpoint_config(str(args.checkpoint), "CKPT"), args.seq_len)  # before the models load
    if args.json_path:
        output_file(str(args.json_path), "--json")


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


def _check_seq_len(config, seq_len: int) -> None:
    limit = getattr(config, "max_position_embeddings", None)
    if isinstance(limit, int) and seq_len > limit:
        raise InputError(
            f"--seq-len {seq_len} is longer than the model's max_position_embeddings ({limit}); pass --seq-len {limit} "
            "or less."
        )


def _table(rows: list[dict[str, Any]], flops_speedup: float) -> str:
    header = (
        f"{'batch':>5} {'dense ms':>10} {'IQR':>8} {'slim ms':>10} {'IQR':>8} {'speedup':>8} "
        f"{'FLOPs speedup':>13} {'speedup/FLOPs':>13} {'speed limit':>11} {'speedup/limit':>13}"
    )
    lines = [header, "-" * len(header)]
    for row in rows:
        dense, slim, limit = row["dense"], row["slim"], row["speed_limit"]
        limit_text = (f"{limit:>11.3f} {row['speedup_over_limit']:>13.3f}" if limit is not None
                      else f"{'n/a':>11} {'n/a':>13}")
        lines.append(
            f"{row['batch_size']:>5} {dense['median_ms']:>10.3f} {dense['iqr_ms']:>8.3f} {slim['median_ms']:>10.3f} "
            f"{slim['iqr_ms']:>8.3f} {row['speedup']:>8.3f} {flops_speedup:>13.3f} {row['speedup_over_flops']:>13.3f} "
            f"{limit_text}"
        )
    return "\n".join(lines)


def speed_limit(dense: nn.Module, slim: nn.Module, batch_size: int, args: argparse.Namespace) -> float | None:
    """The speedup the work of `dense` and `slim` allows on this device (`nn_prune_ext.speed`), or `None`
    for architectures the speed model cannot be calibrated on (encoder-decoders, unpruned experts)."""
    if not can_calibrate(dense):
        return None
    speed = calibrate_speed_model(dense, batch_size=batch_size, seq_len=args.seq_len, warmup=args.warmup,
                                  repeats=args.repeats, threads=args.threads)
    return speed.speedup(dense, slim)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Time the dense and slim models of `args.checkpoint`, print the table; returns the results."""
    _check_arguments(args)
    batch_sizes = sorted({size for sizes in (args.batch_sizes or [DEFAULT_BATCH_SIZES]) for size in sizes})
    dense, slim, description = load_pair(args.checkpoint)
    dense, slim = dense.to(args.device), slim.to(args.device)
    flops = {"dense": model_flops(dense, args.seq_len), "slim": model_flops(slim, args.seq_len)}
    flops_speedup = flops["dense"] / max(flops["slim"], 1)
    rows = []
    for batch_size in batch_sizes:
        inputs = random_inputs(dense.config, batch_size, args.seq_len, args.device)
        comparison = compare_latency(
            {"dense": dense, "slim": slim}, inputs, warmup=args.warmup, repeats=args.repeats, threads=args.threads
        )
        speedup = comparison.speedup("slim")
        limit = speed_limit(dense, slim, batch_size, args)
        rows.append({
            "batch_size": batch_size,
            "dense": comparison.results["dense"].to_dict(),
            "slim": comparison.results["slim"].to_dict(),
            "speedup": speedup,
            "speedup_over_flops": speedup / flops_speedup,
            "speed_limit": limit,
            "speedup_over_limit": speedup / limit if limit is not None else None,
        })
    results = {
        "checkpoint": str(args.checkpoint),
        "model_class": type(dense).__name__,
        "description": description,
        "device": str(args.device),
        "threads": args.threads if args.threads is not None else torch.get_num_threads(),
        "seq_len": args.seq_len,
        "warmup": args.warmup,
        "repeats": args.repeats,
        "parameters": {"dense": count_parameters(dense), "slim": count_parameters(slim)},
        "flops": flops,
        "flops_speedup": flops_speedup,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "rows": rows,
    }
    print(f"{results['model_class']} ({dense.config.model_type}): {description}")
    print(
        f"parameters {results['parameters']['dense']:,} -> {results['parameters']['slim']:,}; FLOPs of the "
        f"transformer layers at seq len {args.seq_len}: {flops['dense']:,} -> {flops['slim']:,}"
    )
    print(_table(rows, flops_speedup))
    print(
        f"median of {args.repeats} timed rounds after {args.warmup} warm-up rounds, dense and slim alternating; "
        f"{results['device']}, {results['threads']} threads, torch {torch.__version__}\n"
        "speedup = dense / slim median; FLOPs speedup = dense / slim FLOPs; speed limit = dense / slim time "
        "predicted from all their work (fixed costs included, rates fitted here); IQR = interquartile range (ms)"
    )
    if args.json_path:
        path = Path(args.json_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
        print(f"results written to {path}")
    return results
