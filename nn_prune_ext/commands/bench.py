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

from ..atomic_files import write_text_atomically
from ..validation import InputError
from .arguments import LARGEST_COUNT, checkpoint_config, checkpoint_folder, output_file, whole_number

DEFAULT_BATCH_SIZES = (1, 8)

# The models and the timing live in `measure` (torch and transformers), imported once the arguments are
# checked. These names were defined here before; they still resolve here (`commands.bench.random_inputs`).
_MEASURE_NAMES = ("SEED", "dense_reference", "load_pair", "random_inputs", "measure_and_record",
                  "available_devices", "check_device", "speed_limit")


def __getattr__(name: str) -> Any:
    if name in _MEASURE_NAMES:
        from . import measure

        return getattr(measure, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="measure the inference latency of a checkpoint's dense and slim models side by side",
        description="Time the dense and the slim model of a checkpoint on random token ids, alternating them "
        "round by round. CKPT may be a slim checkpoint (the dense reference is then its stock class with the "
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


# ----- the command -------------------------------------------------------------------------
def _check_arguments(args: argparse.Namespace) -> None:
    """The checks argparse makes, for callers that build the Namespace themselves, then the paths and the device.

    Raises:
        InputError: Before any model is loaded; the paths before torch is imported.
    """
    for name, low in (("seq_len", 1), ("warmup", 0), ("repeats", 1)):
        if not isinstance(getattr(args, name), int) or getattr(args, name) < low:
            raise InputError(f"--{name.replace('_', '-')} must be a whole number >= {low}, got {getattr(args, name)!r}.")
    if args.threads is not None and (not isinstance(args.threads, int) or args.threads < 1):
        raise InputError(f"--threads must be a whole number >= 1, got {args.threads!r}.")
    checkpoint_folder(str(args.checkpoint), "CKPT")
    if args.json_path:
        output_file(str(args.json_path), "--json")
    from .measure import check_device

    check_device(args.device)
    _check_seq_len(checkpoint_config(str(args.checkpoint), "CKPT"), args.seq_len)  # before the models load


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


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Time the dense and slim models of `args.checkpoint`, print the table; returns the results."""
    _check_arguments(args)
    import torch  # imported once the arguments are checked
    import transformers

    from ..flops import model_flops
    from ..slim.optimize import count_parameters
    from ..timing import compare_latency
    from .measure import load_pair, random_inputs, speed_limit

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
        write_text_atomically(path, json.dumps(results, indent=2) + "\n")
        print(f"results written to {path}")
    return results
