import json
import os

import pytest
import torch
from datasets import Dataset
from transformers import Trainer, TrainingArguments

from nn_prune_ext import (
    InputError,
    ScoreOptimizer,
    SparseArgs,
    SparseTrainer,
    SparsitySchedule,
    UnsupportedArchitectureError,
    bake_model,
    densities,
    get_layout,
    is_patched,
    iter_mask_scores,
    set_thresholds,
)
from nn_prune_ext.trainer import SPARSE_STATE_NAME, too_short_to_prune

from conftest import VOCAB, tiny_batch, tiny_model

pytestmark = pytest.mark.usefixtures("quiet_transformers")


def tiny_dataset(size: int = 64, seq: int = 12, seed: int = 0, model_type: str | None = None) -> Dataset:
    """A learnable toy task: the label is the first token modulo 3 (for images: the sign of the first pixel)."""
    generator = torch.Generator().manual_seed(seed)
    if model_type is not None and get_layout(model_type).input_kind == "pixels":
        pixels = tiny_batch(model_type, batch=size, seed=seed)["pixel_values"]
        return Dataset.from_dict({"pixel_values": pixels.tolist(), "labels": (pixels[:, 0, 0, 0] > 0).long().tolist()})
    ids = torch.randint(1, VOCAB, (size, seq), generator=generator)
    return Dataset.from_dict(
        {"input_ids": ids.tolist(), "attention_mask": [[1] * seq] * size, "labels": (ids[:, 0] % 3).tolist()}
    )


def training_args(output_dir, **overrides) -> TrainingArguments:
    settings = dict(
        max_steps=24, per_device_train_batch_size=8, learning_rate=1e-3, logging_steps=1, report_to=[],
        save_strategy="no", use_cpu=True, seed=0, disable_tqdm=True,
    )
    settings.update(overrides)
    return TrainingArguments(str(output_dir), **settings)


def eval_masks(model) -> list[torch.Tensor]:
    return [s.method.mask(s.importance(), s.threshold, training=False) for s in iter_mask_scores(model)]


def test_density_follows_the_schedule(model_type, tmp_path):
    # topK keeps exactly floor(threshold * n) of each matrix's blocks, so the density is the
    # scheduled threshold up to one block per matrix.
    sparse_args = SparseArgs(attention_block_rows=4, attention_block_cols=4, dense_block_rows=4, dense_block_cols=4,
                             initial_threshold=1.0, final_threshold=0.2, initial_warmup=3, final_warmup=5)
    trainer = SparseTrainer(model=tiny_model(model_type), args=training_args(tmp_path), train_dataset=tiny_dataset(model_type=model_type),
                            sparse_args=sparse_args)
    trainer.train()
    schedule = SparsitySchedule.from_args(sparse_args, 24)
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logs) == 24
    for entry in logs:
        expected = schedule.threshold(entry["step"])
        assert entry["threshold"] == pytest.approx(expected)
        assert entry["density_total"] == pytest.approx(expected, abs=1 / 16)
        assert entry["density_total"] <= expected + 1e-9
    assert logs[0]["density_total"] == 1.0 and logs[-1]["threshold"] == pytest.approx(0.2)
    # Scores moved, and the trainer's optimizer is accelerate's wrapper around ours.
    assert all(s.scores.abs().sum() > 0 for s in iter_mask_scores(trainer.model))
    assert isinstance(trainer.optimizer.optimizer, ScoreOptimizer)


def test_gradient_accumulation_steps_the_schedule_per_optimizer_step(tmp_path):
    sparse_args = SparseArgs(initial_threshold=1.0, final_threshold=0.5, initial_warmup=0, final_warmup=0)
    args = training_args(tmp_path, max_steps=6, per_device_train_batch_size=4, gradient_accumulation_steps=3)
    trainer = SparseTrainer(model=tiny_model("bert"), args=args, train_dataset=tiny_dataset(), sparse_args=sparse_args)
    trainer.train()
    schedule = SparsitySchedule.from_args(sparse_args, 6)
    logged = [(entry["step"], entry["threshold"]) for entry in trainer.state.log_history if "loss" in entry]
    assert [step for step, _ in logged] == list(range(1, 7))
    assert [t for _, t in logged] == pytest.approx([schedule.threshold(step) for step in range(1, 7)])


def finetune(trainer_class, output_dir, **extra):
    """A plain fine-tuning script written for `transformers.Trainer`."""
    model = tiny_model("roberta")
    trainer = trainer_class(
        model=model,
        args=training_args(output_dir, max_steps=8, eval_strategy="steps", eval_steps=4),
        train_dataset=tiny_dataset(),
        eval_dataset=tiny_dataset(16, seed=1),
        compute_metrics=lambda p: {"accuracy": float((p.predictions.argmax(-1) == p.label_ids).mean())},
        **extra,
    )
    trainer.train()
    metrics = trainer.evaluate()
    trainer.save_model(str(output_dir / "final"))
    return trainer, metrics


def test_plain_trainer_script_runs_unchanged(tmp_path):
    _, dense_metrics = finetune(Trainer, tmp_path / "dense")
    trainer, sparse_metrics = finetune(
        SparseTrainer, tmp_path / "sparse",
        sparse_args=SparseArgs.hybrid(1.0, attention_block_rows=16, attention_block_cols=16, final_threshold=0.5,
                                      initial_warmup=1, final_warmup=2),
    )
    assert set(dense_metrics) <= set(sparse_metrics)
    assert sparse_metrics["eval_density_total"] < 1.0
    assert os.path.exists(tmp_path / "sparse" / "final" / "model.safetensors")
    assert any("regularization_penalty" in entry for entry in trainer.state.log_history)


def test_evaluation_uses_the_final_threshold(tmp_path):
    model = tiny_model("bert")
    data = tiny_dataset(16)
    trainer = SparseTrainer(model=model, args=training_args(tmp_path), eval_dataset=data,
                            sparse_args=SparseArgs(initial_threshold=1.0, final_threshold=0.3))
    with torch.no_grad():  # distinct scores, so the final threshold prunes a definite set
        for scores in iter_mask_scores(model):
            scores.scores.normal_()
    predicted = torch.from_numpy(trainer.predict(data).predictions)
    metrics = trainer.evaluate()
    assert metrics["eval_density_total"] == pytest.approx(0.3, abs=1 / 16) and "density_total" not in metrics
    assert densities(model)["total"] == 1.0  # back to the current (initial) threshold afterwards

    batch = data.with_format("torch")[:]
    with torch.no_grad():
        unpruned = model(**batch).logits
        set_thresholds(model, attention=0.3, dense=0.3)
        final = model(**batch).logits
        set_thresholds(model, attention=1.0, dense=1.0)
    torch.testing.assert_close(predicted, final)
    assert (final - unpruned).abs().max() > 1e-3

    current = SparseTrainer(model=model, args=training_args(tmp_path), eval_dataset=data,
                            sparse_args=SparseArgs(initial_threshold=1.0, final_threshold=0.3,
                                                   eval_with_current_patch_params=True))
    torch.testing.assert_close(torch.from_numpy(current.predict(data).predictions), unpruned)


def test_distillation_from_a_teacher(tmp_path):
    teacher = tiny_model("bert", seed=1)
    sparse_args = SparseArgs(final_threshold=0.5, distil_alpha_ce=0.5, distil_alpha_teacher=0.5,
                             distil_temperature=2.0, initial_warmup=1, final_warmup=1)
    trainer = SparseTrainer(model=tiny_model("bert"), args=training_args(tmp_path, max_steps=6),
                            train_dataset=tiny_dataset(), sparse_args=sparse_args, teacher_model=teacher)
    trainer.train()
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert all(entry["distil_loss"] > 0 and entry["task_loss"] > 0 for entry in logs)
    # loss = 0.5 * task + 0.5 * distil, for the single micro-batch of each step.
    for entry in logs:
        assert entry["loss"] == pytest.approx(0.5 * entry["task_loss"] + 0.5 * entry["distil_loss"], rel=1e-3)
    assert not any(p.requires_grad for p in trainer.teacher.parameters())


def test_distilling_from_itself_costs_nothing_at_the_start(tmp_path):
    student = tiny_model("distilbert")
    teacher = tiny_model("distilbert")
    sparse_args = SparseArgs(distil_alpha_ce=1.0, distil_alpha_teacher=1.0, initial_warmup=0.5)
    trainer = SparseTrainer(model=student, args=training_args(tmp_path, max_steps=2, learning_rate=0.0,
                                                                warmup_steps=0),
                            train_dataset=tiny_dataset(), sparse_args=sparse_args, teacher_model=teacher)
    student.config.hidden_dropout_prob = 0
    for module in student.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    trainer.train()
    first = next(entry for entry in trainer.state.log_history if "distil_loss" in entry)
    assert first["distil_loss"] == pytest.approx(0.0, abs=1e-6)


def _resume_setup(output_dir, max_steps=12):
    sparse_args = SparseArgs.hybrid(2.0, attention_block_rows=16, attention_block_cols=16, final_threshold=0.5,
                                    initial_warmup=2, final_warmup=2)
    args = training_args(output_dir, max_steps=max_steps, save_strategy="steps", save_steps=6,
                         learning_rate=5e-3)
    return SparseTrainer(model=tiny_model("llama"), args=args, train_dataset=tiny_dataset(), sparse_args=sparse_args)


def test_resume_ends_with_the_masks_of_an_uninterrupted_run(tmp_path):
    uninterrupted = _resume_setup(tmp_path / "a")
    uninterrupted.train()
    reference = eval_masks(uninterrupted.model)
    assert 0 < densities(uninterrupted.model)["total"] < 1

    checkpoint = tmp_path / "a" / "checkpoint-6"
    state = json.loads((checkpoint / SPARSE_STATE_NAME).read_text())
    assert state["step"] == 6 and state["sparse_args"]["regularization"] == "l1"

    resumed = _resume_setup(tmp_path / "b")
    resumed.train(resume_from_checkpoint=str(checkpoint))
    assert resumed.state.global_step == 12
    for mine, theirs in zip(eval_masks(resumed.model), reference):
        assert torch.equal(mine, theirs)
    for mine, theirs in zip(iter_mask_scores(resumed.model), iter_mask_scores(uninterrupted.model)):
        torch.testing.assert_close(mine.scores, theirs.scores)


def test_model_init_is_patched(tmp_path):
    trainer = SparseTrainer(model_init=lambda: tiny_model("qwen2"), args=training_args(tmp_path, max_steps=3),
                            train_dataset=tiny_dataset(), sparse_args=SparseArgs(initial_warmup=0, final_warmup=0))
    trainer.train()
    assert is_patched(trainer.model)
    assert any(entry.get("density_total", 1.0) < 1.0 for entry in trainer.state.log_history)


def test_bake_after_training_keeps_eval_outputs(tmp_path):
    trainer = SparseTrainer(model=tiny_model("mistral"), args=training_args(tmp_path, max_steps=10),
                            train_dataset=tiny_dataset(), sparse_args=SparseArgs.struct(
                                5.0, final_threshold=0.5, initial_warmup=1, final_warmup=2))
    trainer.train()
    model = trainer.model.eval()
    batch = tiny_dataset(8, seed=3).with_format("torch")[:]
    with torch.no_grad():
        patched = model(**batch).logits
        bake_model(model)
        baked = model(**batch).logits
    assert (patched - baked).abs().max() <= 1e-5


def test_unsupported_model_is_rejected_by_the_trainer(tmp_path):
    from transformers import AutoConfig, AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_config(
        AutoConfig.for_model("ctrl", n_embd=32, n_head=2, n_layer=1, dff=64, vocab_size=50)
    )
    with pytest.raises(UnsupportedArchitectureError, match="register_layout"):
        SparseTrainer(model=model, args=training_args(tmp_path), sparse_args=SparseArgs())


def test_own_optimizer_is_wrapped_and_a_prebuilt_scheduler_is_refused(tmp_path):
    model = tiny_model("bert")
    patched = SparseTrainer(model=model, args=training_args(tmp_path, max_steps=2), train_dataset=tiny_dataset(),
                            sparse_args=SparseArgs(), optimizers=(torch.optim.SGD(model.parameters(), lr=0.1), None))
    patched.train()
    assert isinstance(patched.optimizer.optimizer, ScoreOptimizer)
    assert isinstance(patched.optimizer.optimizer.optimizer, torch.optim.SGD)

    model = tiny_model("bert")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    trainer = SparseTrainer(model=model, args=training_args(tmp_path, max_steps=2), train_dataset=tiny_dataset(),
                            sparse_args=SparseArgs(), optimizers=(optimizer, scheduler))
    with pytest.raises(ValueError, match=r"optimizers=\(optimizer, None\)"):
        trainer.train()


def test_distillation_under_gradient_accumulation_weighs_per_batch_means(tmp_path):
    # LlamaForSequenceClassification takes **kwargs but ignores num_items_in_batch: the task loss
    # must still come out as a per-batch mean (about ln 3 for an untrained 3-class head).
    sparse_args = SparseArgs(distil_alpha_ce=0.5, distil_alpha_teacher=0.5, initial_warmup=1, final_warmup=1)
    trainer = SparseTrainer(model=tiny_model("llama"), args=training_args(tmp_path, max_steps=3, learning_rate=0.0,
                                                                          gradient_accumulation_steps=2),
                            train_dataset=tiny_dataset(), sparse_args=sparse_args, teacher_model=tiny_model("llama", 1))
    trainer.train()
    logs = [e for e in trainer.state.log_history if "loss" in e]
    with torch.no_grad():
        batch = tiny_dataset().with_format("torch")[:16]
        per_batch = trainer.model.eval()(**batch).loss.item()
    for entry in logs:
        # Other batches and dropout: close to, not twice (the accumulation factor), the mean loss.
        assert entry["task_loss"] == pytest.approx(per_batch, rel=0.25)
        assert entry["loss"] == pytest.approx(0.5 * entry["task_loss"] + 0.5 * entry["distil_loss"], rel=1e-3)


def test_a_second_train_call_works(tmp_path):
    trainer = SparseTrainer(model=tiny_model("bert"), args=training_args(tmp_path, max_steps=2),
                            train_dataset=tiny_dataset(), sparse_args=SparseArgs(initial_warmup=0, final_warmup=0))
    trainer.train()
    trainer.train()
    assert isinstance(trainer.optimizer.optimizer, ScoreOptimizer)


def test_resuming_with_another_schedule_is_refused(tmp_path):
    first = _resume_setup(tmp_path / "a")
    first.train()
    changed = _resume_setup(tmp_path / "b", max_steps=20)
    with pytest.raises(ValueError, match="total optimizer steps: checkpoint 12, now 20"):
        changed.train(resume_from_checkpoint=str(tmp_path / "a" / "checkpoint-6"))
    other_args = SparseTrainer(model=tiny_model("llama"), args=training_args(tmp_path / "c", max_steps=12),
                               train_dataset=tiny_dataset(), sparse_args=SparseArgs.hybrid(
                                   2.0, attention_block_rows=16, attention_block_cols=16, final_threshold=0.6,
                                   initial_warmup=2, final_warmup=2))
    with pytest.raises(ValueError, match="final_threshold: checkpoint 0.5, now 0.6"):
        other_args.train(resume_from_checkpoint=str(tmp_path / "a" / "checkpoint-6"))


def test_filled_stage_fine_tunes_a_slim_model_with_distillation(tmp_path):
    from nn_prune_ext import load_slim, optimize_model

    from slim_helpers import masked_model

    slim = optimize_model(masked_model("bert"))
    before = {key: value.clone() for key, value in slim.state_dict().items()}
    trainer = SparseTrainer(
        model=slim, args=training_args(tmp_path, max_steps=6), train_dataset=tiny_dataset(),
        sparse_args=SparseArgs.filled(), teacher_model=tiny_model("bert"),
    )
    trainer.train()
    after = slim.state_dict()
    assert not is_patched(slim) and {k: v.shape for k, v in after.items()} == {k: v.shape for k, v in before.items()}
    assert not torch.equal(after["classifier.weight"], before["classifier.weight"])
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert all("distil_loss" in entry and "density_attention" not in entry for entry in logs)
    trainer.save_model(str(tmp_path / "final"))
    reloaded = load_slim(tmp_path / "final").eval()
    batch = {"input_ids": torch.tensor(tiny_dataset(4)["input_ids"])}
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**batch).logits, slim.eval()(**batch).logits)


def test_filled_stage_refuses_a_model_still_patched(tmp_path):
    from nn_prune_ext import patch_model

    model = tiny_model("bert")
    patch_model(model, SparseArgs())
    with pytest.raises(ValueError, match="optimize_model"):
        SparseTrainer(model=model, args=training_args(tmp_path), sparse_args=SparseArgs.filled())


def test_filled_stage_loads_a_teacher_path_with_the_stock_class(tmp_path):
    from transformers import BertForSequenceClassification

    from nn_prune_ext import optimize_model

    from slim_helpers import masked_model

    tiny_model("bert").save_pretrained(tmp_path / "teacher")
    trainer = SparseTrainer(model=optimize_model(masked_model("bert")), args=training_args(tmp_path),
                            sparse_args=SparseArgs.filled(str(tmp_path / "teacher")))
    assert type(trainer.teacher) is BertForSequenceClassification


def test_save_model_of_a_patched_model_is_a_checkpoint_nn_prune_optimize_accepts(model_type, tmp_path):
    from nn_prune_ext.checkpoints import load_for_slimming

    sparse_args = SparseArgs.struct(attention_pruning_method="topK", dense_pruning_method="topK",
                                    regularization="disabled", final_threshold=0.5, initial_warmup=0, final_warmup=0)
    trainer = SparseTrainer(model=tiny_model(model_type), args=training_args(tmp_path, max_steps=3),
                            train_dataset=tiny_dataset(model_type=model_type), sparse_args=sparse_args)
    trainer.train()
    trainer.save_model(str(tmp_path / "final"))
    trainer.save_model(str(tmp_path / "internal"), _internal_call=True)  # the path push_to_hub takes
    assert (tmp_path / "internal" / SPARSE_STATE_NAME).is_file()
    state = json.loads((tmp_path / "final" / SPARSE_STATE_NAME).read_text())
    assert state["step"] == 3 and state["sparse_args"]["final_threshold"] == 0.5
    reloaded = load_for_slimming(tmp_path / "final")
    batch = {key: value for key, value in tiny_dataset(4, model_type=model_type).with_format("torch")[:].items()
             if key != "labels"}
    with trainer.controller.evaluation(trainer.model), torch.no_grad():
        expected = trainer.model.eval()(**batch).logits
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**batch).logits, expected)


def test_sparse_args_of_another_type_are_an_input_error(tmp_path):
    with pytest.raises(InputError, match="sparse_args must be a SparseArgs, got dict"):
        SparseTrainer(model=tiny_model("bert"), args=training_args(tmp_path), sparse_args={"final_threshold": 0.5})


def test_a_run_too_short_to_move_the_scores_is_told_so(tmp_path, caplog):
    hybrid = SparseArgs.hybrid(1000.0, attention_block_rows=16, attention_block_cols=16)
    assert too_short_to_prune(hybrid, 219) == (
        "This run of 219 optimizer steps is too short to prune anything: the attention and FFN scores "
        "(sigmoied_threshold) must move 2.20 from their start to the final threshold 0.1 before a structure is "
        "masked, which takes at least 220 steps, since Adam moves a score by about mask_scores_learning_rate=0.01 "
        "per step at most. Train longer or raise mask_scores_learning_rate."
    )
    assert too_short_to_prune(hybrid, 220) is None
    # The warning is true: 24 steps under a strong penalty leave every mask full.
    trainer = SparseTrainer(model=tiny_model("bert"), args=training_args(tmp_path), train_dataset=tiny_dataset(),
                            sparse_args=hybrid)
    trainer.train()
    assert [record.getMessage() for record in caplog.records if "too short to prune" in record.getMessage()] == [
        too_short_to_prune(hybrid, 24)
    ]
    assert densities(trainer.model) == {"attention": 1.0, "dense": 1.0, "total": 1.0}


def test_a_run_long_enough_for_its_scores_prunes_without_the_warning(tmp_path, caplog):
    fast = SparseArgs.hybrid(1000.0, attention_block_rows=16, attention_block_cols=16, mask_scores_learning_rate=0.5)
    trainer = SparseTrainer(model=tiny_model("bert"), args=training_args(tmp_path), train_dataset=tiny_dataset(),
                            sparse_args=fast)
    trainer.train()
    assert not [record for record in caplog.records if "too short to prune" in record.getMessage()]
    assert densities(trainer.model)["total"] < 1.0


def test_only_the_kinds_a_run_cannot_prune_are_named():
    ffn_only = SparseArgs(attention_pruning_method="topK", dense_pruning_method="sigmoied_threshold",
                          initial_threshold=0.0, final_threshold=0.1)
    assert too_short_to_prune(ffn_only, 100).startswith(
        "This run of 100 optimizer steps is too short to prune the FFNs: the FFN scores (sigmoied_threshold)")
    assert too_short_to_prune(ffn_only, 100, kinds=["attention"]) is None  # a model with attention scores only
    assert too_short_to_prune(SparseArgs(), 2) is None  # topK prunes by a kept fraction from the first ramp step
    frozen = SparseArgs.hybrid(mask_scores_learning_rate=0.0)
    assert "which never happens" in too_short_to_prune(frozen, 10**6)


def test_torch_compile_follows_the_moving_thresholds_without_recompiling(tmp_path):
    """`torch_compile=True`: the schedule moves the thresholds every step; a compiled graph takes them as inputs,
    so training compiles once (twice: transformers sets `config.problem_type` in the first forward) and its masks
    follow the schedule as eager ones do."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    sparse_args = SparseArgs.hybrid(attention_block_rows=4, attention_block_cols=4, initial_threshold=0.2,
                                    final_threshold=0.6, initial_warmup=0, final_warmup=0, mask_scores_learning_rate=0.1)
    args = training_args(tmp_path, max_steps=8, torch_compile=True, torch_compile_backend="aot_eager")
    trainer = SparseTrainer(model=tiny_model("bert"), args=args, train_dataset=tiny_dataset(), sparse_args=sparse_args)
    trainer.train()
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    schedule = SparsitySchedule.from_args(sparse_args, 8)
    assert [entry["threshold"] for entry in logs] == pytest.approx([schedule.threshold(step) for step in range(1, 9)])
    assert logs[0]["density_total"] == 1.0 and logs[-1]["density_total"] < 1.0
    assert all(torch.isfinite(torch.tensor(entry["loss"])) for entry in logs)
    assert counters["stats"]["unique_graphs"] <= 2
