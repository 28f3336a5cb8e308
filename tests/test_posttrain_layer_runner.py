"""LayerRunner: one layer at a time through the model's own forward, equal to a full forward."""

import pytest
import torch

from nn_prune_ext import get_layout
from nn_prune_ext.posttrain.layer_runner import LayerRunner, StopForward
from nn_prune_ext.transformers_internals import layer_input, layer_output

from conftest import LAYERS, tiny_batch, tiny_model


def layer_inputs(model, inputs, layers=None) -> list[torch.Tensor]:
    """The hidden states each layer receives in one plain forward, and the last layer's output."""
    layers = get_layout(model).layer_list(model) if layers is None else layers
    seen = []
    handles = [
        layer.register_forward_pre_hook(lambda module, args, kwargs: seen.append(layer_input(args, kwargs)), with_kwargs=True)
        for layer in layers
    ]
    handles.append(layers[-1].register_forward_hook(lambda module, args, output: seen.append(layer_output(output))))
    with torch.no_grad():
        model(**inputs)
    for handle in handles:
        handle.remove()
    return seen


def test_layer_by_layer_equals_one_forward(model_type):
    model = tiny_model(model_type)
    batches = [tiny_batch(model_type, seed=1), tiny_batch(model_type, seed=2)]
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
    inputs = tiny_batch(model_type)
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


def test_a_stop_inside_the_layer_returns_none_only_when_allowed():
    model = tiny_model("llama")
    modules = next(get_layout(model).iter_layers(model))
    runner = LayerRunner(model, get_layout(model).layer_list(model), [tiny_batch()])

    def stop(module, args):
        raise StopForward

    handle = modules.ffn_down.register_forward_pre_hook(stop)
    with torch.no_grad():
        hidden = runner.first_input(0)
        assert runner.run(0, 0, hidden, allow_stop=True) is None
        with pytest.raises(RuntimeError, match="ended the forward inside layer 0"):
            runner.run(0, 0, hidden)
    handle.remove()


def test_layers_run_in_order():
    model = tiny_model("bert")
    runner = LayerRunner(model, get_layout(model).layer_list(model), [tiny_batch()])
    with torch.no_grad(), pytest.raises(RuntimeError, match="Layer 0 must run on batch 0 before"):
        runner.run(1, 0, runner.first_input(0))


class SharedBiasModel(torch.nn.Module):
    """Layers returning tuples, as T5's do: layer 0 computes a bias that the later layers are handed back."""

    def __init__(self, layers: int = 3, width: int = 8):
        super().__init__()
        torch.manual_seed(0)
        self.embed = torch.nn.Embedding(20, width)
        self.layers = torch.nn.ModuleList(BiasLayer(width, first=index == 0) for index in range(layers))

    def forward(self, input_ids):
        hidden, bias = self.embed(input_ids), None
        for layer in self.layers:
            hidden, bias = layer(hidden, bias=bias)
        return hidden


class BiasLayer(torch.nn.Module):
    def __init__(self, width: int, first: bool):
        super().__init__()
        self.linear, self.first = torch.nn.Linear(width, width), first

    def forward(self, hidden_states, bias=None):
        if self.first:
            bias = torch.tanh(hidden_states.mean(dim=-1, keepdim=True))
        return hidden_states + torch.relu(self.linear(hidden_states)) * bias, bias


def test_layers_that_return_tuples_get_their_other_entries_back_when_skipped():
    model = SharedBiasModel().eval()
    inputs = {"input_ids": torch.tensor([[1, 2, 3, 4]])}
    expected = layer_inputs(model, inputs, model.layers)
    runner = LayerRunner(model, model.layers, [inputs])
    with torch.no_grad():
        hidden = runner.first_input(0)
        for index in range(3):
            hidden = runner.run(index, 0, hidden)
            torch.testing.assert_close(hidden, expected[index + 1], rtol=0, atol=0)
        # A later run of layer 2 on other states still sees layer 0's bias from its first call.
        other = torch.randn_like(hidden)
        bias = torch.tanh(expected[0].mean(dim=-1, keepdim=True))
        torch.testing.assert_close(runner.run(2, 0, other), other + torch.relu(model.layers[2].linear(other)) * bias)


def test_an_error_inside_the_forward_leaves_no_hook_and_no_skip_behind():
    model = tiny_model("llama")
    layers = get_layout(model).layer_list(model)
    modules = list(get_layout(model).iter_layers(model))
    runner = LayerRunner(model, layers, [tiny_batch()])

    def fail(module, args):
        raise ValueError("boom")

    with torch.no_grad():
        hidden = runner.run(0, 0, runner.first_input(0))
        handle = modules[1].ffn_down.register_forward_pre_hook(fail)
        with pytest.raises(ValueError, match="boom"):
            runner.run(1, 0, hidden)
        handle.remove()
    assert all("forward" not in vars(layer) for layer in layers)
    assert all(not layer._forward_pre_hooks and not layer._forward_hooks for layer in layers)


def test_shared_layers_are_refused():
    model = tiny_model("bert")
    layers = get_layout(model).layer_list(model)
    with pytest.raises(ValueError, match="one layer module at several depths"):
        LayerRunner(model, [layers[0], layers[0]], [tiny_batch()])
