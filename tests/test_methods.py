import math

import pytest
import torch

from nn_prune_ext.scores.methods import PRUNING_METHODS, get_pruning_method


@pytest.mark.parametrize("numel", [7, 64, 100, 1000])
@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.29, 0.5, 0.7, 1.0])
def test_topk_keeps_exactly_its_fraction(numel, fraction):
    scores = torch.randn(numel, generator=torch.Generator().manual_seed(numel))
    mask = get_pruning_method("topK").mask(scores, fraction, training=True)
    kept = int(mask.sum())
    assert kept == math.floor(fraction * numel + 1e-6)
    if 0 < kept < numel:  # the kept entries are the largest scores
        assert scores[mask.bool()].min() > scores[~mask.bool()].max()


def test_topk_gradient_is_straight_through():
    scores = torch.randn(4, 8, requires_grad=True)
    upstream = torch.randn(4, 8)
    (get_pruning_method("topK").mask(scores, 0.5, training=True) * upstream).sum().backward()
    torch.testing.assert_close(scores.grad, upstream)


def test_sigmoied_threshold_and_threshold():
    scores = torch.tensor([-2.0, -0.1, 0.0, 0.3, 3.0], requires_grad=True)
    sigmoid_mask = get_pruning_method("sigmoied_threshold").mask(scores, 0.5, training=True)
    assert sigmoid_mask.tolist() == [0, 0, 0, 1, 1]
    assert get_pruning_method("threshold").mask(scores, 0.1, training=True).tolist() == [0, 0, 0, 1, 1]
    sigmoid_mask.sum().backward()
    assert scores.grad.tolist() == [1.0] * 5
    assert get_pruning_method("sigmoied_threshold").penalty(torch.zeros(3)).item() == pytest.approx(0.5)


def test_magnitude_has_no_scores_and_no_gradient():
    method = get_pruning_method("magnitude")
    assert not method.learnable
    mask = method.mask(torch.tensor([3.0, 1.0, 2.0, 0.5]), 0.5, training=True)
    assert mask.tolist() == [1, 0, 1, 0] and not mask.requires_grad


def test_l0_is_stochastic_in_training_and_binary_in_eval():
    method = get_pruning_method("l0")
    log_alpha = torch.tensor([-6.0, 0.5, 6.0] * 100, requires_grad=True)
    torch.manual_seed(0)
    train_mask = method.mask(log_alpha, 0.0, training=True)
    assert 0 <= train_mask.min() and train_mask.max() <= 1
    assert ((train_mask > 0) & (train_mask < 1)).any()  # some gates are fractional
    train_mask.sum().backward()
    assert log_alpha.grad.abs().sum() > 0
    eval_mask = method.mask(log_alpha.detach(), 0.0, training=False)
    assert set(eval_mask.unique().tolist()) <= {0.0, 1.0}
    assert eval_mask[0] == 0 and eval_mask[2] == 1
    # Expected L0 decreases with log_alpha.
    assert method.penalty(torch.tensor([-3.0])) < method.penalty(torch.tensor([3.0]))


def test_unknown_method_lists_the_known_ones():
    with pytest.raises(ValueError) as error:
        get_pruning_method("random")
    for name in PRUNING_METHODS:
        assert name in str(error.value)


@pytest.mark.parametrize("name", sorted(PRUNING_METHODS))
def test_masks_of_many_groups_equal_each_groups_own_mask(name):
    """`masks` (one computation over the concatenated scores where the method allows it) changes nothing:
    the same masks and the same straight-through gradients as `mask` per group."""
    method = get_pruning_method(name)
    threshold = 0.6 if method.threshold_range else 0.1
    shapes = [(4, 8), (16,), (2, 2)]
    generator = torch.Generator().manual_seed(0)
    values = [torch.randn(shape, generator=generator) for shape in shapes]
    upstream = [torch.randn(shape, generator=generator) for shape in shapes]
    training = name != "l0"  # l0 samples noise in training: compared in eval, where its gates are binary
    alone = [v.clone().requires_grad_(method.learnable) for v in values]
    together = [v.clone().requires_grad_(method.learnable) for v in values]
    masks_alone = [method.mask(scores, threshold, training) for scores in alone]
    masks_together = method.masks(together, threshold, training)
    assert [tuple(mask.shape) for mask in masks_together] == shapes
    for mine, theirs in zip(masks_together, masks_alone):
        assert torch.equal(mine, theirs)
    if method.learnable and training:
        sum((m * u).sum() for m, u in zip(masks_alone, upstream)).backward()
        sum((m * u).sum() for m, u in zip(masks_together, upstream)).backward()
        for mine, theirs in zip(together, alone):
            assert torch.equal(mine.grad, theirs.grad)


@pytest.mark.parametrize("name", sorted(set(PRUNING_METHODS) - {"magnitude"}))
def test_penalty_is_the_mean_of_its_terms(name):
    method = get_pruning_method(name)
    scores = torch.randn(5, 3, generator=torch.Generator().manual_seed(1))
    expected = {"topK": scores.abs(), "threshold": scores.abs(), "sigmoied_threshold": torch.sigmoid(scores),
                "l0": torch.sigmoid(scores - method.beta * math.log(-method.gamma / method.zeta)) if name == "l0" else None}[name]
    torch.testing.assert_close(method.penalty_terms(scores), expected)
    torch.testing.assert_close(method.penalty(scores), expected.mean())


@pytest.mark.parametrize(("name", "threshold", "travel"), [
    ("sigmoied_threshold", 0.1, math.log(9.0)),  # from 0 down to logit(0.1)
    ("sigmoied_threshold", 0.3, math.log(7.0 / 3.0)),
    ("threshold", -0.5, 0.5),
    ("l0", 0.5, 3.0),  # log_alpha from 3.0 down to 0, whatever the threshold
])
def test_score_travel_is_where_the_evaluation_mask_flips(name, threshold, travel):
    method = get_pruning_method(name)
    assert method.score_travel(threshold) == pytest.approx(travel)
    start = method.init_scores((1,)).item()
    # Just short of the distance the structure is kept; just beyond it, masked.
    scores = torch.tensor([start - travel + 1e-3, start - travel - 1e-3])
    assert method.mask(scores, threshold, training=False).tolist() == [1.0, 0.0]


def test_score_travel_at_the_edges_and_for_kept_fractions():
    sigmoied, threshold = get_pruning_method("sigmoied_threshold"), get_pruning_method("threshold")
    assert sigmoied.score_travel(0.5) == threshold.score_travel(0.0) == 0.0  # everything masked from the start
    assert sigmoied.mask(torch.zeros(2), 0.5, training=False).tolist() == [0.0, 0.0]
    assert sigmoied.score_travel(0.0) == math.inf  # sigmoid never reaches 0
    assert get_pruning_method("topK").score_travel(0.5) is None  # a kept fraction: prunes however little scores move
    assert get_pruning_method("magnitude").score_travel(0.5) is None


@pytest.mark.parametrize("name", sorted(name for name, method in PRUNING_METHODS.items() if method.threshold_range))
def test_check_threshold_takes_values_within_the_tolerance_of_the_range_only(name):
    method = get_pruning_method(name)
    low, high = method.threshold_range
    method.check_threshold(high + 1e-12, "threshold", tolerance=1e-9)  # an ulp past the bound, as a schedule lands
    method.check_threshold(low - 1e-12, "threshold", tolerance=1e-9)
    for value in (high + 1e-12, high + 1e-6):
        with pytest.raises(ValueError, match=rf"threshold={value} is out of range for pruning method {name!r}"):
            method.check_threshold(value, "threshold", tolerance=1e-9 if value > high + 1e-9 else 0.0)
