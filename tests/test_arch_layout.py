import os

import pytest
import torch
from torch import nn
from transformers import AutoConfig, AutoModelForSequenceClassification, PretrainedConfig, PreTrainedModel

from nn_prune_ext import (
    ArchitectureLayout,
    InputError,
    SparseArgs,
    StructureMasks,
    UnsupportedArchitectureError,
    get_layout,
    patch_model,
    register_layout,
    supported_model_types,
)
from nn_prune_ext.arch import UnsupportedProjectionError
from nn_prune_ext.arch.registry import _REGISTRY

from conftest import GQA_TYPES, HEADS, HIDDEN, INTERMEDIATE, KV_HEADS, LAYERS, hidden_size, tiny_batch, tiny_config, tiny_model


def test_required_architectures_are_registered():
    required = {"bert", "roberta", "xlm-roberta", "electra", "distilbert", "llama", "mistral", "qwen2"}
    assert required <= set(supported_model_types())


def test_layout_resolves_every_layer(model_type):
    model = tiny_model(model_type)
    layers = list(get_layout(model).iter_layers(model))
    assert len(layers) == LAYERS
    kv_heads = KV_HEADS if model_type in GQA_TYPES else HEADS
    for layer in layers:
        hidden = hidden_size(model_type)
        assert (layer.num_heads, layer.num_kv_heads, layer.head_dim) == (HEADS, kv_heads, hidden // HEADS)
        assert layer.query.weight.shape == (hidden, hidden)
        assert layer.key.weight.shape == (kv_heads * hidden // HEADS, hidden)
        assert layer.output.weight.shape == (hidden, hidden)
        assert layer.ffn_up.weight.shape == (INTERMEDIATE, hidden)
        assert layer.ffn_down.weight.shape == (hidden, INTERMEDIATE)
        assert (layer.ffn_gate is not None) == (get_layout(model_type).ffn_gate is not None)


def test_layout_works_on_the_bare_base_model(model_type):
    base = tiny_model(model_type).base_model
    assert len(list(get_layout(base).iter_layers(base))) == LAYERS


def test_unsupported_model_names_the_supported_types_and_the_fix():
    model = AutoModelForSequenceClassification.from_config(
        AutoConfig.for_model("ctrl", n_embd=32, n_head=2, n_layer=1, dff=64, vocab_size=50)
    )
    with pytest.raises(UnsupportedArchitectureError) as error:
        patch_model(model, SparseArgs())
    message = str(error.value)
    assert "'ctrl'" in message and "register_layout" in message
    for model_type in ("bert", "llama", "distilbert"):
        assert model_type in message


def test_registering_twice_needs_overwrite():
    with pytest.raises(ValueError, match="overwrite=True"):
        register_layout(get_layout("bert"))


class ToyConfig(PretrainedConfig):
    model_type = "toy-pruning-test"

    def __init__(self, hidden_size=32, num_attention_heads=2, intermediate_size=48, **kwargs):
        super().__init__(**kwargs)
        self.hidden_size, self.num_attention_heads, self.intermediate_size = hidden_size, num_attention_heads, intermediate_size


class ToyBlock(nn.Module):
    def __init__(self, config):
        super().__init__()
        width = config.hidden_size
        self.q, self.k, self.v, self.o = (nn.Linear(width, width) for _ in range(4))
        self.fc_in, self.fc_out = nn.Linear(width, config.intermediate_size), nn.Linear(config.intermediate_size, width)

    def forward(self, x):
        attention = torch.softmax(self.q(x) @ self.k(x).transpose(-1, -2), -1) @ self.v(x)
        x = x + self.o(attention)
        return x + self.fc_out(torch.relu(self.fc_in(x)))


class ToyModel(PreTrainedModel):
    config_class = ToyConfig

    def __init__(self, config):
        super().__init__(config)
        self.blocks = nn.ModuleList([ToyBlock(config) for _ in range(2)])

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return x


def test_a_new_architecture_is_one_register_call():
    layout = ArchitectureLayout(
        model_types=("toy-pruning-test",), layers="blocks", query="q", key="k", value="v", output="o",
        ffn_up="fc_in", ffn_down="fc_out",
    )
    register_layout(layout)
    try:
        model = ToyModel(ToyConfig())
        x = torch.randn(2, 5, 32)
        reference = model(x)
        patch_model(model, SparseArgs.struct())
        torch.testing.assert_close(model(x), reference)
        assert type(model.blocks[0].fc_out).__name__ == "MaskedLinear"
    finally:
        del _REGISTRY["toy-pruning-test"]


class FusedToyBlock(nn.Module):
    def __init__(self, config, qkv_rows: int):
        super().__init__()
        width = config.hidden_size
        self.qkv, self.o = nn.Linear(width, qkv_rows), nn.Linear(width, width)
        self.fc_in, self.fc_out = nn.Linear(width, config.intermediate_size), nn.Linear(config.intermediate_size, width)


def test_a_fused_projection_of_an_unexpected_shape_names_the_module_and_the_shape():
    layout = ArchitectureLayout(
        model_types=("toy-fused-test",), layers="blocks", query="qkv", key="qkv", value="qkv", output="o",
        ffn_up="fc_in", ffn_down="fc_out",
    )
    config = ToyConfig()
    model = nn.Module()
    model.config = config
    model.blocks = nn.ModuleList([FusedToyBlock(config, 3 * 32)])
    layer = next(layout.iter_layers(model))
    assert [layer.query.out_features, layer.key.out_features, layer.value.out_features] == [32, 32, 32]
    torch.testing.assert_close(layer.key.weight, model.blocks[0].qkv.weight[32:64], rtol=0, atol=0)
    model.blocks = nn.ModuleList([FusedToyBlock(config, 80)])  # 32 query rows leave 48: not two equal shares
    with pytest.raises(UnsupportedProjectionError, match=r"layer 0 qkv computes \['query', 'key', 'value'\] in 80"):
        next(layout.iter_layers(model))


def test_the_readme_lists_every_supported_type():
    readme = open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")).read()
    missing = [model_type for model_type in supported_model_types() if f"`{model_type}`" not in readme]
    assert not missing, f"README.md does not list {missing}"


def test_shared_layers_are_refused_with_the_reason():
    from transformers import AlbertConfig, AlbertModel

    model = AlbertModel(AlbertConfig(hidden_size=32, num_attention_heads=2, intermediate_size=64, num_hidden_layers=2))
    with pytest.raises(UnsupportedArchitectureError, match="'albert': ALBERT shares one set of layer weights") as error:
        get_layout(model)
    assert "bert" in str(error.value) and "deberta-v2" in str(error.value)


FALCON_VARIANTS = {  # config -> the fused q/k/v order its layout must read
    "new decoder architecture": (dict(new_decoder_architecture=True, num_kv_heads=2), "heads"),
    "multi-query": (dict(new_decoder_architecture=False, multi_query=True), "blocks"),
    "per head": (dict(new_decoder_architecture=False, multi_query=False, num_kv_heads=HEADS), "heads"),
    "per head, ALiBi": (dict(new_decoder_architecture=False, multi_query=False, num_kv_heads=HEADS, alibi=True), "heads"),
}


@pytest.mark.parametrize("variant", list(FALCON_VARIANTS))
def test_falcon_layouts_by_config_slim_exactly_and_generate_the_same(variant):
    """Falcon fuses q/k/v in three orders, chosen by its config; ALiBi biases come in the attention mask."""
    import copy

    from transformers import AutoModelForCausalLM

    from nn_prune_ext import StructureMasks, fold_masks, prune_with_masks

    settings, interleave = FALCON_VARIANTS[variant]
    model = AutoModelForCausalLM.from_config(tiny_config("falcon", bias=True, **settings)).eval()
    assert get_layout(model).qkv_interleave == interleave
    masks = StructureMasks.from_kept(model, heads=[[0, 3], []], units=[range(INTERMEDIATE), range(0, INTERMEDIATE, 2)])
    masked = fold_masks(copy.deepcopy(model), masks)
    slim = prune_with_masks(model, masks)
    assert [layer.heads[1] for layer in slim.slim_report.layers] == [2, 0]
    batch = tiny_batch("falcon")
    with torch.no_grad():
        torch.testing.assert_close(slim(**batch).logits, masked(**batch).logits, rtol=0, atol=1e-5)
    prompt = batch["input_ids"][1:2, :6]
    expected = masked.generate(prompt, max_new_tokens=5, do_sample=False)
    assert torch.equal(slim.generate(prompt, max_new_tokens=5, do_sample=False), expected)


class _CustomBert(nn.Module):
    """A custom model behind a stock config: `model_type` says bert, but the layers are elsewhere."""

    def __init__(self):
        super().__init__()
        self.config = tiny_config("bert")
        self.blocks = nn.ModuleList([nn.Linear(HIDDEN, HIDDEN)])


def test_a_model_whose_layers_are_not_where_its_layout_says_gets_an_input_error():
    from nn_prune_ext.arch import LayoutMismatchError

    with pytest.raises(LayoutMismatchError, match=r"Could not find the layer list 'encoder\.layer' in _CustomBert; .*"
                                                  r"does not match this model\. .*register_layout") as error:
        StructureMasks.ones(_CustomBert())
    assert isinstance(error.value, InputError) and isinstance(error.value, AttributeError)  # old `except` clauses


@pytest.mark.parametrize("value", [nn.Linear(2, 2), 3], ids=["plain_module", "number"])
def test_get_layout_says_it_needs_a_transformers_model_for_an_object_without_model_type(value):
    # Before: "no layout for model_type None", which does not say what is missing.
    with pytest.raises(UnsupportedArchitectureError, match=rf"needs a transformers model .*got {type(value).__name__}, "
                                                           r"which has no config\.model_type\. Supported: .*bert.*register_layout"):
        get_layout(value)
