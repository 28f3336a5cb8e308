import pytest
import torch

from nn_prune_ext import InputError, PostTrainingArgs, SparseArgs, apply_masks, model_flops, prune_and_heal
from nn_prune_ext.posttrain import post_training_prune

from conftest import labelled_batches, tiny_batch, tiny_model
from test_trainer import tiny_dataset, training_args

pytestmark = pytest.mark.usefixtures("quiet_transformers")


def _heal(tmp_path, model, rounds=1, learning_rate=1e-3, **overrides):
    return prune_and_heal(
        model, labelled_batches(4), tiny_dataset(32), training_args(tmp_path, max_steps=4, learning_rate=learning_rate),
        PostTrainingArgs(flops_budget=0.5), rounds=rounds, eval_dataset=tiny_dataset(16, seed=1), **overrides,
    )


def test_before_healing_the_slim_model_is_its_masked_twin(tmp_path):
    model = tiny_model("bert")
    reference = post_training_prune(model, labelled_batches(4), flops_budget=0.5)
    # A learning rate of 0 heals nothing: what comes out is the pruned, slimmed model itself.
    result = _heal(tmp_path, model, learning_rate=0.0)
    batch = tiny_batch("bert")
    with torch.no_grad(), apply_masks(model, reference.masks.heads, reference.masks.units):
        masked = model.eval()(**batch).logits
    with torch.no_grad():
        torch.testing.assert_close(result.model(**batch).logits, masked, atol=1e-5, rtol=1e-5)
    assert result.rounds[0].metrics_before["eval_loss"] == pytest.approx(result.rounds[0].metrics_after["eval_loss"])


def test_healing_trains_the_slim_model_and_leaves_the_input_model_as_it_was(tmp_path):
    model = tiny_model("bert").train()
    before = {name: parameter.detach().clone() for name, parameter in model.named_parameters()}
    result = _heal(tmp_path, model)
    step = result.rounds[0]
    assert step.train_metrics["train_loss"] > 0 and step.metrics_after["eval_loss"] != step.metrics_before["eval_loss"]
    assert model_flops(result.model, 12) <= 0.5 * model_flops(model, 12) * 1.02  # healing keeps the slim sizes
    for name, parameter in model.named_parameters():
        assert torch.equal(parameter, before[name]) and parameter.requires_grad, name
    assert model.training  # the teacher's eval mode is undone


def test_iterative_rounds_compound_to_the_budget(tmp_path):
    model = tiny_model("bert")
    result = _heal(tmp_path, model, rounds=2)
    assert [step.budget for step in result.rounds] == [pytest.approx(0.5 ** 0.5)] * 2
    assert [step.steps for step in result.rounds] == [4, 4]
    assert result.rounds[1].search.dense_cost == pytest.approx(result.rounds[0].search.cost, rel=0.02)
    assert result.rounds[1].search.cost <= 0.5 * result.rounds[0].search.dense_cost * 1.02
    assert (tmp_path / "round-1").is_dir() and (tmp_path / "round-2").is_dir()
    assert "round 2: kept 0.707" in str(result)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"prune_args": None}, "needs a budget"), ({"prune_args": {"flops_budget": 0.5}}, "needs a budget.*got dict"),
     ({"rounds": 0}, "rounds must be a whole number >= 1"), ({"sparse_args": SparseArgs.hybrid()}, "without pruning")],
    ids=["no_budget", "budget_as_dict", "rounds", "pruning_while_healing"],
)
def test_bad_settings_are_input_errors(tmp_path, kwargs, message):
    settings = dict(prune_args=PostTrainingArgs(flops_budget=0.5))
    settings.update(kwargs)
    with pytest.raises(InputError, match=message):
        prune_and_heal(tiny_model("bert"), labelled_batches(1), tiny_dataset(8), training_args(tmp_path), **settings)


def test_one_batch_instead_of_a_list_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="calibration_batches is one batch"):
        prune_and_heal(tiny_model("bert"), labelled_batches(1)[0], tiny_dataset(8), training_args(tmp_path),
                       PostTrainingArgs(flops_budget=0.5))
