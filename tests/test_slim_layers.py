"""drop_layers: removing whole layers keeps a model consistent, saveable and aware of its dense origin."""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

from nn_prune_ext import InputError, SparseArgs, get_layout, load_slim, model_flops, optimize_model, patch_model
from nn_prune_ext.flops import dense_layer_shapes, kept_layer_shapes, layer_shapes
from nn_prune_ext.slim import modeling_slim
from nn_prune_ext.slim.layers import (
    LAYERS_KEY,
    dense_num_layers,
    dense_num_parameters,
    drop_layers,
    dropped_layer_indices,
    kept_layer_indices,
    layers_removed,
)
from nn_prune_ext.slim.optimize import count_parameters

from conftest import CLASSIFIERS, tiny_batch, tiny_config, tiny_model
from slim_helpers import masked_model


def skip_layers(model, indices) -> list:
    """Hooks making the given layers return their input: the model runs as if they were not there."""

    def identity(module, args, kwargs, output):
        hidden = args[0] if args else kwargs["hidden_states"]
        return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

    layers = get_layout(model).layer_list(model)
    return [layers[index].register_forward_hook(identity, with_kwargs=True) for index in indices]


def logits(model, batch=None) -> torch.Tensor:
    with torch.no_grad():
        return model(**(batch or tiny_batch(model))).logits


def layer_indices(model) -> list[int]:
    """The `layer_idx` of every attention module, in layer order."""
    layout = get_layout(model)
    attention = [layer.get_submodule(layout.attention) for layer in layout.layer_list(model)]
    return [module.layer_idx for module in attention if hasattr(module, "layer_idx")]


def test_dropping_layers_equals_skipping_them(model_type):
    model = tiny_model(model_type, num_hidden_layers=4)
    hooks = skip_layers(model, [0, 2])
    expected = logits(model)
    for hook in hooks:
        hook.remove()
    dropped = drop_layers(model, [2, 0])
    torch.testing.assert_close(logits(dropped), expected, rtol=0, atol=1e-6)
    assert len(get_layout(model).layer_list(model)) == 4 and model.config.num_hidden_layers == 4, "a copy by default"
    assert len(get_layout(dropped).layer_list(dropped)) == dropped.config.num_hidden_layers == 2
    assert kept_layer_indices(dropped.config) == [1, 3] and dropped_layer_indices(dropped.config) == [0, 2]
    assert dense_num_layers(dropped.config) == 4
    if layer_indices(model):  # DistilBERT's attention addresses no cache
        assert layer_indices(dropped) == [0, 1]


def test_a_dense_model_saves_and_loads_with_its_stock_class(model_type, tmp_path):
    model = tiny_model(model_type, num_hidden_layers=3)
    dropped = drop_layers(model, [1])
    dropped.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved[LAYERS_KEY]["kept"] == [0, 2] and "per_layer_config" not in saved
    reloaded = CLASSIFIERS[get_layout(model_type).input_kind][0].from_pretrained(tmp_path).eval()
    assert type(reloaded) is type(model)
    assert reloaded.config.num_hidden_layers == 2 and kept_layer_indices(reloaded.config) == [0, 2]
    torch.testing.assert_close(logits(reloaded), logits(dropped), rtol=0, atol=0)


@pytest.mark.parametrize("model_type", ["distilbert", "qwen2"])  # every type round-trips in test_slim_modeling_slim
def test_a_slim_model_with_dropped_layers_round_trips(model_type, tmp_path):
    slim = optimize_model(masked_model(model_type, empty_last_layer=False, num_hidden_layers=3))
    sizes = [layer.ffn_down.in_features for layer in get_layout(slim).iter_layers(slim)]
    dropped = drop_layers(slim, [1])
    assert [layer.ffn_down.in_features for layer in get_layout(dropped).iter_layers(dropped)] == [sizes[0], sizes[2]]
    spec = modeling_slim.slim_spec(dropped.config)
    assert [modeling_slim.layer_shape(dropped.config, i)["ffn_width"] for i in range(2)] == [sizes[0], sizes[2]]
    dropped.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert [sizes[spec["intermediate_size_attr"]] for sizes in saved["per_layer_config"].values()] == [
        sizes[0], sizes[2]
    ]
    expected = logits(dropped)
    remote = AutoModelForSequenceClassification.from_pretrained(tmp_path, trust_remote_code=True)
    for loaded in (load_slim(tmp_path), remote):
        assert type(loaded).__name__.startswith("Slim")
        torch.testing.assert_close(logits(loaded.eval()), expected, rtol=0, atol=1e-6)


def test_config_lists_and_dense_config_follow_the_kept_layers():
    overrides = dict(num_hidden_layers=4, use_sliding_window=True, max_window_layers=2, sliding_window=4)
    model = tiny_model("qwen2", **overrides)
    assert model.config.layer_types == ["full_attention"] * 2 + ["sliding_attention"] * 2
    dropped = drop_layers(model, [1, 2])
    assert dropped.config.layer_types == ["full_attention", "sliding_attention"]
    dropped.config.validate()  # Qwen2 checks one layer type per layer
    attention = [layer.self_attn for layer in dropped.model.layers]
    assert [a.sliding_window for a in attention] == [None, 4] and [a.layer_idx for a in attention] == [0, 1]
    record = getattr(dropped.config, LAYERS_KEY)
    assert record["dense_values"] == {"num_hidden_layers": 4, "layer_types": model.config.layer_types}
    # A slim model of it rebuilds the dense config (for nn-prune bench and report) with all four layers.
    dense = modeling_slim.dense_config(optimize_model(dropped).config)
    assert dense.num_hidden_layers == 4 and dense.layer_types == model.config.layer_types
    assert not hasattr(dense, LAYERS_KEY) and not modeling_slim.is_slim_config(dense)


def test_distilbert_counts_its_layers_in_n_layers():
    dropped = drop_layers(tiny_model("distilbert", num_hidden_layers=3), [0])
    assert dropped.config.n_layers == 2 and dropped.config.to_dict()["n_layers"] == 2
    assert getattr(dropped.config, LAYERS_KEY)["dense_values"] == {"n_layers": 3}


def test_dropping_twice_composes():
    model = tiny_model("llama", num_hidden_layers=4)
    twice = drop_layers(drop_layers(model, [0]), [1])
    assert kept_layer_indices(twice.config) == [1, 3] and dense_num_layers(twice.config) == 4
    assert dense_num_parameters(twice.config) == count_parameters(model)
    torch.testing.assert_close(logits(twice), logits(drop_layers(model, [0, 2])), rtol=0, atol=0)


def test_generation_with_a_cache_after_dropping_a_middle_layer():
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(tiny_config("llama", num_hidden_layers=3)).eval()
    prompt = torch.randint(1, 100, (2, 5), generator=torch.Generator().manual_seed(0))
    hooks = skip_layers(model, [1])
    expected = model.generate(prompt, max_new_tokens=6, do_sample=False)
    for hook in hooks:
        hook.remove()
    dropped = drop_layers(model, [1])
    assert torch.equal(dropped.generate(prompt, max_new_tokens=6, do_sample=False), expected)


def test_dense_shapes_flops_and_parameters_keep_the_original_depth():
    model = tiny_model("bert", num_hidden_layers=3)
    dropped = drop_layers(model, [1])
    assert dense_layer_shapes(dropped) == layer_shapes(model)
    kept = kept_layer_shapes(dropped)
    assert kept[0] == kept[2] == layer_shapes(model)[0] and (kept[1].num_heads, kept[1].ffn_width) == (0, 0)
    assert model_flops(kept, 16) == model_flops(dropped, 16) == model_flops(model, 16) * 2 // 3
    slim = optimize_model(dropped)
    assert modeling_slim.slim_spec(slim.config)["dense_num_parameters"] == count_parameters(model)
    assert dense_layer_shapes(slim) == layer_shapes(model)


def test_layers_removed_puts_everything_back():
    model = tiny_model("qwen2", num_hidden_layers=3)
    expected, without_middle = logits(model), logits(drop_layers(model, [1]))
    config_before = model.config.to_dict()
    modules_before = list(model.model.layers)
    with layers_removed(model, [1]) as inside:
        assert inside is model and len(model.model.layers) == 2 and model.config.num_hidden_layers == 2
        torch.testing.assert_close(logits(model), without_middle, rtol=0, atol=0)
    with pytest.raises(RuntimeError, match="boom"), layers_removed(model, [0, 2]):
        raise RuntimeError("boom")
    assert list(model.model.layers) == modules_before and layer_indices(model) == [0, 1, 2]
    assert model.config.to_dict() == config_before and not hasattr(model.config, LAYERS_KEY)
    torch.testing.assert_close(logits(model), expected, rtol=0, atol=0)


def test_bad_indices_and_patched_models():
    model = tiny_model("bert", num_hidden_layers=3)
    with pytest.raises(ValueError, match="out of range: the model has 3 layers, numbered 0 to 2"):
        drop_layers(model, [3])
    with pytest.raises(ValueError, match="out of range"):
        drop_layers(model, [-1])
    with pytest.raises(ValueError, match="listed twice"):
        drop_layers(model, [1, 1])
    with pytest.raises(ValueError, match="Cannot drop all 3 layers"):
        drop_layers(model, [0, 1, 2])
    with pytest.raises(InputError, match="must be integers"):
        drop_layers(model, [True])
    with pytest.raises(InputError, match="list of layer positions"):
        drop_layers(model, 1)
    patch_model(model, SparseArgs.struct())
    with pytest.raises(ValueError, match="bake_model"):
        drop_layers(model, [0])


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda model: drop_layers("bert", [0]), r"drop_layers: model must be a torch\.nn\.Module.*'bert' \(str\)"),
        (lambda model: drop_layers(model, [0], inplace="no"), r"drop_layers\(inplace=\.\.\.\) must be True or False, got 'no'"),
        (lambda model: layers_removed("bert", [0]).__enter__(), r"layers_removed: model must be a torch\.nn\.Module"),
    ],
    ids=["drop_name", "drop_inplace_text", "layers_removed_name"],
)
def test_a_model_that_is_not_a_module_or_a_flag_that_is_not_a_bool_is_refused(call, message):
    # Before: "Could not find the layer list 'encoder.layer' in str", and inplace="no" dropped the model's own layers.
    model = tiny_model("bert", num_hidden_layers=3)
    with pytest.raises(InputError, match=message):
        call(model)
    assert len(model.bert.encoder.layer) == 3


def test_config_loads_without_agrees_with_the_config_class():
    """It asks the config class itself: a stock one-layer ModernBERT config loads exactly where it says so."""
    from transformers import AutoConfig

    from nn_prune_ext.slim.layers import config_loads_without

    model = tiny_model("modernbert")
    try:
        stock = AutoConfig.for_model("modernbert", num_hidden_layers=1)
        type(stock).from_dict(stock.to_dict())
        stock_loads = True
    except Exception:
        stock_loads = False
    assert config_loads_without(model, [1]) == stock_loads  # leaves one full-attention layer
    assert config_loads_without(tiny_model("llama"), [1])
