"""optimize_model checks its result on a probe input and names the first layer and tensor that differ."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from nn_prune_ext import ArchitectureLayout, SlimMismatchError, get_layout, optimize_model, register_layout
from nn_prune_ext.arch import registry
from nn_prune_ext.slim import optimize as optimize_module
from nn_prune_ext.slim.verify import check_against, record_probe

from conftest import HEADS, HIDDEN, INTERMEDIATE, tiny_batch, tiny_model
from slim_helpers import masked_model


def test_a_faithful_slim_model_passes_and_the_record_covers_every_layer(model_type):
    masked = masked_model(model_type)
    reference = record_probe(masked)
    slim = optimize_model(masked, verify=False)
    check_against(reference, slim)  # no error
    layers = len(get_layout(masked).layer_list(masked))
    assert {key for key in reference.tensors} == {(i, what) for i in range(layers) for what in ("attention", "ffn", "layer")}


def test_a_wrong_slice_is_refused_naming_the_layer_and_tensor(monkeypatch):
    original = optimize_module._slice_layer

    def corrupted(layer, plan):
        sliced = original(layer, plan)
        if layer.index == 1:  # a wrong FFN weight in the second layer
            down = sliced["ffn_down"]
            sliced["ffn_down"] = down._replace(weight=down.weight + 0.1)
        return sliced

    monkeypatch.setattr(optimize_module, "_slice_layer", corrupted)
    masked = masked_model("bert", empty_last_layer=False)
    with pytest.raises(SlimMismatchError, match=r"in layer 1, the FFN output \(output of output\.dense\) differs by"):
        optimize_model(masked)
    optimize_model(masked, verify=False)  # the check can be turned off


def test_a_layout_missing_whole_width_qk_norms_is_refused(monkeypatch):
    """OLMo 2 normalises q and k over all heads at once: cutting heads leaves a norm of the wrong width."""
    layout = ArchitectureLayout(
        model_types=("olmo2",), layers="layers", query="self_attn.q_proj", key="self_attn.k_proj",
        value="self_attn.v_proj", output="self_attn.o_proj", ffn_up="mlp.up_proj", ffn_gate="mlp.gate_proj",
        ffn_down="mlp.down_proj", num_kv_heads_attr="num_key_value_heads", norm_placement="sandwich",
        attention="self_attn", attention_attrs=(("num_key_value_groups", "groups"),),
    )
    monkeypatch.setitem(registry._REGISTRY, "olmo2", layout)
    config = AutoConfig.for_model(
        "olmo2", hidden_size=HIDDEN, num_attention_heads=HEADS, num_key_value_heads=HEADS,
        intermediate_size=INTERMEDIATE, num_hidden_layers=2, vocab_size=128,
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():
        next(layout.iter_layers(model)).output.weight[:, :16] = 0  # remove head 0 of layer 0
    with pytest.raises(SlimMismatchError, match=r"fails on a probe input in layer 0 .*'olmo2'"):
        optimize_model(model)


def test_a_model_with_broken_weights_is_refused_before_slimming():
    model = tiny_model("llama")
    with torch.no_grad():
        model.score.weight.fill_(float("nan"))
    with pytest.raises(ValueError, match="NaN or infinite values on a made-up input before slimming"):
        optimize_model(model)


def test_a_failure_after_the_last_layer_names_no_layer():
    from nn_prune_ext.slim.verify import ProbeFailure

    model = tiny_model("bert")

    def broken(module, args):
        raise RuntimeError("broken classifier")

    model.classifier.register_forward_pre_hook(broken)
    with pytest.raises(ProbeFailure) as failure:
        record_probe(model)
    assert failure.value.layer is None and "broken classifier" in str(failure.value)
    assert failure.value.where() == "after layer 1, outside the layers"  # not in the last layer, nor before the first


def test_a_slim_model_failing_after_its_last_layer_is_refused_naming_that_place():
    model = tiny_model("llama")
    reference = record_probe(model)
    slim = optimize_model(model, verify=False)

    def broken(module, args):
        raise RuntimeError("broken final norm")

    slim.model.norm.register_forward_pre_hook(broken)
    with pytest.raises(SlimMismatchError, match=r"fails on a probe input after layer 1, outside the layers \(Runtime"):
        check_against(reference, slim)


def test_a_slim_output_differing_after_agreeing_layers_names_the_output():
    model = tiny_model("llama")
    reference = record_probe(model)
    slim = optimize_model(model, verify=False)
    with torch.no_grad():
        slim.model.norm.weight.mul_(2.0)  # after every layer: the layers still agree
    with pytest.raises(SlimMismatchError) as error:
        check_against(reference, slim)
    message = str(error.value)
    assert "the model's output differs by" in message and "while every layer agrees" in message
    assert "after the last layer" in message and " in layer " not in message


def test_a_model_failing_before_its_first_layer_says_so():
    model = tiny_model("bert")

    def broken(module, args):
        raise RuntimeError("broken embeddings")

    model.bert.embeddings.register_forward_pre_hook(broken)
    with pytest.raises(ValueError, match=r"fails on it before the first layer \(RuntimeError: broken embeddings\)"):
        optimize_model(model)


def test_inplace_slimming_says_the_model_was_changed_when_refused(monkeypatch):
    original = optimize_module._slice_layer

    def corrupted(layer, plan):
        sliced = original(layer, plan)
        down = sliced["ffn_down"]
        sliced["ffn_down"] = down._replace(weight=down.weight + 0.1)
        return sliced

    monkeypatch.setattr(optimize_module, "_slice_layer", corrupted)
    with pytest.raises(SlimMismatchError, match="With inplace=True the model passed in was slimmed"):
        optimize_model(masked_model("bert", empty_last_layer=False), inplace=True)


@pytest.mark.parametrize("share_att_key", [False, True])
def test_per_head_position_projections_follow_the_kept_heads(monkeypatch, share_att_key):
    """DeBERTa-v2 projects the shared relative position embeddings per head: by its own position
    projections (their rows are the layout's head_rows), or by the layer's query/key projections."""
    from dataclasses import replace

    model = masked_model("deberta-v2", empty_last_layer=False, share_att_key=share_att_key)
    batch = tiny_batch("deberta-v2")
    with torch.no_grad():
        expected = model(**batch).logits
    slim = optimize_model(model)
    attention = get_layout(slim).layer_list(slim)[0].attention.self
    assert hasattr(attention, "pos_key_proj") != share_att_key
    if not share_att_key:
        assert attention.pos_key_proj.out_features == attention.query_proj.out_features < HIDDEN
    with torch.no_grad():
        torch.testing.assert_close(slim(**batch).logits, expected, rtol=0, atol=1e-5)
    if not share_att_key:  # without head_rows the position projections keep every head: refused
        monkeypatch.setitem(registry._REGISTRY, "deberta-v2", replace(get_layout("deberta-v2"), head_rows=()))
        with pytest.raises(SlimMismatchError, match="layer 0"):
            optimize_model(masked_model("deberta-v2", empty_last_layer=False, share_att_key=False))


def test_a_position_bias_shared_by_the_layers_follows_each_layers_kept_heads(monkeypatch):
    """MPNet computes one relative position bias for all heads and passes it to every layer: a slim layer
    must read its kept heads' part (the layout's head_arguments), or the check refuses the result."""
    from dataclasses import replace

    model = masked_model("mpnet", empty_last_layer=False)
    batch = tiny_batch("mpnet")
    with torch.no_grad():
        expected = model(**batch).logits
    slim = optimize_model(model)
    kept = slim.config.nn_prune_slim["kept_heads"]
    assert [len(kept[str(i)]) for i in range(2)] == [layer.heads[1] for layer in slim.slim_report.layers]
    with torch.no_grad():
        torch.testing.assert_close(slim(**batch).logits, expected, rtol=0, atol=1e-5)
    monkeypatch.setitem(registry._REGISTRY, "mpnet", replace(get_layout("mpnet"), head_arguments=()))
    with pytest.raises(SlimMismatchError, match="layer 0"):
        optimize_model(masked_model("mpnet", empty_last_layer=False))


def test_alibi_biases_follow_each_layers_kept_heads_and_an_empty_attention_keeps_the_residual(monkeypatch):
    """Bloom passes one ALiBi bias per dense head to every layer, flattened to [batch * heads, 1, keys]
    (head_argument_form='flat'), and its attention adds the residual itself (attention_residual): without
    either, the check refuses the result."""
    from dataclasses import replace

    from nn_prune_ext import StructureMasks, apply_masks, prune_with_masks

    model = tiny_model("bloom")
    masks = StructureMasks.from_kept(model, heads=[[1, 3], []], units=[range(INTERMEDIATE)] * 2)
    batch = tiny_batch("bloom")
    with torch.no_grad(), apply_masks(model, masks.heads, masks.units):
        expected = model(**batch).logits
    slim = prune_with_masks(model, masks)
    assert [layer.heads[1] for layer in slim.slim_report.layers] == [2, 0]
    with torch.no_grad():
        torch.testing.assert_close(slim(**batch).logits, expected, rtol=0, atol=1e-5)
    layout = get_layout("bloom")
    monkeypatch.setitem(registry._REGISTRY, "bloom", replace(layout, head_arguments=()))
    with pytest.raises(SlimMismatchError, match="layer 0"):
        prune_with_masks(model, masks)
    monkeypatch.setitem(registry._REGISTRY, "bloom", replace(layout, attention_residual=None))
    with pytest.raises(SlimMismatchError, match="layer 1"):
        prune_with_masks(model, masks)
