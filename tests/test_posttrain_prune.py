"""post_training_prune end to end on tiny models of every registered architecture."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from nn_prune_ext import (
    InputError,
    NonFiniteError,
    SparseArgs,
    StructureMasks,
    apply_masks,
    model_flops,
    patch_model,
    prune_with_masks,
)
from nn_prune_ext.posttrain import (
    LatencyTable,
    PostTrainingArgs,
    masks_cost,
    mean_sequence_length,
    post_training_prune,
    with_labels,
)
from nn_prune_ext.posttrain.units import PruningUnits

from conftest import labelled_batches, tiny_batch, tiny_config, tiny_model


@pytest.mark.parametrize("granularity", ["head", "group"])
def test_flops_budget_slim_model_equals_masked_model(model_type, granularity):
    model = tiny_model(model_type)
    batches = labelled_batches(4, model_type=model_type)
    result = post_training_prune(model, batches, flops_budget=0.5, head_granularity=granularity)
    seq_len = mean_sequence_length(model, batches)
    if "attention_mask" in batches[0]:
        assert seq_len == round(sum(int(b["attention_mask"].sum()) for b in batches) / 16)
    else:  # images: every patch and the class token
        assert seq_len == (model.config.image_size // model.config.patch_size) ** 2 + 1
    assert model_flops(result.model, seq_len) <= 0.5 * model_flops(model, seq_len)
    assert model_flops(result.model, seq_len) == result.search.cost
    # Rearrangement and tuning keep the searched sizes.
    assert result.masks.kept_heads() == result.searched_masks.kept_heads()
    assert result.masks.kept_units() == result.searched_masks.kept_units()
    batch = tiny_batch(model_type, seed=7)
    with torch.no_grad(), apply_masks(model, result.masks.heads, result.masks.units):
        expected = model(**batch).logits
    torch.testing.assert_close(result.model(**batch).logits, expected, rtol=0, atol=1e-5)
    assert list(result.stage_seconds) == ["gradients", "cost model", "search", "rearrange", "tune", "slim"]
    assert "seconds per stage" in str(result)


def _slim_without_heads_in_layer_0(model_type: str):
    """A tiny model slimmed with masks that remove every head of layer 0 and every FFN unit of layer 1."""
    dense = tiny_model(model_type)
    cut = StructureMasks.ones(dense)
    cut.heads[0].zero_()
    cut.units[1].zero_()
    return dense, prune_with_masks(dense, cut)


@pytest.mark.parametrize("rearrange", [True, False])
def test_a_slim_model_with_a_layer_without_heads_prunes_further(model_type, rearrange):
    """Issue 15: rearrangement raised a TypeError on a layer without heads. The result is the slim input under
    the final masks, within the budget of the input's FLOPs, and the empty parts stay empty."""
    _, slim = _slim_without_heads_in_layer_0(model_type)
    batches = labelled_batches(3, model_type=model_type)
    result = post_training_prune(slim, batches, flops_budget=0.6, rearrange=rearrange)
    assert result.masks.heads[0].shape == (0,) and result.masks.units[1].shape == (0,)
    assert result.masks.kept_heads() == result.searched_masks.kept_heads()
    assert result.masks.kept_units() == result.searched_masks.kept_units()
    assert model_flops(result.model, result.seq_len) == result.search.cost <= 0.6 * model_flops(slim, result.seq_len)
    assert [layer.heads[1] for layer in result.model.slim_report.layers][0] == 0
    batch = tiny_batch(model_type, seed=7)
    with torch.no_grad(), apply_masks(slim, result.masks.heads, result.masks.units):
        expected = slim(**batch).logits
    with torch.no_grad():
        torch.testing.assert_close(result.model(**batch).logits, expected, rtol=0, atol=1e-5)


def test_the_cost_is_stated_against_the_input_and_the_dense_model():
    """Issue 15: "(60.0% of dense)" was a share of the input model, which may be slim already."""
    dense, slim = _slim_without_heads_in_layer_0("bert")
    batches = labelled_batches(3)
    first = post_training_prune(dense, batches, flops_budget=0.6, tune=False)
    seq_len = first.seq_len
    assert first.search.dense_model_cost == first.search.dense_cost == model_flops(dense, seq_len)
    assert str(first.search).endswith(f" ({first.search.cost / model_flops(dense, seq_len):.1%} of the dense model)")
    second = post_training_prune(slim, batches, flops_budget=0.6, tune=False)
    assert second.seq_len == seq_len and second.search.dense_cost == model_flops(slim, seq_len)
    assert second.search.dense_model_cost == model_flops(dense, seq_len) > second.search.dense_cost
    of_input = second.search.cost / model_flops(slim, seq_len)
    of_dense = model_flops(second.model, seq_len) / model_flops(dense, seq_len)
    assert 0.58 < of_input <= 0.6 and of_dense < 0.6 * model_flops(slim, seq_len) / model_flops(dense, seq_len) + 1e-9
    assert str(second.search).endswith(f" ({of_input:.1%} of the input model, {of_dense:.1%} of the dense model)")
    # The model it comes from is read from the slim config, so slimming again keeps the first dense reference.
    third = post_training_prune(second.model, batches, flops_budget=0.8, tune=False)
    assert third.search.dense_model_cost == model_flops(dense, seq_len)
    # A latency budget on a slim input: the dense model's latency was never measured.
    table = LatencyTable(
        head_counts=(1, 2, 3, 4), attention_ms=(1.0, 1.0, 2.0, 3.0),
        ffn_widths=(1, 64, 128), ffn_ms=(0.5, 1.0, 2.0), batch_size=1, seq_len=12,
    )
    latency = post_training_prune(slim, batches, latency_budget=0.6, latency_table=table, tune=False)
    assert latency.search.dense_model_cost is None
    assert str(latency.search).endswith(f" ({latency.search.cost / latency.search.dense_cost:.1%} of the input model)")


def test_stages_can_be_switched_off():
    model = tiny_model("bert")
    result = post_training_prune(model, labelled_batches(3), flops_budget=0.6, rearrange=False, tune=False)
    assert result.tuning is None and list(result.stage_seconds) == ["gradients", "cost model", "search", "slim"]
    assert result.masks.to_dict() == result.searched_masks.to_dict()
    assert set(torch.cat(result.masks.units).tolist()) <= {0.0, 1.0}


def test_latency_budget_with_a_given_table():
    model = tiny_model("llama")
    table = LatencyTable(
        head_counts=(1, 2, 3, 4), attention_ms=(1.0, 1.0, 2.0, 3.0),
        ffn_widths=(1, 64, 128), ffn_ms=(0.5, 1.0, 2.0), batch_size=1, seq_len=12,
    )
    result = post_training_prune(model, labelled_batches(3), latency_budget=0.5, latency_table=table, tune=False)
    cost = table.cost_model()
    structure = PruningUnits.for_model(model)
    dense = masks_cost(StructureMasks.ones(model), structure, cost)
    assert masks_cost(result.masks, structure, cost) == pytest.approx(result.search.cost)
    assert result.search.cost <= 0.5 * dense + 1e-9


def test_unlabelled_batches_use_the_models_own_targets():
    classifier = tiny_model("bert")
    batch = tiny_batch()
    labelled = with_labels(classifier, batch)
    with torch.no_grad():
        assert torch.equal(labelled["labels"], classifier(**batch).logits.argmax(-1))
    lm = AutoModelForCausalLM.from_config(tiny_config("llama")).eval()
    labelled = with_labels(lm, batch)
    expected = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    assert torch.equal(labelled["labels"], expected)
    result = post_training_prune(lm, [tiny_batch(seed=s) for s in range(3)], flops_budget=0.7)
    assert model_flops(result.model, result.seq_len) <= 0.7 * model_flops(lm, result.seq_len)


def test_predicted_labels_come_from_eval_mode_and_regression_is_refused():
    model = tiny_model("bert", hidden_dropout_prob=0.5).train()
    batch = tiny_batch()
    first, second = with_labels(model, batch)["labels"], with_labels(model, batch)["labels"]
    assert torch.equal(first, second) and model.training  # no dropout in the labels; mode restored
    regression = tiny_model("bert", num_labels=1)
    with pytest.raises(ValueError, match="single output"):
        with_labels(regression, batch)
    with pytest.raises(ValueError, match="no input_ids"):
        mean_sequence_length(model, [{"attention_mask": batch["attention_mask"]}])


def test_errors():
    with pytest.raises(ValueError, match="exactly one budget"):
        PostTrainingArgs()
    with pytest.raises(ValueError, match="exactly one budget"):
        PostTrainingArgs(flops_budget=0.5, latency_budget=0.5)
    with pytest.raises(InputError, match=r"fraction of the dense model's cost in \(0, 1\]"):
        PostTrainingArgs(flops_budget=1.5)
    with pytest.raises(ValueError, match="head_granularity"):
        PostTrainingArgs(flops_budget=0.5, head_granularity="row")
    patched = patch_model(tiny_model("bert"), SparseArgs.struct())
    with pytest.raises(ValueError, match="bake_model"):
        post_training_prune(patched, labelled_batches(1), flops_budget=0.5)
    with pytest.raises(InputError, match="post_training_prune got no batches"):
        post_training_prune(tiny_model("bert"), [], flops_budget=0.5)


# ----- bad calibration data and non-finite values stop before any work ----------------------------------
def _batches_with(**changes) -> list[dict[str, torch.Tensor]]:
    batches = labelled_batches(2)
    batches[1].update(changes)
    return batches


@pytest.mark.parametrize(
    ("batches", "message"),
    [
        (_batches_with(labels=torch.tensor([0, 7, 1, 2])), r"Batch 1 has label 7, outside the model's 3 classes \[0, 3\)"),
        (_batches_with(labels=torch.tensor([0.5, 1.0, 0.0, 2.0])), r"Batch 1 has fractional labels .* one of 3 classes"),
        (_batches_with(input_ids=torch.full((4, 12), 10**6)), r"Batch 1 has token ids from 1000000 to 1000000, outside"),
        ([{"attention_mask": torch.ones(4, 12, dtype=torch.long)}], r"Batch 0 has no input_ids tensor \(keys: \['attention_mask'\]\)"),
        (["not a batch"], "Batch 0 is a str, not a mapping"),
        (labelled_batches(1)[0], r"got a single batch \(a dict with keys \['attention_mask', 'input_ids', 'labels'\]\)"),
        (_batches_with(attention_mask=torch.ones(4, 11, dtype=torch.long)),
         r"Batch 1: attention_mask has shape \(4, 11\) but input_ids \(4, 12\)"),
        ([{"input_ids": torch.ones(12, dtype=torch.long)}], r"Batch 0: input_ids have shape \(12,\), not \[batch, sequence\]"),
        (_batches_with(labels=torch.tensor([0, 1, 2])), r"Batch 1 has labels of shape \(3,\) \(3\) for 4 examples"),
    ],
    ids=["label_beyond", "fractional_labels", "token_ids_beyond", "no_input_ids", "not_a_mapping", "single_batch",
         "mask_shape", "no_batch_dimension", "label_count"],
)
def test_calibration_batches_the_model_cannot_take_are_an_input_error(batches, message):
    model = tiny_model("bert")
    assert model.config.num_labels == 3  # the classes labelled_batches draws from
    with pytest.raises(InputError, match=message):
        post_training_prune(model, batches, flops_budget=0.5)


def test_a_model_with_a_nan_weight_is_refused_before_any_work():
    model = tiny_model("bert")
    name, weight = next((name, p) for name, p in model.named_parameters() if name.endswith("layer.1.output.dense.weight"))
    with torch.no_grad():
        weight[0, 0] = float("nan")
    with pytest.raises(NonFiniteError, match=rf"The model's {name} holds NaN or infinite values"):
        post_training_prune(model, labelled_batches(2), flops_budget=0.5)


def test_a_non_finite_loss_or_mask_gradient_names_the_batch():
    model = tiny_model("bert")
    calls = []

    def spoil(module, args, output):  # the second batch's loss overflows
        calls.append(1)
        if len(calls) == 2:
            output.loss = output.loss * float("inf")
        return output

    model.register_forward_hook(spoil)
    with pytest.raises(NonFiniteError, match="The model's loss on batch 1 is inf"):
        post_training_prune(model, labelled_batches(2), flops_budget=0.5)
    overflow = tiny_model("bert")
    # A finite loss whose backward overflows: the gradient flowing into the first layer's FFN output is inf.
    layer = overflow.bert.encoder.layer[0].output.dense

    def overflow_backward(module, args, output):
        output.register_hook(lambda grad: grad * float("inf"))

    layer.register_forward_hook(overflow_backward)
    with pytest.raises(NonFiniteError, match="mask gradients of batch 0 are not finite"):
        post_training_prune(overflow, labelled_batches(2), flops_budget=0.5)


def test_settings_that_are_no_post_training_args_are_refused_naming_them():
    model = tiny_model("bert")
    with pytest.raises(InputError, match="PostTrainingArgs.latency_budget is a fraction of the dense model's cost"):
        PostTrainingArgs(latency_budget=0.0)
    with pytest.raises(InputError, match=r"post_training_prune got unknown keyword 'flops_budjet' \(did you mean 'flops_budget'\?\): the fields of PostTrainingArgs are flops_budget, "):
        post_training_prune(model, labelled_batches(1), flops_budjet=0.5)  # was a TypeError from the dataclass
    with pytest.raises(InputError, match="post_training_prune: args must be a PostTrainingArgs or None, got dict; pass PostTrainingArgs"):
        post_training_prune(model, labelled_batches(1), {"flops_budget": 0.5})
    with pytest.raises(InputError, match="latency_table must be a LatencyTable .* got dict"):
        post_training_prune(model, labelled_batches(1), latency_budget=0.5, latency_table={"ffn_ms": [1.0]})
    base = PostTrainingArgs(flops_budget=0.5)
    with pytest.raises(InputError, match="max_tune_scale must be finite, got nan"):
        post_training_prune(model, labelled_batches(1), base, max_tune_scale=float("nan"))


def test_a_slim_model_with_non_finite_outputs_is_refused(monkeypatch):
    """A pruned model that outputs NaN on the calibration data must not come back as a result."""
    import nn_prune_ext.posttrain.prune as prune_module

    def spoiled(model, masks):
        slim = prune_with_masks(model, masks)
        with torch.no_grad():
            slim.classifier.bias.fill_(float("nan"))
        return slim

    monkeypatch.setattr(prune_module, "prune_with_masks", spoiled)
    with pytest.raises(NonFiniteError, match="The pruned model's logits on calibration batch 0 are NaN or infinite.*"
                       "retry with a larger budget"):
        post_training_prune(tiny_model("bert"), labelled_batches(1), flops_budget=0.5, tune=False)
