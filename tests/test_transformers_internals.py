"""Each transformers internal nn_prune_ext relies on (nn_prune_ext/transformers_internals.py) is where we expect it.

A failure here names the convention that moved in the installed transformers release, before it
turns into a shape error or, worse, a silently wrong result somewhere else.
"""

import importlib
import inspect

import pytest
import torch
from transformers import AutoModel, AutoModelForCausalLM, BertConfig, BertForSequenceClassification, BertModel, Cache, Trainer

from nn_prune_ext import get_layout, supported_model_types
from nn_prune_ext import transformers_internals as internals
from nn_prune_ext.slim import modeling_slim

from conftest import LAYERS, decoder_model_types, tiny_batch, tiny_config, tiny_model


# ----- how a model calls its layers (posttrain.layer_runner) ----------------------------------------
def test_layers_are_called_once_each_in_order_with_the_previous_output(model_type):
    model = tiny_model(model_type)
    layers = get_layout(model).layer_list(model)
    calls, outputs = [], []
    handles = []
    for index, layer in enumerate(layers):
        handles.append(layer.register_forward_pre_hook(
            lambda module, args, kwargs, index=index: calls.append((index, internals.layer_input(args, kwargs))),
            with_kwargs=True,
        ))
        handles.append(layer.register_forward_hook(lambda module, args, output: outputs.append(output)))
    with torch.no_grad():
        model(**tiny_batch(model_type))
    for handle in handles:
        handle.remove()
    assert [index for index, _ in calls] == list(range(LAYERS))
    for index, hidden in calls:
        assert isinstance(hidden, torch.Tensor) and hidden.shape[::2] == (4, model.config.hidden_size)
        assert hidden.shape == calls[0][1].shape  # every layer sees [batch, tokens, hidden]
        if index:
            torch.testing.assert_close(hidden, internals.layer_output(outputs[index - 1]), rtol=0, atol=0)
    for output in outputs:
        replaced = internals.output_like(internals.output_form(output), torch.zeros(1))
        assert type(replaced) is type(output) and torch.equal(internals.layer_output(replaced), torch.zeros(1))
        if isinstance(output, (tuple, list)):
            assert all(a is b for a, b in zip(replaced[1:], output[1:]))


def test_a_layers_input_can_be_swapped_by_a_pre_hook(model_type):
    model = tiny_model(model_type)
    layer = get_layout(model).layer_list(model)[0]
    seen = []

    def swap(module, args, kwargs):
        hidden = internals.layer_input(args, kwargs)
        return internals.with_layer_input(args, kwargs, torch.zeros_like(hidden))

    handles = [
        layer.register_forward_pre_hook(swap, with_kwargs=True),
        layer.register_forward_pre_hook(lambda m, args, kwargs: seen.append(internals.layer_input(args, kwargs)), with_kwargs=True),
    ]
    with torch.no_grad():
        model(**tiny_batch(model_type))
    for handle in handles:
        handle.remove()
    assert len(seen) == 1 and not seen[0].any()


def test_convention_errors_say_what_moved():
    with pytest.raises(RuntimeError, match="transformers_internals.py"):
        internals.layer_input((), {"states": torch.zeros(1)})
    with pytest.raises(RuntimeError, match="returns layer outputs differently"):
        internals.layer_output({"hidden_states": torch.zeros(1)})


# ----- building models --------------------------------------------------------------------------------
@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
def test_build_model_honours_dtype_and_attention_implementation(implementation):
    config = tiny_config("bert")
    model = internals.build_model(BertForSequenceClassification, config, dtype=torch.float16, attn_implementation=implementation)
    assert type(model) is BertForSequenceClassification and model.dtype == torch.float16
    assert internals.attention_implementation(model.config) == implementation


# ----- Trainer -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "method, parameters",
    [
        ("_save", ["output_dir", "state_dict"]),
        ("call_model_init", ["trial"]),
        ("create_optimizer", ["model"]),
        ("compute_loss", ["model", "inputs", "return_outputs", "num_items_in_batch"]),
        ("evaluation_loop", ["dataloader", "description"]),
        ("log", ["logs", "start_time"]),
        ("training_step", ["model", "inputs", "num_items_in_batch"]),
        ("_save_checkpoint", ["model", "trial"]),
        ("_get_output_dir", ["trial"]),
    ],
)
def test_trainer_methods_that_sparse_trainer_overrides(method, parameters):
    signature = inspect.signature(getattr(Trainer, method))
    assert list(signature.parameters)[1 : 1 + len(parameters)] == parameters


def test_save_model_goes_through_save():
    assert "self._save(" in inspect.getsource(Trainer.save_model)


def test_a_checkpoint_is_written_under_get_output_dir_and_rotated_after_its_trainer_state():
    # SparseTrainer stages a checkpoint by pointing _get_output_dir at the staging folder.
    source = inspect.getsource(Trainer._save_checkpoint)
    assert "self._get_output_dir(trial=trial)" in source
    assert source.index("TRAINER_STATE_NAME") < source.index("rotate_checkpoints(")


def test_rotate_checkpoints_keeps_the_newest_and_the_best(tmp_path):
    for step in (2, 4, 6, 8):
        (tmp_path / f"checkpoint-{step}").mkdir()
    (tmp_path / "_partial-checkpoint-10").mkdir()
    internals.rotate_checkpoints(str(tmp_path), 2, str(tmp_path / "checkpoint-2"))
    assert sorted(path.name for path in tmp_path.iterdir()) == ["_partial-checkpoint-10", "checkpoint-2", "checkpoint-8"]


def test_the_trainer_reads_what_loss_is_per_batch_mean_sets():
    class Recent:  # transformers 5.19 and later
        loss_is_scaled_for_ga = None

    class Older:
        pass

    recent, older = Recent(), Older()
    internals.loss_is_per_batch_mean(recent)
    internals.loss_is_per_batch_mean(older)
    assert recent.loss_is_scaled_for_ga is False and older.model_accepts_loss_kwargs is False
    # The installed Trainer reads the attribute the helper sets for it.
    read = "loss_is_scaled_for_ga" if hasattr(Trainer, "loss_is_scaled_for_ga") else "model_accepts_loss_kwargs"
    assert f"self.{read}" in inspect.getsource(Trainer.training_step)


# ----- what the slim modeling file relies on -----------------------------------------------------------
def test_heterogeneous_configs_refuse_global_reads_and_log_where_expected():
    config = BertConfig(hidden_size=64, num_attention_heads=4, intermediate_size=128, num_hidden_layers=2,
                        per_layer_config={0: {"num_attention_heads": 2}, 1: {"num_attention_heads": 4}})
    assert config.is_heterogeneous
    assert config.per_layer_config[0].num_attention_heads == 2 and config.per_layer_config[1].num_attention_heads == 4
    with pytest.raises(RuntimeError, match="per-layer attribute"):
        config.num_attention_heads
    with modeling_slim.global_size_access(config):
        assert config.num_attention_heads == 4
    assert config.allow_global_per_layer_attribute_access is False
    module_name = modeling_slim._HETEROGENEITY_LOGGER
    assert importlib.import_module(module_name).logger.name == module_name


def test_auto_class_mappings_are_readable():
    classes = modeling_slim.task_classes(BertModel)
    assert classes["AutoModel"] is BertModel
    assert classes["AutoModelForSequenceClassification"] is BertForSequenceClassification


def test_init_weights_initialises_a_new_linear():
    model = tiny_model("bert")
    linear = torch.nn.Linear(4, 4)
    with torch.no_grad():
        linear.weight.fill_(7.0)
    model._init_weights(linear)
    assert not bool((linear.weight == 7.0).any())


@pytest.mark.parametrize("model_type", decoder_model_types())
def test_decoder_layers_hand_their_attention_a_cache_object(model_type):
    """EmptyAttention finds the cache by type among its call's arguments."""
    model = AutoModelForCausalLM.from_config(tiny_config(model_type)).eval()
    layout = get_layout(model)
    attention = layout.layer_list(model)[0].get_submodule(layout.attention)
    found = []
    handle = attention.register_forward_pre_hook(
        lambda module, args, kwargs: found.append(modeling_slim._cache_argument(args, kwargs)), with_kwargs=True
    )
    with torch.no_grad():
        model(**tiny_batch(model_type), use_cache=True)
    handle.remove()
    assert len(found) == 1 and isinstance(found[0], Cache)


# ----- per-layer state in modules and configs ---------------------------------------------------------
def test_attention_modules_carry_the_attributes_slimming_updates(model_type):
    model = tiny_model(model_type)
    layout = get_layout(model)
    for layer in layout.layer_list(model):
        attention = layer.get_submodule(layout.attention)
        source = inspect.getsource(type(attention))
        for attribute, _ in layout.attention_attrs:
            # An attribute this release's attention code never mentions needs no update (Falcon's
            # num_key_value_groups before 5.19); one it reads must exist, or slimming would miss it.
            if f"self.{attribute}" in source:
                assert hasattr(attention, attribute), f"{type(attention).__name__} has no {attribute}"
        if layout.attention_attrs:  # the head counts are read somewhere, or the layout names stale attributes
            assert any(f"self.{attribute}" in source for attribute, _ in layout.attention_attrs), type(attention).__name__


@pytest.mark.parametrize("model_type", decoder_model_types())
def test_decoder_attention_knows_its_layer_index(model_type):
    model = AutoModel.from_config(tiny_config(model_type))
    layout = get_layout(model)
    indices = [layer.get_submodule(layout.attention).layer_idx for layer in layout.layer_list(model)]
    assert indices == list(range(LAYERS))


def test_sliding_window_configs_list_their_layer_types():
    config = tiny_config("qwen2", use_sliding_window=True, sliding_window=4, max_window_layers=1)
    assert list(config.layer_types) == ["full_attention", "sliding_attention"]
    assert set(supported_model_types()) >= {"qwen2"}


def test_cache_updates_and_encoder_decoder_caches_as_empty_attention_uses_them():
    from transformers import DynamicCache, EncoderDecoderCache

    cache = DynamicCache()
    placeholder = torch.zeros(2, 1, 5, 16)  # EmptyAttention's one zero head
    keys, values = cache.update(placeholder, placeholder, 0)
    assert tuple(keys.shape) == (2, 1, 5, 16) and cache.get_seq_length() == 5
    assert isinstance(EncoderDecoderCache(DynamicCache(), DynamicCache()).self_attention_cache, DynamicCache)


def test_activation_names_of_every_architecture_resolve(model_type):
    from transformers.activations import ACT2FN

    model = tiny_model(model_type)
    name = get_layout(model).ffn_activation_name(model.config)
    assert callable(ACT2FN[name])


def test_a_config_restores_from_its_dict():
    """`slim.layers.layers_removed` puts a config back from a snapshot of `vars(config)`, slim configs included."""
    from nn_prune_ext import optimize_model

    model = tiny_model("qwen2", use_sliding_window=True, sliding_window=4, max_window_layers=1)
    with torch.no_grad():
        get_layout(model).layer_list(model)[0].self_attn.o_proj.weight[:, :16] = 0  # one head less: a slim config
    for config in (model.config, optimize_model(model).config):
        before = config.to_dict()
        state = dict(vars(config))
        config.num_hidden_layers, config.layer_types = 1, ["full_attention"]
        vars(config).clear()
        vars(config).update(state)
        assert config.to_dict() == before


# ----- checkpoint entries a load expects (checkpoints.load_for_slimming) ---------------------------------
def test_unreported_extra_keys_leave_just_those_entries_out_of_the_load_report(tmp_path):
    from safetensors.torch import load_file, save_file

    tiny_model("bert").save_pretrained(tmp_path)
    weights = load_file(str(tmp_path / "model.safetensors"))
    weights["bert.encoder.layer.0.attention.self.query.mask_scores.scores"] = torch.zeros(4)
    weights["bert.stray_entry"] = torch.zeros(3)
    del weights["classifier.bias"]
    save_file(weights, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})

    def load_info(model_class):
        return model_class.from_pretrained(tmp_path, output_loading_info=True)[1]

    plain = load_info(BertForSequenceClassification)
    assert set(plain["unexpected_keys"]) == {"bert.encoder.layer.0.attention.self.query.mask_scores.scores",
                                             "bert.stray_entry"}
    with internals.unreported_extra_keys(BertForSequenceClassification, r"\.mask_scores\."):
        expected = load_info(BertForSequenceClassification)
    assert set(expected["unexpected_keys"]) == {"bert.stray_entry"}
    assert set(expected["missing_keys"]) == set(plain["missing_keys"]) == {"classifier.bias"}
    # The attribute is the class's own for the block only; a class with its own patterns gets them back.
    assert internals.IGNORED_UNEXPECTED_KEYS not in BertForSequenceClassification.__dict__
    own = type("WithOwnPatterns", (BertForSequenceClassification,), {internals.IGNORED_UNEXPECTED_KEYS: [r"^pooler"]})
    with pytest.raises(RuntimeError, match="failed inside"):
        with internals.unreported_extra_keys(own, r"\.mask_scores\."):
            assert getattr(own, internals.IGNORED_UNEXPECTED_KEYS) == [r"^pooler", r"\.mask_scores\."]
            raise RuntimeError("failed inside")
    assert own.__dict__[internals.IGNORED_UNEXPECTED_KEYS] == [r"^pooler"]
