import pytest

from nn_prune_ext import InputError, get_layout, model_flops, optimize_model
from nn_prune_ext.flops import LayerShape, dense_layer_shapes, kept_layer_shapes, layer_macs, layer_shapes

from conftest import (
    GQA_TYPES, HEADS, HIDDEN, INTERMEDIATE, KV_HEADS, LAYERS, empty_layers_are_dropped, hidden_size, tiny_model,
)
from slim_helpers import masked_model


def test_layer_macs_by_hand():
    shape = LayerShape(hidden=8, num_heads=2, num_kv_heads=1, head_dim=4, ffn_width=16, gated=True)
    projections = 8 * 4 * (2 * 2 + 2 * 1)  # q, o per query head; k, v per KV head
    attention = 2 * 2 * 4 * 10  # scores and weighted values, over 10 positions
    ffn = 8 * 16 * 3  # up, gate, down
    assert layer_macs(shape, 10) == 10 * (projections + attention + ffn)


def test_dense_model_shapes_and_flops(model_type):
    model = tiny_model(model_type)
    kv = KV_HEADS if model_type in GQA_TYPES else HEADS
    gated = get_layout(model_type).ffn_gate is not None
    hidden = hidden_size(model_type)
    expected = LayerShape(hidden, HEADS, kv, hidden // HEADS, INTERMEDIATE, gated)
    assert layer_shapes(model) == [expected] * LAYERS
    assert model_flops(model, 32) == 2 * LAYERS * layer_macs(expected, 32)


def test_slim_model_flops_follow_the_report(model_type):
    slim = optimize_model(masked_model(model_type))
    shapes = kept_layer_shapes(slim)  # one per layer of the dense model, like the report
    assert len(shapes) == len(slim.slim_report.layers) == LAYERS
    for shape, report in zip(shapes, slim.slim_report.layers):
        assert (shape.num_heads, shape.num_kv_heads, shape.ffn_width) == (
            report.heads[1], report.kv_heads[1], report.ffn_width[1]
        )
    dense = tiny_model(model_type)
    assert model_flops(slim, 16) == model_flops(shapes, 16) < model_flops(dense, 16)
    assert shapes[-1].num_heads == 0 and layer_macs(shapes[-1], 16) == 0
    # The emptied last layer is dropped from a pre-norm model; the dense shapes still count it.
    assert len(layer_shapes(slim)) == (1 if empty_layers_are_dropped(slim) else LAYERS)
    assert dense_layer_shapes(slim) == layer_shapes(dense)


def test_gpt2_without_an_explicit_ffn_width_counts_its_dense_width():
    """GPT-2's n_inner=None means 4 x hidden: the dense shapes of a slim GPT-2 must still be known."""
    import torch

    from nn_prune_ext import summary

    model = tiny_model("gpt2", n_inner=None)
    assert model.config.n_inner is None
    layers = list(get_layout(model).iter_layers(model))
    with torch.no_grad():
        layers[0].ffn_down.weight[:, : 2 * HIDDEN] = 0  # the first half of the units (an (out, in) view)
    slim = optimize_model(model)
    assert [shape.ffn_width for shape in dense_layer_shapes(slim)] == [4 * HIDDEN] * LAYERS
    assert [layer.ffn_width for layer in slim.slim_report.layers] == [(4 * HIDDEN, 2 * HIDDEN), (4 * HIDDEN, 4 * HIDDEN)]
    str(summary(slim))  # no error


def _gpt2_without_ffn_width_slimmed_in_every_layer():
    """A slim GPT-2 (n_inner=None: 4 x hidden) whose every layer lost half its FFN units."""
    import torch

    model = tiny_model("gpt2", n_inner=None)
    with torch.no_grad():
        for layer in get_layout(model).iter_layers(model):
            layer.ffn_down.weight[:, : 2 * HIDDEN] = 0
    return optimize_model(model)


def test_a_saved_and_loaded_gpt2_without_an_explicit_ffn_width_keeps_its_dense_width(tmp_path):
    from nn_prune_ext import summary
    from nn_prune_ext.slim.modeling_slim import dense_config

    slim = _gpt2_without_ffn_width_slimmed_in_every_layer()
    slim.save_pretrained(tmp_path)
    loaded = type(slim).from_pretrained(tmp_path)
    assert dense_config(loaded.config).n_inner is None  # the global width is still the family default
    assert [shape.ffn_width for shape in dense_layer_shapes(loaded)] == [4 * HIDDEN] * LAYERS
    assert [shape.ffn_width for shape in layer_shapes(loaded)] == [2 * HIDDEN] * LAYERS
    assert "FFN width" in str(summary(loaded))


def test_an_older_slim_gpt2_without_recorded_dense_shapes_reads_the_family_default_width():
    """A slim config from before `dense_shapes` was recorded: n_inner=None is GPT-2's 4 x hidden, not the
    widest layer left."""
    from nn_prune_ext.slim.modeling_slim import SLIM_SPEC_KEY

    slim = _gpt2_without_ffn_width_slimmed_in_every_layer()
    del getattr(slim.config, SLIM_SPEC_KEY)["dense_shapes"]
    assert [shape.ffn_width for shape in dense_layer_shapes(slim)] == [4 * HIDDEN] * LAYERS
    assert model_flops(dense_layer_shapes(slim), 16) == model_flops(tiny_model("gpt2", n_inner=None), 16)


@pytest.mark.parametrize(
    "model_or_shapes, seq_len, message",
    [
        ("model", 0, r"model_flops\(seq_len=\.\.\.\) must be a whole number >= 1, got 0"),
        ("model", 1.5, r"model_flops\(seq_len=\.\.\.\) must be a whole number >= 1, got 1\.5 \(float\)"),
        ("bert", 128, r"model_flops takes a model \(torch\.nn\.Module\) or a list of LayerShape, got str"),
        ([1, 2], 128, r"model_flops takes a model .* or a list of LayerShape, got list"),
    ],
    ids=["zero_tokens", "fractional_tokens", "model_name", "list_of_numbers"],
)
def test_model_flops_refuses_a_sequence_length_or_model_of_the_wrong_kind(model_or_shapes, seq_len, message):
    # Before: 0 tokens gave 0 FLOPs and 1.5 a fractional count without a word; a model name an AttributeError.
    model_or_shapes = tiny_model("bert") if model_or_shapes == "model" else model_or_shapes
    with pytest.raises(InputError, match=message):
        model_flops(model_or_shapes, seq_len)


def test_layer_shapes_refuse_a_model_that_is_not_a_module():
    with pytest.raises(InputError, match=r"layer_shapes: model must be a torch\.nn\.Module .*'bert' \(str\)"):
        layer_shapes("bert")
