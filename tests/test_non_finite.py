import math

import pytest
import torch
from transformers import TrainerCallback

from nn_prune_ext import NonFiniteError, SparseArgs, SparseTrainer, iter_mask_scores
from nn_prune_ext.validation import first_non_finite

from conftest import tiny_model
from test_trainer import tiny_dataset, training_args

pytestmark = pytest.mark.usefixtures("quiet_transformers")
BAD_STEP = 3


def test_first_non_finite_names_the_first_bad_tensor():
    finite = torch.ones(3)
    assert first_non_finite([("a", finite), ("b", None), ("c", finite)]) is None
    assert first_non_finite([("a", finite), ("b", torch.tensor([1.0, math.inf])), ("c", torch.tensor(math.nan))]) == "b"
    assert first_non_finite([]) is None
    # Whole numbers and empty tensors are finite; finite values near the float range are not mistaken for overflow.
    assert first_non_finite([("i", torch.arange(3)), ("e", torch.zeros(0)), ("big", torch.tensor([3e38, -3e38]))]) is None
    mixed = [("half", torch.ones(2, dtype=torch.float16)), ("double", torch.tensor([1.0, -math.inf], dtype=torch.float64)),
             ("nan", torch.tensor([math.nan]))]
    assert first_non_finite(mixed) == "double"
    assert first_non_finite(mixed[::2]) == "nan"
    assert first_non_finite([("bf16", torch.tensor([1.0, math.nan], dtype=torch.bfloat16))]) == "bf16"


class _Step(TrainerCallback):
    """Knows which optimizer step the next forward passes belong to."""

    def __init__(self):
        self.step = 1

    def on_step_begin(self, args, state, control, **kwargs):
        self.step = state.global_step + 1


def _trainer(tmp_path, poison, skip=False, prune=True, **overrides) -> tuple[SparseTrainer, _Step]:
    """A tiny run whose forward output `poison(output, step)` may spoil."""
    model = tiny_model("bert")
    step = _Step()
    model.register_forward_hook(lambda module, args, output: poison(output, step.step) if module.training else None)
    if prune:
        sparse_args = SparseArgs.hybrid(2.0, attention_block_rows=16, attention_block_cols=16, final_threshold=0.5,
                                        initial_warmup=1, final_warmup=1, skip_non_finite_steps=skip)
    else:
        sparse_args = SparseArgs(prune=False, skip_non_finite_steps=skip)
    settings = dict(max_steps=6, learning_rate=5e-3)
    settings.update(overrides)
    trainer = SparseTrainer(model=model, args=training_args(tmp_path, **settings), train_dataset=tiny_dataset(),
                            sparse_args=sparse_args, callbacks=[step])
    return trainer, step


def _loss_times(value: float):
    def poison(output, step):
        if step == BAD_STEP:  # the model computed its loss inside: spoil that
            output.loss = output.loss * value
        return output

    return poison


@pytest.mark.parametrize("value", [math.nan, math.inf], ids=["nan", "inf"])
@pytest.mark.parametrize("prune", [True, False], ids=["pruning", "filled"])
def test_a_non_finite_loss_stops_training_naming_the_step(tmp_path, value, prune):
    trainer, _ = _trainer(tmp_path, _loss_times(value), prune=prune)
    with pytest.raises(NonFiniteError, match=rf"optimizer step {BAD_STEP}: the loss is (nan|inf).*skip_non_finite_steps"):
        trainer.train()
    assert trainer.state.global_step == BAD_STEP - 1
    # Stopped before the optimizer stepped on the bad loss: every weight and score is still finite.
    assert first_non_finite(trainer.model.named_parameters()) is None


def test_a_non_finite_score_gradient_stops_training_naming_the_scores(tmp_path):
    trainer, step = _trainer(tmp_path, lambda output, _: output)
    scores = next(iter_mask_scores(trainer.model)).scores
    scores.register_hook(lambda grad: grad * math.nan if step.step == BAD_STEP else grad)
    with pytest.raises(NonFiniteError, match=rf"optimizer step {BAD_STEP}: the gradient of .*mask_scores.* is not finite"):
        trainer.train()
    assert first_non_finite(trainer.model.named_parameters()) is None


def test_scores_that_turn_non_finite_in_a_step_stop_training(tmp_path):
    class SpoilScores(TrainerCallback):  # stands in for an optimizer step that overflows
        def on_optimizer_step(self, args, state, control, **kwargs):
            if state.global_step + 1 == BAD_STEP:
                with torch.no_grad():
                    next(iter_mask_scores(trainer.model)).scores.view(-1)[0] = math.inf

    trainer, _ = _trainer(tmp_path, lambda output, _: output)
    trainer.callback_handler.callbacks.insert(0, SpoilScores())  # before the guard, like the optimizer itself
    with pytest.raises(NonFiniteError, match=rf"optimizer step {BAD_STEP}: .*mask_scores.* holds NaN or infinite values"):
        trainer.train()


class _Snapshots(TrainerCallback):
    def __init__(self, model):
        self.model, self.before, self.after = model, {}, {}

    def _copy(self):
        return {name: param.detach().clone() for name, param in self.model.named_parameters()}

    def on_step_begin(self, args, state, control, **kwargs):
        self.before[state.global_step + 1] = self._copy()

    def on_step_end(self, args, state, control, **kwargs):
        self.after[state.global_step] = self._copy()


def _assert_only_the_bad_step_was_skipped(trainer, snapshots):
    assert trainer.state.global_step == 6
    for step in (BAD_STEP - 1, BAD_STEP, BAD_STEP + 1):
        unchanged = all(torch.equal(snapshots.before[step][name], snapshots.after[step][name])
                        for name in snapshots.before[step])
        assert unchanged == (step == BAD_STEP), step
    assert first_non_finite(trainer.model.named_parameters()) is None
    assert trainer.non_finite_guard.skipped_steps == 1
    assert trainer.state.log_history[BAD_STEP - 1]["non_finite_steps_skipped"] == 1


def test_skip_non_finite_steps_skips_a_step_with_a_nan_loss_and_trains_on(tmp_path):
    trainer, _ = _trainer(tmp_path, _loss_times(math.nan), skip=True, gradient_accumulation_steps=2)
    snapshots = _Snapshots(trainer.model)
    trainer.add_callback(snapshots)
    trainer.train()
    _assert_only_the_bad_step_was_skipped(trainer, snapshots)


def test_skip_non_finite_steps_checks_every_gradient_not_only_the_scores(tmp_path):
    trainer, step = _trainer(tmp_path, lambda output, _: output, skip=True, max_grad_norm=0.0)
    classifier = trainer.model.classifier.weight  # not patched: no score sees its gradient
    classifier.register_hook(lambda grad: grad * math.inf if step.step == BAD_STEP else grad)
    snapshots = _Snapshots(trainer.model)
    trainer.add_callback(snapshots)
    trainer.train()
    _assert_only_the_bad_step_was_skipped(trainer, snapshots)
