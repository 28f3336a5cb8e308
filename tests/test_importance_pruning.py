import pytest
import torch
from transformers import HfArgumentParser

from nn_prune_ext import (
    InputError,
    SparseArgs,
    bake_model,
    get_layout,
    importance_pruning,
    is_patched,
    patch_model,
    post_training_prune,
    prune_layers,
    prune_with_masks,
)
from nn_prune_ext.importance import MaskGradients, apply_masks, collect_mask_gradients, taylor_importance
from nn_prune_ext.importance_pruning import ImportancePruningArgs, importance_masks, prune_by_importance

from conftest import GQA_TYPES, HEADS, INTERMEDIATE, KV_HEADS, LAYERS, labelled_batches, tiny_batch, tiny_model


def top(scores: torch.Tensor, count: int) -> list[int]:
    """The `count` highest entries, ties to the lower index (an oracle independent of the module's sorting)."""
    return sorted(sorted(range(len(scores)), key=lambda index: (-float(scores[index]), index))[:count])


def kept(mask: torch.Tensor) -> list[int]:
    return mask.nonzero().flatten().tolist()


def masked_logits(model, masks, batch):
    with torch.no_grad(), apply_masks(model, masks.heads, masks.units):
        return model(**batch).logits


def fake_gradients(monkeypatch, *rounds: tuple[list[list[float]], list[list[float]]]) -> list:
    """Make importance pruning see the given (head, unit) importances, one pair per round; returns the masks it passed."""
    seen = []

    def collect(model, batches, max_batches=None, masks=None):
        heads, units = rounds[len(seen)]
        seen.append(masks.clone())
        heads, units = torch.tensor(heads), torch.tensor(units)
        return MaskGradients(heads=heads[None], units=units[None], num_heads=(heads.shape[1],) * len(heads),
                             ffn_widths=(units.shape[1],) * len(units))

    monkeypatch.setattr(importance_pruning, "collect_mask_gradients", collect)
    return seen


def test_even_keeps_the_most_important_heads_and_units_of_every_layer(model_type):
    model, batches = tiny_model(model_type), labelled_batches(3, model_type=model_type)
    before = {name: value.clone() for name, value in model.state_dict().items()}
    masks = importance_masks(model, batches, target_num_heads=2, target_ffn_width=48)

    importance = taylor_importance(collect_mask_gradients(model, batches))
    group = HEADS // KV_HEADS if model_type in GQA_TYPES else 1  # whole key/value groups by default
    for index in range(LAYERS):
        heads = importance.layer_heads(index)
        best_groups = top(heads.view(-1, group).sum(dim=1), 2 // group)
        assert kept(masks.heads[index]) == [g * group + offset for g in best_groups for offset in range(group)]
        assert kept(masks.units[index]) == top(importance.layer_units(index), 48)

    slim = prune_by_importance(model, batches, target_num_heads=2, target_ffn_width=48)
    assert [(layer.num_heads, layer.num_kv_heads, layer.ffn_down.in_features)
            for layer in get_layout(slim).iter_layers(slim)] == [(2, 2 // group, 48)] * LAYERS
    batch = tiny_batch(model_type)
    with torch.no_grad():
        torch.testing.assert_close(slim(**batch).logits, masked_logits(model, masks, batch), atol=1e-5, rtol=1e-4)
    assert all(torch.equal(value, before[name]) for name, value in model.state_dict().items())  # left unchanged


def test_global_ranks_all_layers_together_and_keeps_a_head_and_a_multiple_per_layer(monkeypatch):
    permutation = torch.randperm(INTERMEDIATE, generator=torch.Generator().manual_seed(0))
    layer1_units = (permutation.float() + 1) / 1000  # all below layer 0's, in no index order
    fake_gradients(monkeypatch, (
        [[4.0, 3.0, 2.0, 1.0], [0.5, 0.4, 0.3, 0.6]],
        [torch.arange(INTERMEDIATE, 0, -1).float().tolist(), layer1_units.tolist()],
    ))
    masks = importance_masks(tiny_model("bert"), [{}], target_num_heads=2, target_ffn_width=40, scope="global",
                             multiple_of=32)
    # 4 heads in all: layer 1 keeps only its best head, although layer 0's third outranks it.
    assert [kept(mask) for mask in masks.heads] == [[0, 1, 2], [3]]
    # 40 rounds up to 64 per layer, 128 in all: layer 1 keeps one run of 32 (its 32 best units), layer 0 the rest.
    assert kept(masks.units[0]) == list(range(96))
    assert kept(masks.units[1]) == top(layer1_units, 32)


def test_rounds_shrink_step_by_step_on_the_pruned_model_and_never_restore(monkeypatch):
    flat_units = [[1.0] * INTERMEDIATE] * LAYERS
    seen = fake_gradients(
        monkeypatch,
        ([[1.0, 4.0, 3.0, 2.0], [4.0, 3.0, 2.0, 1.0]], flat_units),
        ([[9.0, 1.0, 3.0, 2.0], [1.0, 2.0, 9.0, 9.0]], flat_units),  # removed heads now rank first
        ([[9.0, 1.0, 3.0, 2.0], [1.0, 2.0, 9.0, 9.0]], flat_units),
    )
    masks = importance_masks(tiny_model("bert"), [{}], target_num_heads=1, target_ffn_width=32, rounds=3)
    # Sizes 3, 2, 1 heads and 96, 64, 32 units; each round starts from the masks of the one before.
    assert [m.kept_heads() for m in seen] == [[4, 4], [3, 3], [2, 2]]
    assert [m.kept_units() for m in seen] == [[128, 128], [96, 96], [64, 64]]
    assert [kept(mask) for mask in seen[1].heads] == [[1, 2, 3], [0, 1, 2]]
    assert [kept(mask) for mask in seen[2].heads] == [[2, 3], [1, 2]]
    assert [kept(mask) for mask in masks.heads] == [[2], [2]]
    assert masks.kept_units() == [32, 32] and kept(masks.units[0]) == list(range(32))  # ties: lower index


def test_rounds_measure_importance_on_the_masked_model(monkeypatch):
    model, batches = tiny_model("roberta"), iter(labelled_batches(2))  # an iterator is read again each round
    calls = []

    def spy(model, batches, max_batches=None, masks=None):
        calls.append(masks.clone())
        return collect_mask_gradients(model, batches, max_batches, masks=masks)

    monkeypatch.setattr(importance_pruning, "collect_mask_gradients", spy)
    masks = importance_masks(model, batches, target_num_heads=2, rounds=2)
    assert [m.kept_heads() for m in calls] == [[4, 4], [3, 3]] and masks.kept_heads() == [2, 2]
    second = taylor_importance(collect_mask_gradients(model, labelled_batches(2), masks=calls[1]))
    for index in range(LAYERS):
        alive = kept(calls[1].heads[index])
        scores = second.layer_heads(index)[alive]
        assert kept(masks.heads[index]) == sorted(alive[i] for i in top(scores, 2))
    assert masks.kept_units() == [INTERMEDIATE] * LAYERS  # no FFN target: untouched


def test_ties_keep_the_lower_index_and_the_earlier_layer(monkeypatch):
    zeros = ([[0.0] * HEADS] * LAYERS, [[0.0] * INTERMEDIATE] * LAYERS)
    fake_gradients(monkeypatch, zeros, zeros)
    even = importance_masks(tiny_model("bert"), [{}], target_num_heads=2, target_ffn_width=10)
    assert [kept(mask) for mask in even.heads] == [[0, 1]] * LAYERS
    assert [kept(mask) for mask in even.units] == [list(range(10))] * LAYERS
    overall = importance_masks(tiny_model("bert"), [{}], target_num_heads=2, scope="global")
    assert [kept(mask) for mask in overall.heads] == [[0, 1, 2], [0]]


def test_single_query_heads_under_gqa(monkeypatch):
    heads = [[5.0, 1.0, 4.0, 1.0], [5.0, 4.0, 1.0, 1.0]]
    units = [[1.0] * INTERMEDIATE] * LAYERS
    fake_gradients(monkeypatch, (heads, units), (heads, units))
    model = tiny_model("llama")
    grouped = importance_masks(model, [{}], target_num_heads=2)  # groups (0, 1) and (2, 3): sums 6 vs 5, 9 vs 2
    assert [kept(mask) for mask in grouped.heads] == [[0, 1], [0, 1]]
    single = importance_masks(model, [{}], target_num_heads=2, whole_kv_groups=False)
    assert [kept(mask) for mask in single.heads] == [[0, 2], [0, 1]]
    slim = prune_with_masks(model, single)
    # Layer 0 keeps one head of each group: both key/value heads stay; layer 1 keeps one group.
    assert [(layer.num_heads, layer.num_kv_heads) for layer in get_layout(slim).iter_layers(slim)] == [(2, 2), (2, 1)]
    batch = tiny_batch()
    with torch.no_grad():
        torch.testing.assert_close(slim(**batch).logits, masked_logits(model, single, batch), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(
    "model_type, kwargs, message",
    [
        ("bert", {}, "got no target: pass target_num_heads and/or target_ffn_width"),
        ("bert", {"target_num_heads": 5}, r"target_num_heads=5 is out of range: .* at most 4 heads. Pass 0..4"),
        ("bert", {"target_ffn_width": 129}, r"target_ffn_width=129 is out of range: .* at most 128 FFN units"),
        ("bert", {"target_ffn_width": -1}, "target_ffn_width must be a whole number >= 0"),
        ("bert", {"target_num_heads": 2.5}, "target_num_heads must be a whole number"),
        ("bert", {"target_num_heads": 2, "multiple_of": 0}, "multiple_of must be a whole number >= 1"),
        ("bert", {"target_num_heads": 2, "rounds": 0}, "rounds must be a whole number >= 1"),
        ("bert", {"target_num_heads": 2, "scope": "local"}, "scope='local' is not one of even, global"),
        ("bert", {"target_num_heads": 2, "max_batches": 0}, "max_batches must be a whole number >= 1"),
        ("llama", {"target_num_heads": 3}, r"not a multiple of 2, .* or whole_kv_groups=False"),
    ],
)
def test_bad_arguments_name_the_fix(model_type, kwargs, message):
    with pytest.raises(ValueError, match=message):
        importance_masks(tiny_model(model_type), labelled_batches(1, model_type=model_type), **kwargs)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda model: importance_masks(model, [{}], target_num_head=2),
         r"importance_masks got unknown keyword 'target_num_head' \(did you mean 'target_num_heads'\?\)"),
        (lambda model: importance_masks(model, [{}], {"target_num_heads": 2}),
         r"importance_masks: args must be an ImportancePruningArgs or None, got dict"),
        (lambda model: importance_masks("bert", [{}], target_num_heads=2),
         r"importance_masks: model must be a torch\.nn\.Module .*got 'bert' \(str\)"),
        (lambda model: prune_by_importance(model, [{}], target_num_heads=2, inplace="no"),
         r"prune_by_importance\(inplace=\.\.\.\) must be True or False, got 'no'"),
    ],
    ids=["misspelled_keyword", "args_dict", "model_name", "inplace_text"],
)
def test_arguments_of_the_wrong_kind_are_refused_before_any_batch_runs(call, message):
    # Before: a TypeError or an AttributeError deep inside, and inplace="no" slimmed the model itself.
    model = tiny_model("bert")
    with pytest.raises(InputError, match=message):
        call(model)
    assert not hasattr(model, "slim_report")


def test_batches_without_labels_or_no_batches_are_refused():
    model = tiny_model("bert")
    with pytest.raises(ValueError, match="returned no loss.*labels"):
        importance_masks(model, [tiny_batch()], target_num_heads=2)
    with pytest.raises(ValueError, match="got no batches"):
        importance_masks(model, [], target_num_heads=2)


def test_a_patched_model_is_refused_like_post_training_prune_and_prune_layers():
    """Issue 15: prune_by_importance ran on a patched model where the other pruning calls refuse it."""
    model = patch_model(tiny_model("bert"), SparseArgs.struct())
    batches = labelled_batches(1)
    messages = []
    for name, call in (
        ("prune_by_importance", lambda: prune_by_importance(model, batches, target_num_heads=2)),
        ("prune_by_importance", lambda: prune_by_importance(model, batches, target_ffn_width=64, inplace=True)),
        ("post_training_prune", lambda: post_training_prune(model, batches, flops_budget=0.5)),
        ("prune_layers", lambda: prune_layers(model, batches, 1)),
    ):
        with pytest.raises(InputError) as error:
            call()
        assert str(error.value).startswith(f"{name} needs a plain model, but this one is patched for movement pruning")
        messages.append(str(error.value).replace(name, "<call>"))
    assert len(set(messages)) == 1 and "bake it first with nn_prune_ext.bake_model(model)" in messages[0]
    assert is_patched(model)  # refused before anything was changed, inplace or not
    slim = prune_by_importance(bake_model(model), batches, target_num_heads=2)
    assert [layer.heads[1] for layer in slim.slim_report.layers] == [2] * LAYERS


def test_arguments_parse_from_the_command_line_and_combine_with_keywords(monkeypatch):
    (args,) = HfArgumentParser(ImportancePruningArgs).parse_args_into_dataclasses(
        ["--target_num_heads", "2", "--scope", "global", "--multiple_of", "8", "--whole_kv_groups", "false"]
    )
    assert args == ImportancePruningArgs(target_num_heads=2, scope="global", multiple_of=8, whole_kv_groups=False)
    zeros = ([[0.0] * HEADS] * LAYERS, [[0.0] * INTERMEDIATE] * LAYERS)
    fake_gradients(monkeypatch, zeros)
    masks = importance_masks(tiny_model("bert"), [{}], args, scope="even", target_ffn_width=12)  # keywords win
    assert masks.kept_heads() == [2, 2] and masks.kept_units() == [16, 16]  # 12 rounded up to a multiple of 8
