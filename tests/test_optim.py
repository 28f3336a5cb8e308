import copy

import pytest
import torch

from nn_prune_ext import ScoreOptimizer, SparseArgs, iter_mask_scores, patch_model
from nn_prune_ext.optim import SCORES_GROUP_NAME

from conftest import tiny_batch, tiny_model


def _patched(seed=0):
    model = tiny_model("bert", seed=seed)
    patch_model(model, SparseArgs.hybrid(attention_block_rows=16, attention_block_cols=16))
    return model.train()


def _wrapped(model, lam=2.0):
    inner = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    return ScoreOptimizer(inner, list(iter_mask_scores(model)), learning_rate=0.05,
                          regularization_lambda=lambda: lam, kind_multipliers={"attention": 1.0, "dense": 3.0})


def test_scores_get_their_own_group_without_weight_decay():
    model = _patched()
    optimizer = _wrapped(model)
    score_ids = {id(s.scores) for s in iter_mask_scores(model)}
    groups = optimizer.param_groups
    assert [g.get("name") for g in groups].count(SCORES_GROUP_NAME) == 1
    (scores_group,) = [g for g in groups if g.get("name") == SCORES_GROUP_NAME]
    assert {id(p) for p in scores_group["params"]} == score_ids
    assert scores_group["lr"] == 0.05 and scores_group["weight_decay"] == 0.0
    for group in groups:
        if group is not scores_group:
            assert not score_ids & {id(p) for p in group["params"]}
    assert isinstance(optimizer, torch.optim.Optimizer)  # LR schedulers accept it


def test_penalty_gradient_is_added_once_per_step():
    model = _patched()
    optimizer = _wrapped(model, lam=2.0)
    groups = [s for s in iter_mask_scores(model)]
    with torch.no_grad():
        for scores in groups:
            scores.scores.normal_()
    optimizer.apply_penalty()
    # d/ds of lam * mean_g(mult_g * mean(sigmoid(s_g))) = lam * mult_g * sigmoid'(s) / (n_g * G)
    for scores in groups:
        multiplier = 3.0 if scores.kind == "dense" else 1.0
        sig = torch.sigmoid(scores.scores.detach())
        expected = 2.0 * multiplier * sig * (1 - sig) / scores.scores.numel() / len(groups)
        torch.testing.assert_close(scores.scores.grad, expected)
    assert optimizer.last_penalty is not None


@pytest.mark.parametrize("attention, dense", [("topK", "sigmoied_threshold"), ("sigmoied_threshold", "sigmoied_threshold"),
                                               ("l0", "l0"), ("threshold", "topK")])
def test_penalty_equals_the_mean_over_groups_of_each_methods_penalty(attention, dense):
    """The penalty is computed once per method over the concatenated scores; its value and gradient are those of
    the definition, group by group."""
    model = tiny_model("bert")
    regularization = "l0" if attention == "l0" else "l1"
    patch_model(model, SparseArgs(attention_pruning_method=attention, dense_pruning_method=dense,
                                  regularization=regularization, attention_block_rows=16, attention_block_cols=16,
                                  initial_threshold=0.5 if "threshold" not in (attention, dense) else 0.0))
    optimizer = _wrapped(model, lam=2.0)
    groups = list(iter_mask_scores(model))
    with torch.no_grad():
        for scores in groups:
            scores.scores.normal_()
    params = [scores.scores for scores in groups]
    multipliers = {"attention": 1.0, "dense": 3.0}
    with torch.enable_grad():
        reference = torch.stack([multipliers[s.kind] * s.method.penalty(s.scores) for s in groups]).mean()
        expected = torch.autograd.grad(reference, params)
    torch.testing.assert_close(optimizer.penalty(), reference.detach())
    optimizer.apply_penalty()
    for param, grad in zip(params, expected):
        torch.testing.assert_close(param.grad, 2.0 * grad)
    optimizer.kind_multipliers["dense"] = 5.0  # the cached per-score weights follow the multipliers
    multipliers["dense"] = 5.0
    reference = torch.stack([multipliers[s.kind] * s.method.penalty(s.scores) for s in groups]).mean()
    torch.testing.assert_close(optimizer.penalty(), reference.detach())


def test_zero_lambda_leaves_gradients_alone():
    model = _patched()
    optimizer = _wrapped(model, lam=0.0)
    optimizer.apply_penalty()
    assert all(s.scores.grad is None for s in iter_mask_scores(model))


def test_state_dict_roundtrip_continues_identically():
    def run(model, optimizer, steps):
        for _ in range(steps):
            model(**tiny_batch()).logits.square().mean().backward()
            optimizer.step()
            optimizer.zero_grad()

    model_a = _patched()
    optimizer_a = _wrapped(model_a)
    scheduler_a = torch.optim.lr_scheduler.LambdaLR(optimizer_a, lambda step: 1.0 / (1 + step))
    run(model_a, optimizer_a, 2)
    scheduler_a.step()
    saved_model = {k: v.clone() for k, v in model_a.state_dict().items()}
    # A deep copy, as from a checkpoint file: load_state_dict would otherwise share the moment tensors.
    saved_optimizer = copy.deepcopy(optimizer_a.state_dict())

    model_b = _patched(seed=5)
    model_b.load_state_dict(saved_model)
    optimizer_b = _wrapped(model_b)
    optimizer_b.load_state_dict(saved_optimizer)
    torch.manual_seed(7)  # same dropout draws in both continuations
    run(model_a, optimizer_a, 2)
    torch.manual_seed(7)
    run(model_b, optimizer_b, 2)
    for (name, a), b in zip(model_a.state_dict().items(), model_b.state_dict().values()):
        torch.testing.assert_close(a, b, msg=name)


def test_wrapping_after_steps_is_rejected():
    model = _patched()
    inner = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(**tiny_batch()).logits.sum().backward()
    inner.step()
    with pytest.raises(ValueError, match="before its first step"):
        ScoreOptimizer(inner, list(iter_mask_scores(model)), learning_rate=0.01)


def test_grad_scaler_skips_overflowing_steps_around_a_fused_optimizer():
    model = _patched()
    inner = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
    optimizer = ScoreOptimizer(inner, list(iter_mask_scores(model)), learning_rate=0.05, regularization_lambda=lambda: 1.0)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    scaler.scale(model(**tiny_batch()).logits.float().sum() * float("inf")).backward()
    scaler.step(optimizer)
    scaler.update()
    for name, param in model.named_parameters():
        assert torch.equal(param, before[name]), name  # the overflowing step was skipped
    assert scaler.get_scale() < 2.0**16

    # A finite step is unscaled before the penalty is added: the update matches the unscaled run.
    optimizer.zero_grad()
    scaler.scale(model(**tiny_batch()).logits.square().mean()).backward()
    scaler.step(optimizer)
    assert all(torch.isfinite(p).all() for p in model.parameters())
