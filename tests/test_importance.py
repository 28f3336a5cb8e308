import copy

import pytest
import torch
from torch.func import functional_call

from nn_prune_ext import InputError, get_layout, optimize_model
from nn_prune_ext.importance import (
    MaskGradients,
    apply_masks,
    collect_mask_gradients,
    fisher_importance,
    magnitude_importance,
    taylor_importance,
)
from nn_prune_ext.masks import StructureMasks, fold_masks

from conftest import HEADS, INTERMEDIATE, LAYERS, empty_layers_are_dropped, tiny_batch, tiny_model
from slim_helpers import masked_model


def labelled_batch(seed: int = 1, model_type: str | None = None) -> dict[str, torch.Tensor]:
    batch = tiny_batch(model_type, seed=seed)
    batch["labels"] = torch.tensor([0, 1, 2, 1])
    return batch


def pre_hook_counts(model) -> list[int]:
    return [len(module._forward_pre_hooks) for module in model.modules()]


def explicit_mask_gradients(model, batch) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """d loss / d masks with the masks multiplied into the output / down projection columns.

    Independent of the hooks: scaling a linear's input entries equals scaling its weight columns.
    """
    names = {module: name for name, module in model.named_modules()}
    head_masks, unit_masks, weights = [], [], {}
    for layer in get_layout(model).iter_layers(model):
        head_mask = torch.ones(layer.num_heads, requires_grad=True)
        unit_mask = torch.ones(layer.ffn_down.in_features, requires_grad=True)
        output, down = layer.output, layer.ffn_down
        weights[names[output.module] + ".weight"] = output.as_stored(output.weight * head_mask.repeat_interleave(layer.head_dim))
        weights[names[down.module] + ".weight"] = down.as_stored(down.weight * unit_mask)
        head_masks.append(head_mask)
        unit_masks.append(unit_mask)
    loss = functional_call(model, weights, args=(), kwargs=batch).loss
    gradients = torch.autograd.grad(loss, head_masks + unit_masks)
    return list(gradients[: len(head_masks)]), list(gradients[len(head_masks) :])


def assert_matches_explicit(gradients: MaskGradients, model, batch, batch_index: int = 0) -> None:
    heads, units = explicit_mask_gradients(model, batch)
    for layer, (head, unit) in enumerate(zip(heads, units)):
        for actual, expected in ((gradients.heads[batch_index, layer, : head.numel()], head),
                                 (gradients.units[batch_index, layer, : unit.numel()], unit)):
            scale = float(expected.abs().max()) if expected.numel() else 0.0
            torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-5 * scale + 1e-12)


def test_gradients_per_batch_match_autograd_on_explicit_masks(model_type):
    model = tiny_model(model_type)
    batches = [labelled_batch(seed, model_type=model_type) for seed in (1, 2, 3)]
    gradients = collect_mask_gradients(model, batches)
    assert gradients.heads.shape == (3, LAYERS, HEADS)
    assert gradients.units.shape == (3, LAYERS, INTERMEDIATE)
    assert gradients.num_heads == (HEADS,) * LAYERS and gradients.ffn_widths == (INTERMEDIATE,) * LAYERS
    assert gradients.num_batches == 3
    assert bool(torch.isfinite(gradients.heads).all()) and bool(torch.isfinite(gradients.units).all())
    assert float(gradients.heads.abs().min()) > 0  # every head matters a little in a random model
    for index, batch in enumerate(batches):
        assert_matches_explicit(gradients, model, batch, index)


def test_collection_leaves_model_state_alone(model_type):
    model = tiny_model(model_type, hidden_dropout_prob=0.5, attention_dropout=0.5).train()
    parameters = list(model.parameters())
    parameters[-1].requires_grad_(False)  # a frozen parameter stays frozen, the others trainable
    sentinel = torch.full_like(parameters[0], 3.0)
    parameters[0].grad = sentinel.clone()
    hooks_before = pre_hook_counts(model)
    first = collect_mask_gradients(model, [labelled_batch(model_type=model_type)])
    second = collect_mask_gradients(model, [labelled_batch(model_type=model_type)])
    # Eval mode during collection: no dropout, so the same batch gives the same gradients.
    assert torch.equal(first.heads, second.heads) and torch.equal(first.units, second.units)
    assert model.training
    assert pre_hook_counts(model) == hooks_before
    assert torch.equal(parameters[0].grad, sentinel)
    assert [parameter.requires_grad for parameter in parameters] == [True] * (len(parameters) - 1) + [False]
    assert all(parameter.grad is None for parameter in parameters[1:])


def test_hooks_are_removed_after_an_error():
    model = tiny_model("bert")
    hooks_before = pre_hook_counts(model)
    with pytest.raises(ValueError, match="labels"):
        collect_mask_gradients(model, [tiny_batch()])  # no labels: the model returns no loss
    assert pre_hook_counts(model) == hooks_before
    with pytest.raises(ValueError, match="no batches"):
        collect_mask_gradients(model, [])


def test_max_batches_stops_early():
    gradients = collect_mask_gradients(tiny_model("bert"), (labelled_batch(seed) for seed in range(10)), max_batches=2)
    assert gradients.num_batches == 2


def test_a_zero_mask_equals_zeroed_projection_columns(model_type):
    model = tiny_model(model_type)
    batch = labelled_batch(model_type=model_type)
    layers = list(get_layout(model).iter_layers(model))
    head_masks = [torch.ones(layer.num_heads) for layer in layers]
    unit_masks = [torch.ones(layer.ffn_down.in_features) for layer in layers]
    head_masks[0][1] = 0.0
    unit_masks[1][[3, 7]] = 0.0
    zeroed = copy.deepcopy(model)
    zeroed_layers = list(get_layout(zeroed).iter_layers(zeroed))
    head_dim = layers[0].head_dim
    with torch.no_grad():
        zeroed_layers[0].output.weight[:, head_dim : 2 * head_dim] = 0.0
        zeroed_layers[1].ffn_down.weight[:, [3, 7]] = 0.0
        with apply_masks(model, head_masks, unit_masks):
            masked = model(**batch)
        expected = zeroed(**batch)
        unmasked = model(**batch)
    torch.testing.assert_close(masked.logits, expected.logits, rtol=0, atol=1e-6)
    torch.testing.assert_close(masked.loss, expected.loss, rtol=0, atol=1e-6)
    assert not torch.allclose(unmasked.logits, masked.logits)  # the masks did something, and are gone


def test_apply_masks_rejects_wrong_shapes():
    model = tiny_model("bert")
    with pytest.raises(ValueError, match=r"layer 1 has shape \(3,\), but the layer has 4 heads"):
        with apply_masks(model, head_masks=[None, torch.ones(3)]):
            pass
    with pytest.raises(ValueError, match="Got 1 FFN unit masks for a model of 2 layers"):
        with apply_masks(model, unit_masks=[torch.ones(INTERMEDIATE)]):
            pass


def test_slim_model_with_uneven_and_empty_layers(model_type):
    slim = optimize_model(masked_model(model_type))  # the last layer has no heads and no FFN units left
    layers = list(get_layout(slim).iter_layers(slim))
    heads = tuple(layer.num_heads for layer in layers)
    widths = tuple(layer.ffn_down.in_features for layer in layers)
    if empty_layers_are_dropped(slim):
        assert len(layers) == LAYERS - 1  # an empty pre-norm layer is the identity: slimming drops it
    else:
        assert heads[-1] == 0 and widths[-1] == 0  # a post-norm layer keeps its LayerNorms
    assert 0 < heads[0] < HEADS
    batch = labelled_batch(model_type=model_type)
    gradients = collect_mask_gradients(slim, [batch])
    assert gradients.num_heads == heads and gradients.ffn_widths == widths
    assert gradients.heads.shape == (1, len(layers), max(heads))
    assert gradients.units.shape == (1, len(layers), max(widths))
    for layer, (count, width) in enumerate(zip(heads, widths)):
        assert bool(torch.isfinite(gradients.heads[0, layer, :count]).all())
        assert bool(torch.isnan(gradients.heads[0, layer, count:]).all())
        assert bool(torch.isfinite(gradients.units[0, layer, :width]).all())
        assert bool(torch.isnan(gradients.units[0, layer, width:]).all())
    assert_matches_explicit(gradients, slim, batch)


def test_heads_and_units_a_patched_model_masks_have_zero_gradient(model_type):
    masked = masked_model(model_type)
    gradients = collect_mask_gradients(masked, [labelled_batch(model_type=model_type)])
    for layer in get_layout(masked).iter_layers(masked):
        # The output projection's column mask is the query-head mask; the down projection's the unit mask.
        heads_kept = layer.output.module.source.scores > 0
        units_kept = layer.ffn_down.module.source.scores > 0
        assert bool((gradients.heads[0, layer.index][~heads_kept] == 0).all())
        assert bool((gradients.units[0, layer.index][~units_kept] == 0).all())
    assert float(gradients.heads[0, 0, 0].abs()) > 0 and float(gradients.units[0, 0, 0].abs()) > 0  # always kept


def test_taylor_and_fisher_reduce_per_batch_gradients():
    nan = float("nan")
    gradients = MaskGradients(
        heads=torch.tensor([[[0.5, -2.0], [1.0, nan]], [[-1.5, 1.0], [-3.0, nan]]]),
        units=torch.tensor([[[1.0, 2.0, 3.0], [-1.0, nan, nan]], [[1.0, -2.0, 0.0], [2.0, nan, nan]]]),
        num_heads=(2, 1),
        ffn_widths=(3, 1),
    )
    taylor = taylor_importance(gradients)
    torch.testing.assert_close(taylor.heads, torch.tensor([[2.0, 3.0], [4.0, nan]]), equal_nan=True)
    torch.testing.assert_close(taylor.units, torch.tensor([[2.0, 4.0, 3.0], [3.0, nan, nan]]), equal_nan=True)
    fisher = fisher_importance(gradients)
    torch.testing.assert_close(fisher.heads, torch.tensor([[2.5, 5.0], [10.0, nan]]), equal_nan=True)
    torch.testing.assert_close(fisher.units, torch.tensor([[2.0, 8.0, 9.0], [5.0, nan, nan]]), equal_nan=True)
    assert fisher.layer_heads(1).tolist() == [10.0] and taylor.layer_units(1).tolist() == [3.0]


def test_gradients_at_given_masks_match_explicitly_masked_weights(model_type):
    """Gradients at masks with zeros and scales: the same as multiplying those masks into the weights."""
    model = tiny_model(model_type)
    masks = StructureMasks.ones(model)
    masks.heads[0] = torch.tensor([1.0, 0.0, 0.5, 1.0])
    masks.units[1] = (torch.arange(INTERMEDIATE) % 3 != 0).float()
    batch = labelled_batch(model_type=model_type)
    gradients = collect_mask_gradients(model, [batch], masks=masks)
    folded = fold_masks(copy.deepcopy(model), masks)
    # d loss / d m_i at m equals (d loss / d m'_i at ones on the folded model) / m_i where m_i != 0.
    heads, units = explicit_mask_gradients(folded, batch)
    for layer in range(LAYERS):
        for actual, expected, mask in (
            (gradients.heads[0, layer], heads[layer], masks.heads[layer]),
            (gradients.units[0, layer], units[layer], masks.units[layer]),
        ):
            kept = mask != 0
            scale = float(expected.abs().max())
            torch.testing.assert_close(actual[kept] * mask[kept], expected[kept], rtol=1e-4, atol=1e-5 * scale)


def test_magnitude_importance_is_the_squared_norm_of_each_structure(model_type):
    model = tiny_model(model_type)
    importance = magnitude_importance(model)
    layer = next(get_layout(model).iter_layers(model))
    d, group = layer.head_dim, layer.num_heads // layer.num_kv_heads
    head = 3
    kv = head // group
    expected = (
        layer.query.weight[head * d : (head + 1) * d].square().sum()
        + layer.output.weight[:, head * d : (head + 1) * d].square().sum()
        + (layer.key.weight[kv * d : (kv + 1) * d].square().sum() + layer.value.weight[kv * d : (kv + 1) * d].square().sum())
        / group
    )
    torch.testing.assert_close(importance.heads[0, head], expected.detach(), rtol=1e-5, atol=0)
    unit = 7
    expected_unit = layer.ffn_up.weight[unit].square().sum() + layer.ffn_down.weight[:, unit].square().sum()
    if layer.ffn_gate is not None:
        expected_unit = expected_unit + layer.ffn_gate.weight[unit].square().sum()
    torch.testing.assert_close(importance.units[0, unit], expected_unit.detach(), rtol=1e-5, atol=0)
    assert importance.heads.shape == (LAYERS, HEADS) and importance.units.shape == (LAYERS, INTERMEDIATE)


@pytest.mark.parametrize(
    "head_masks, message",
    [
        ([None, torch.tensor([1.0, float("nan"), 1.0, 1.0])], r"head mask of layer 1 holds NaN or infinite values"),
        ([torch.tensor([1.0, float("inf"), 1.0, 1.0]), None], r"head mask of layer 0 holds NaN or infinite values"),
        ([[1.0, 0.0, 1.0, 1.0], None], r"head mask of layer 0 is list: pass a real tensor of shape \(4,\)"),
        ([None, torch.ones(HEADS, dtype=torch.complex64)], r"head mask of layer 1 is a torch\.complex64 tensor"),
        ("1111", r"head masks must be a list with one tensor \(or None\) per layer, got str"),
    ],
    ids=["nan", "inf", "list", "complex", "text"],
)
def test_apply_masks_refuses_masks_that_are_not_finite_real_tensors(head_masks, message):
    # Before: a NaN mask was applied (every output NaN) and a list failed with an AttributeError on .shape.
    with pytest.raises(InputError, match=message):
        with apply_masks(tiny_model("bert"), head_masks=head_masks):
            pass


def test_apply_masks_takes_integer_masks_and_a_stacked_tensor():
    model, batch = tiny_model("bert"), tiny_batch()
    with torch.no_grad(), apply_masks(model, head_masks=[torch.tensor([1, 0, 1, 1]), None]):
        integer = model(**batch).logits
    with torch.no_grad(), apply_masks(model, head_masks=torch.tensor([[1.0, 0.0, 1.0, 1.0], [1.0] * HEADS])):
        stacked = model(**batch).logits
    torch.testing.assert_close(integer, stacked)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda model: apply_masks("bert").__enter__(), r"apply_masks: model must be a torch\.nn\.Module.*'bert' \(str\)"),
        (lambda model: magnitude_importance("bert"), r"magnitude_importance: model must be a torch\.nn\.Module"),
        (lambda model: collect_mask_gradients("bert", []), r"collect_mask_gradients: model must be a torch\.nn\.Module"),
        (lambda model: collect_mask_gradients(model, tiny_batch()), r"batches must be an iterable of batches .*got dict.*\[batch\]"),
        (lambda model: collect_mask_gradients(model, [tiny_batch()], max_batches=0),
         r"collect_mask_gradients\(max_batches=\.\.\.\) must be a whole number >= 1 or None, got 0"),
        (lambda model: collect_mask_gradients(model, [tiny_batch()], masks={"heads": []}),
         r"collect_mask_gradients: masks must be a StructureMasks or None, got dict"),
    ],
    ids=["apply_masks_model", "magnitude_model", "collect_model", "single_batch", "max_batches_zero", "masks_dict"],
)
def test_importance_entry_points_refuse_arguments_of_the_wrong_kind(call, message):
    # Before: AttributeErrors about str, "Batch 0 is a str" for a single dict, "got no batches" for max_batches=0.
    with pytest.raises(InputError, match=message):
        call(tiny_model("bert"))
