"""LayerRunner: one layer at a time through the model's own forward, equal to a full forward."""

import pytest
import torch

from nn_prune_ext import get_layout
from nn_prune_ext.posttrain.layer_runner import LayerRunner, StopForward

from conftest import LAYERS, tiny_batch, tiny_model


def layer_inputs(model, inputs) -> list[torch.Tensor]:
    """The hidden states each layer receives in one plain forward, and the last layer's output."""
    layers = get_layout(model).layer_list(model)
    seen = []
    handles = [
        layer.register_forward_pre_hook(
            lambda module, args, kwargs: seen.append(args[0] if args else kwargs["hidden_states"]), with_kwargs=True
        )
        for layer in layers
    ]
    handles.append(
        layers[-1].register_forward_hook(
            lambda module, args, output: seen.append(output[0] if isinstance(output, tuple) else output)
        )
    )
    with torch.no_grad():
        model(**inputs)
    for handle in handles:
        handle.remove()
    return seen


def test_layer_by_layer_equals_one_forward(model_type):
    model = tiny_model(model_type)
    batches = [tiny_batch(seed=1), tiny_batch(seed=2)]
    runner = LayerRunner(model, get_layout(model).layer_list(model), batches)
    for batch, inputs in enumerate(batches):
        expected = layer_inputs(model, inputs)
        with torch.no_grad():
            hidden = runner.first_input(batch)
            torch.testing.assert_close(hidden, expected[0], rtol=0, atol=0)
            for index in range(LAYERS):
                hidden = runner.run(index, batch, hidden)
                torch.testing.assert_close(hidden, expected[index + 1], rtol=0, atol=1e-6)


def test_the_given_hidden_states_are_what_the_layer_computes_on(model_type):
    """Earlier layers are skipped: a run of layer 1 depends only on the hidden states given to it."""
    model = tiny_model(model_type)
    inputs = tiny_batch()
    layers = get_layout(model).layer_list(model)
    runner = LayerRunner(model, layers, [inputs])
    with torch.no_grad():
        first = runner.run(0, 0, runner.first_input(0))
        given = torch.randn_like(first)
        calls = []
        handle = next(get_layout(model).iter_layers(model)).ffn_down.register_forward_pre_hook(
            lambda module, args: calls.append(1)
        )
        output = runner.run(1, 0, given)
        handle.remove()
        assert calls == []  # layer 0 did not compute
        with_other_weights = tiny_model(model_type, seed=1)  # layer 0 differs, layer 1 is copied over
        with_other_weights.load_state_dict(model.state_dict() | {
            name: value for name, value in with_other_weights.state_dict().items() if ".0." in name
        })
        other = LayerRunner(with_other_weights, get_layout(model).layer_list(with_other_weights), [inputs])
        other.run(0, 0, other.first_input(0))
        torch.testing.assert_close(other.run(1, 0, given), output, rtol=0, atol=0)
    assert all("forward" not in vars(layer) for layer in layers)  # the skips are undone
    assert all(not layer._forward_pre_hooks and not layer._forward_hooks for layer in layers)


def test_a_stop_inside_the_layer_returns_none():
    model = tiny_model("llama")
    modules = next(get_layout(model).iter_layers(model))
    runner = LayerRunner(model, get_layout(model).layer_list(model), [tiny_batch()])

    def stop(module, args):
        raise StopForward

    handle = modules.ffn_down.register_forward_pre_hook(stop)
    with torch.no_grad():
        assert runner.run(0, 0, runner.first_input(0)) is None
    handle.remove()


def test_layers_run_in_order():
    model = tiny_model("bert")
    runner = LayerRunner(model, get_layout(model).layer_list(model), [tiny_batch()])
    with torch.no_grad(), pytest.raises(RuntimeError, match="Layer 0 must run on batch 0 before"):
        runner.run(1, 0, runner.first_input(0))
