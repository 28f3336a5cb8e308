"""Unregistered decoders: a layout derived from base_model_tp_plan, used only after a check on a tiny copy."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from nn_prune_ext import UnsupportedArchitectureError, get_layout, optimize_model, supported_model_types
from nn_prune_ext.arch import registry
from nn_prune_ext.arch.fallback import FallbackError, derive_layout

from conftest import HEADS, HIDDEN, INTERMEDIATE, KV_HEADS, VOCAB


@pytest.fixture(autouse=True)
def fresh_fallbacks(monkeypatch):
    """Each test derives (and checks) layouts afresh, and leaves no derived layout behind."""
    monkeypatch.setattr(registry, "_DERIVED", {})
    monkeypatch.setattr(registry, "_REFUSED", {})
    monkeypatch.setattr(registry, "_DERIVED_BY_TYPE", {})


def causal_lm(model_type: str, **overrides):
    config = AutoConfig.for_model(
        model_type, hidden_size=HIDDEN, num_attention_heads=HEADS, intermediate_size=INTERMEDIATE,
        num_hidden_layers=2, vocab_size=VOCAB, pad_token_id=0, **overrides,
    )
    if hasattr(config, "num_key_value_heads"):
        config.num_key_value_heads = KV_HEADS
    if getattr(config, "head_dim", None) is not None:
        config.head_dim = HIDDEN // HEADS
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config).eval()


def test_a_llama_shaped_plan_gives_the_roles():
    layout = derive_layout(AutoConfig.for_model("olmo"))
    assert (layout.layers, layout.attention) == ("layers", "self_attn")
    assert (layout.query, layout.key, layout.value, layout.output) == (
        "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj"
    )
    assert (layout.ffn_gate, layout.ffn_up, layout.ffn_down) == ("mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")
    assert layout.num_kv_heads_attr == "num_key_value_heads" and layout.norm_placement == "pre"


@pytest.mark.parametrize("model_type", ["olmo", "cohere", "helium"])
def test_an_unregistered_decoder_slims_exactly_through_the_derived_layout(model_type):
    assert model_type not in supported_model_types()
    model = causal_lm(model_type)
    layout = get_layout(model)
    assert layout.model_types == (model_type,) and model_type in registry._DERIVED_BY_TYPE
    layers = list(layout.iter_layers(model))
    with torch.no_grad():
        layers[0].output.weight[:, : 2 * (HIDDEN // HEADS)] = 0  # heads 0 and 1: the first key/value group
        layers[1].output.weight.zero_()  # no heads left
        layers[1].ffn_down.weight[:, ::3] = 0
    prompt = torch.randint(1, VOCAB, (2, 6), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected_logits = model(prompt).logits
    expected = model.generate(prompt, max_new_tokens=4, do_sample=False)
    slim = optimize_model(model)
    assert [(r.heads[1], r.ffn_width[1]) for r in slim.slim_report.layers] == [
        (HEADS - 2, INTERMEDIATE), (0, INTERMEDIATE - len(range(0, INTERMEDIATE, 3)))
    ]
    with torch.no_grad():
        torch.testing.assert_close(slim(prompt).logits, expected_logits, rtol=0, atol=1e-5)
    assert torch.equal(slim.generate(prompt, max_new_tokens=4, do_sample=False), expected)


def test_experts_are_refused_with_the_reason_and_the_supported_types():
    with pytest.raises(UnsupportedArchitectureError) as error:
        get_layout(causal_lm("qwen2_moe", num_experts=2, num_experts_per_tok=1))
    message = str(error.value)
    assert "'qwen2_moe' and could not derive one: its layers hold mixture-of-experts FFNs" in message
    assert "llama" in message and "register_layout" in message


def test_a_layout_that_fails_its_check_is_refused(monkeypatch):
    """OLMo 2 normalises q and k over all heads at once: the layout derived for it cannot cut heads exactly."""
    monkeypatch.delitem(registry._REGISTRY, "olmo2")  # as if it were not built in
    with pytest.raises(UnsupportedArchitectureError, match="did not slim a tiny copy exactly"):
        get_layout(causal_lm("olmo2"))
    assert any(key[1] == "olmo2" for key in registry._REFUSED) and "olmo2" not in registry._DERIVED_BY_TYPE


def test_fused_projections_are_not_derived():
    with pytest.raises(FallbackError, match="not one attention module with separate query, key and value"):
        derive_layout(AutoConfig.for_model("phi3"))
    with pytest.raises(FallbackError, match="no base_model_tp_plan"):
        derive_layout(AutoConfig.for_model("bloom"))


def test_deriving_a_layout_leaves_the_callers_random_state_alone():
    model = causal_lm("olmo")
    torch.manual_seed(123)
    state = torch.get_rng_state()
    get_layout(model)
    assert torch.equal(torch.get_rng_state(), state)


def test_derived_layouts_are_kept_per_config_not_per_type(monkeypatch):
    """A refusal for one config of a type does not refuse another config of the same type."""
    model = causal_lm("olmo")
    broken = causal_lm("olmo")
    broken.config.base_model_tp_plan = {"layers.*.self_attn.q_proj": "colwise"}  # an odd plan of this config only
    with pytest.raises(UnsupportedArchitectureError, match="not one attention module"):
        get_layout(broken)
    assert get_layout(model).model_types == ("olmo",)
    slim = optimize_model(model)
    assert get_layout(slim) is get_layout(model)  # the slim model (another class) keeps its layout


def test_a_config_setting_outside_the_plan_gets_its_own_check():
    """Cohere's per-head q/k norms (use_qk_norm) leave the plan unchanged but cannot be cut by the derived layout."""
    plain, qk_norms = causal_lm("cohere"), causal_lm("cohere", use_qk_norm=True)
    assert plain.config.base_model_tp_plan == qk_norms.config.base_model_tp_plan
    assert get_layout(plain).model_types == ("cohere",)
    with pytest.raises(UnsupportedArchitectureError, match="did not slim a tiny copy exactly"):
        get_layout(qk_norms)  # not the layout derived for the config without the norms
    assert len(registry._DERIVED) == 1 and len(registry._REFUSED) == 1
    # The other order: the refusal of one config does not refuse the other.
    for cache in (registry._DERIVED, registry._REFUSED, registry._DERIVED_BY_TYPE):
        cache.clear()
    with pytest.raises(UnsupportedArchitectureError):
        get_layout(qk_norms)
    assert get_layout(plain).model_types == ("cohere",)


def test_a_slim_model_saved_and_loaded_keeps_the_derived_layout(tmp_path):
    model = causal_lm("olmo")
    layout = get_layout(model)
    with torch.no_grad():
        next(layout.iter_layers(model)).output.weight[:, : HIDDEN // HEADS] = 0  # head 0 of layer 0
    slim = optimize_model(model)
    slim.save_pretrained(tmp_path)
    loaded = type(slim).from_pretrained(tmp_path)
    assert get_layout(slim) is layout and get_layout(loaded) is layout
    assert len(registry._DERIVED) == 1  # checked once: the slim configs hash as their dense config


def test_errors_other_than_a_refusal_propagate_and_are_not_kept(monkeypatch):
    from nn_prune_ext import transformers_internals

    build_model = transformers_internals.build_model

    def out_of_memory(*args, **kwargs):
        raise MemoryError("no memory left for the tiny copy")

    model = causal_lm("olmo")
    monkeypatch.setattr(transformers_internals, "build_model", out_of_memory)
    with pytest.raises(MemoryError, match="no memory left"):
        get_layout(model)
    assert not registry._REFUSED and not registry._DERIVED
    monkeypatch.setattr(transformers_internals, "build_model", build_model)
    assert get_layout(model).model_types == ("olmo",)  # derived afresh, not refused
