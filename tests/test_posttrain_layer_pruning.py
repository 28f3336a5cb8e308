"""Greedy layer pruning: the least harmful layer goes first, the trace is exact, the result slims and saves."""

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

from nn_prune_ext import SparseArgs, get_layout, optimize_model, patch_model
from nn_prune_ext.posttrain.layer_pruning import prune_layers
from nn_prune_ext.slim.layers import drop_layers, kept_layer_indices
from nn_prune_ext.validation import InputError, NonFiniteError

from conftest import GQA_TYPES, tiny_batch, tiny_config, tiny_model

BATCHES = [tiny_batch(seed=1), tiny_batch(seed=2)]
LABELS = [torch.tensor([0, 1, 2, 1]), torch.tensor([2, 2, 0, 1])]


def labelled() -> list[dict]:
    return [{**batch, "labels": labels} for batch, labels in zip(BATCHES, LABELS)]


def kl(reference: torch.Tensor, logits: torch.Tensor) -> float:
    """Mean over examples of KL(softmax(reference) || softmax(logits))."""
    return float(F.kl_div(logits.log_softmax(-1), reference.log_softmax(-1), log_target=True, reduction="batchmean"))


def run(model, batch) -> torch.Tensor:
    with torch.no_grad():
        return model(**batch)


def with_identity_layer(model_class, model_type: str, index: int, layers: int = 4):
    """A pre-norm model whose layer `index` adds nothing to the residual stream: it is the identity."""
    torch.manual_seed(0)
    model = model_class.from_config(tiny_config(model_type, num_hidden_layers=layers)).eval()
    layer = list(get_layout(model).iter_layers(model))[index]
    with torch.no_grad():
        layer.output.weight.zero_()
        layer.ffn_down.weight.zero_()
    return model


@pytest.mark.parametrize("model_type", sorted(GQA_TYPES))
def test_the_identity_layer_goes_first(model_type):
    # A causal LM: token-level logits, averaged over the real tokens of padded batches.
    model = with_identity_layer(AutoModelForCausalLM, model_type, index=2)
    result = prune_layers(model, BATCHES, 1, criterion="output")
    (step,) = result.steps
    assert step.removed == 2 and result.removed == [2] and list(step.scores) == [0, 1, 2, 3]
    assert step.scores[2] == 0.0 and min(step.scores[i] for i in (0, 1, 3)) > 1e-6
    assert result.baseline == 0.0 and result.final_score == 0.0
    for batch in BATCHES:
        torch.testing.assert_close(run(result.model, batch).logits, run(model, batch).logits, rtol=0, atol=1e-6)


def test_output_scores_are_the_divergence_without_each_layer(model_type):
    model = tiny_model(model_type, num_hidden_layers=3)
    batches = [tiny_batch(model_type, seed=1), tiny_batch(model_type, seed=2)]
    result = prune_layers(model, iter(batches), 2, criterion="output")
    first, second = result.steps
    references = [run(model, batch).logits for batch in batches]
    for index in range(3):
        without = drop_layers(model, [index])
        expected = sum(kl(ref, run(without, batch).logits) for ref, batch in zip(references, batches)) / 2
        assert first.scores[index] == pytest.approx(expected, rel=1e-5, abs=1e-9)
    assert first.removed == min(first.scores, key=first.scores.get)
    assert sorted(second.scores) == sorted(set(range(3)) - {first.removed})
    assert second.removed == min(second.scores, key=second.scores.get)
    # The result is the model without both layers, and knows which layer of the input it kept.
    (kept,) = set(range(3)) - set(result.removed)
    assert kept_layer_indices(result.model.config) == [kept]
    assert len(get_layout(result.model).layer_list(result.model)) == result.model.config.num_hidden_layers == 1
    torch.testing.assert_close(
        run(result.model, batches[0]).logits, run(drop_layers(model, result.removed), batches[0]).logits,
        rtol=0, atol=0,
    )
    assert len(get_layout(model).layer_list(model)) == 3, "the input model is left alone"


def test_loss_scores_are_the_loss_without_each_layer():
    model = tiny_model("bert", num_hidden_layers=3)
    result = prune_layers(model, labelled(), 1, criterion="loss", max_batches=1)
    assert result.baseline == pytest.approx(float(run(model, labelled()[0]).loss), rel=1e-6)
    (step,) = result.steps
    for index in range(3):
        expected = float(run(drop_layers(model, [index]), labelled()[0]).loss)
        assert step.scores[index] == pytest.approx(expected, rel=1e-6)
    assert step.removed == min(step.scores, key=step.scores.get)


def test_the_result_slims_and_saves(tmp_path):
    model = with_identity_layer(AutoModelForSequenceClassification, "llama", index=1, layers=3)
    with torch.no_grad():
        model.model.layers[0].mlp.down_proj.weight[:, ::2] = 0  # half the FFN units of layer 0 go when slimming
    pruned = prune_layers(model, BATCHES, 1, criterion="output").model
    slim = optimize_model(pruned)
    assert slim.slim_report.layers[0].ffn_width == (128, 64) and kept_layer_indices(slim.config) == [0, 2]
    slim.save_pretrained(tmp_path)
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path, trust_remote_code=True)
    for batch in BATCHES:
        torch.testing.assert_close(run(reloaded, batch).logits, run(model, batch).logits, rtol=0, atol=1e-5)


def test_bad_arguments():
    model = tiny_model("bert", num_hidden_layers=3)
    with pytest.raises(ValueError, match="criterion must be one of"):
        prune_layers(model, BATCHES, 1, criterion="kl")
    for num_layers in (0, 3):
        with pytest.raises(ValueError, match="fewer than the model's 3"):
            prune_layers(model, BATCHES, num_layers)
    with pytest.raises(ValueError, match="got no batches"):
        prune_layers(model, [], 1)
    with pytest.raises(ValueError, match="use criterion='output'"):
        prune_layers(model, BATCHES, 1, criterion="loss")  # no labels
    patch_model(model, SparseArgs.struct())
    with pytest.raises(ValueError, match="bake_model"):
        prune_layers(model, BATCHES, 1, criterion="output")


@pytest.mark.parametrize("num_layers", ["1", True, 1.0])
def test_num_layers_must_be_a_whole_number(num_layers):
    """Issue 13: "1" was a TypeError from `1 <= "1"`, True and 1.0 silently counted as one layer."""
    model = tiny_model("bert", num_hidden_layers=3)
    with pytest.raises(InputError, match=f"a whole number, at least 1 and fewer than the model's 3; got {num_layers!r}"):
        prune_layers(model, BATCHES, num_layers, criterion="output")


def test_batches_and_max_batches_are_checked():
    model = tiny_model("bert", num_hidden_layers=3)
    with pytest.raises(InputError, match=r"prune_layers\(max_batches=\.\.\.\) must be a whole number >= 1 or None, got 0"):
        prune_layers(model, BATCHES, 1, criterion="output", max_batches=0)
    with pytest.raises(InputError, match=r"got a single batch .* wrap it in a list, \[batch\]"):
        prune_layers(model, BATCHES[0], 1, criterion="output")
    short_mask = {**BATCHES[0], "attention_mask": BATCHES[0]["attention_mask"][:, :-1]}
    with pytest.raises(InputError, match=r"Batch 1: attention_mask has shape \(4, 11\) but input_ids \(4, 12\)"):
        prune_layers(model, [BATCHES[1], short_mask], 1, criterion="output")


@pytest.mark.parametrize("criterion", ["loss", "output"])
def test_a_non_finite_baseline_is_refused(criterion):
    """Issue 13: every candidate then scored NaN too, and layer 0 was removed as the "least harmful"."""
    model = tiny_model("bert", num_hidden_layers=3)
    with torch.no_grad():
        get_layout(model).layer_list(model)[2].output.dense.bias[0] = float("nan")
    what = "loss on the batches is" if criterion == "loss" else "outputs on the batches are"
    with pytest.raises(NonFiniteError, match=f"The input model's {what} not finite \\(nan\\)"):
        prune_layers(model, labelled(), 1, criterion=criterion)
