import pytest
import torch
from torch import nn

from nn_prune_ext import (
    InputError,
    MaskedLinear,
    SparseArgs,
    bake_model,
    densities,
    get_layout,
    is_patched,
    iter_mask_scores,
    patch_model,
    set_thresholds,
)

from nn_prune_ext.scores.masked_linear import MaskScores

from conftest import GQA_TYPES, HEADS, INTERMEDIATE, KV_HEADS, LAYERS, enable_checkpointing, tiny_batch, tiny_model

# Block sizes that divide the tiny models' matrices (16 = one head).
SETUPS = {
    "hybrid": lambda: SparseArgs.hybrid(attention_block_rows=16, attention_block_cols=16),
    "struct": lambda: SparseArgs.struct(),
    "topk_blocks": lambda: SparseArgs(attention_block_rows=8, attention_block_cols=16, dense_block_rows=4,
                                      dense_block_cols=8, initial_threshold=1.0, final_threshold=0.3),
    "rows_cols": lambda: SparseArgs(attention_granularity="row", dense_granularity="col", final_threshold=0.4),
    "magnitude_units": lambda: SparseArgs(attention_pruning_method="magnitude", dense_pruning_method="magnitude",
                                          attention_granularity="head", dense_granularity="unit", final_threshold=0.5),
    "l0": lambda: SparseArgs(attention_pruning_method="l0", dense_pruning_method="l0", regularization="l0",
                             attention_block_rows=16, attention_block_cols=16, dense_granularity="unit"),
    "shared_qkv_output_dense": lambda: SparseArgs(shared_qkv_scores=True, attention_block_rows=16,
                                                  attention_block_cols=16, attention_output_with_dense=True,
                                                  dense_block_rows=8, dense_block_cols=8, final_threshold=0.5),
}


def _prune_somewhat(model, sparse_args):
    """Give the scores distinct values and move the thresholds so that a real part is pruned."""
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for scores in iter_mask_scores(model):
            if scores.scores is not None:
                scores.scores.copy_(torch.randn(scores.scores.shape, generator=generator) * 2)
                scores.scores.view(-1)[0] = 1.0  # every group keeps something (not saturated: L0 gates need a gradient)
    threshold = {"sigmoied_threshold": 0.5, "l0": 0.0}.get(sparse_args.attention_pruning_method, 0.5)
    set_thresholds(model, attention=threshold, dense=threshold)


@pytest.mark.parametrize("setup", list(SETUPS))
def test_patch_train_step_bake_roundtrip(model_type, setup):
    if setup == "shared_qkv_output_dense" and model_type in GQA_TYPES:
        pytest.skip("q/k/v score sharing needs equal shapes; GQA raises (tested below)")
    sparse_args = SETUPS[setup]()
    model = tiny_model(model_type)
    batch = tiny_batch(model_type)
    reference = model(**batch).logits
    names_before = set(model.state_dict())

    patch_model(model, sparse_args)
    assert is_patched(model)
    # Everything is kept at the start (thresholds keep all, l0 gates start open): dense outputs.
    torch.testing.assert_close(model(**batch).logits, reference, atol=1e-5, rtol=0)
    assert densities(model)["total"] == 1.0

    # One training step reaches every learnable score group.
    model.train()
    _prune_somewhat(model, sparse_args)
    model(**batch).logits.square().sum().backward()
    for scores in iter_mask_scores(model):
        if scores.scores is not None:
            assert scores.scores.grad is not None and scores.scores.grad.abs().sum() > 0, scores
    # The list patch_model keeps is every score module, in module order; masks computed for all groups at
    # once (begin_forward_all) are each group's own.
    walked = [module for module in model.modules() if isinstance(module, MaskScores)]
    assert len(walked) > 0 and list(iter_mask_scores(model)) == walked
    for scores in walked:
        if scores.method.batched_masks:
            assert torch.equal(scores.current(), scores.compute())

    model.eval()
    patched_logits = model(**batch).logits
    density = densities(model)
    assert 0.0 < density["total"] < 1.0

    bake_model(model)
    assert not is_patched(model)
    assert set(model.state_dict()) == names_before
    assert all(type(module) is not MaskedLinear for module in model.modules())
    baked_logits = model(**batch).logits
    assert (baked_logits - patched_logits).abs().max() <= 1e-5
    # The baked zeros are exactly the pruned fraction.
    layout = get_layout(model)
    kept = total = 0
    for layer in layout.iter_layers(model):
        for linear in list(layer.projections.values()):
            kept += int((linear.weight != 0).sum())
            total += linear.weight.numel()
    assert kept / total == pytest.approx(density["total"], abs=1e-9)


def test_head_granularity_shares_scores_per_head_and_kv_group(model_type):
    model = tiny_model(model_type)
    patch_model(model, SparseArgs.struct())
    groups = list(iter_mask_scores(model))
    gqa = model_type in GQA_TYPES
    per_layer_attention = [g for g in groups if g.kind == "attention"]
    assert len(per_layer_attention) == LAYERS * (2 if gqa else 1)
    layer = next(get_layout(model).iter_layers(model))
    assert layer.query.module.source is layer.output.module.source and layer.query.module.source.shape == (HEADS,)
    assert layer.key.module.source is layer.value.module.source
    assert layer.key.module.source.shape == ((KV_HEADS,) if gqa else (HEADS,))
    assert (layer.query.module.grid_shape, layer.output.module.grid_shape) == ((HEADS, 1), (1, HEADS))
    # FFN units: one vector shared by up (and gate) rows and down columns.
    units = layer.ffn_up.module.source
    assert units.shape == (INTERMEDIATE,) and layer.ffn_down.module.source is units
    assert len(units.members) == (3 if get_layout(model_type).ffn_gate else 2)
    # Only the owner registers the scores: no parameter is counted twice.
    names = [name for name, _ in model.named_parameters() if name.endswith("scores")]
    assert len(names) == len(groups)


def test_pruned_head_zeroes_the_whole_head_and_its_bias(model_type):
    model = tiny_model(model_type)
    patch_model(model, SparseArgs.struct())
    layer = next(get_layout(model).iter_layers(model))
    with torch.no_grad():
        layer.query.module.source.scores[1] = -10.0  # prune head 1 (sigmoid << threshold)
    set_thresholds(model, attention=0.1, dense=0.1)
    bake_model(model)
    d = layer.head_dim
    head = slice(d, 2 * d)
    assert layer.query.weight[head].abs().sum() == 0 and layer.output.weight[:, head].abs().sum() == 0
    if layer.query.bias is not None:
        assert layer.query.bias[head].abs().sum() == 0
    assert layer.query.weight[:d].abs().sum() > 0


def test_block_size_that_does_not_divide_is_rejected():
    with pytest.raises(ValueError, match=r"Block size 24x16 does not divide the layer 0 query weight of shape \(64, 64\)"):
        patch_model(tiny_model("bert"), SparseArgs(attention_block_rows=24, attention_block_cols=16))


def test_shared_qkv_scores_with_gqa_is_rejected():
    with pytest.raises(ValueError, match="shared_qkv_scores"):
        patch_model(tiny_model("llama"), SparseArgs(shared_qkv_scores=True))


def test_patching_twice_is_rejected():
    model = patch_model(tiny_model("bert"), SparseArgs())
    with pytest.raises(ValueError, match="already patched"):
        patch_model(model, SparseArgs())


def test_masks_are_computed_once_per_forward_and_shared():
    model = tiny_model("llama")
    patch_model(model, SparseArgs(dense_pruning_method="l0", attention_pruning_method="l0", regularization="l0",
                                  dense_granularity="unit"))
    layer = next(get_layout(model).iter_layers(model))
    seen = {}
    hooks = [
        getattr(layer, name).register_forward_pre_hook(lambda m, a, name=name: seen.__setitem__(name, m.grid().reshape(-1)))
        for name in ("ffn_gate", "ffn_up", "ffn_down")
    ]
    model.train()
    model(**tiny_batch())
    for hook in hooks:
        hook.remove()
    # One hard-concrete sample serves the gate and up rows and the down columns.
    assert torch.equal(seen["ffn_gate"], seen["ffn_up"]) and torch.equal(seen["ffn_up"], seen["ffn_down"])
    # Outside a model forward, a change of threshold or scores is seen at once (no stale cache).
    units = layer.ffn_up.module.source
    model.eval()
    with torch.no_grad():
        model(**tiny_batch())
        assert units.current() is units._cached
        units.threshold = 0.3
        assert units.current() is not units._cached
        units.threshold = 0.0
        units.scores.fill_(-10.0)
        assert units.current().sum() == 0
        model(**tiny_batch())
        # Replaced (not modified in place) scores are seen too.
        units.scores.data = torch.full_like(units.scores, 10.0)
        assert units.current().sum() == units.scores.numel()


def test_reentrant_checkpointing_keeps_one_hard_concrete_sample_per_forward():
    model = tiny_model("llama")
    patch_model(model, SparseArgs(dense_pruning_method="l0", attention_pruning_method="l0", regularization="l0",
                                  dense_granularity="unit", attention_granularity="head"))
    with torch.no_grad():
        for scores in iter_mask_scores(model):
            scores.scores.fill_(0.0)  # gates often fractional, so different samples differ
    assert enable_checkpointing(model, use_reentrant=True)
    layer = next(get_layout(model).iter_layers(model))
    seen: dict[str, list[torch.Tensor]] = {"ffn_gate": [], "ffn_up": [], "ffn_down": []}
    hooks = [
        getattr(layer, name).register_forward_pre_hook(
            lambda m, a, name=name: seen[name].append(m.grid().reshape(-1).detach().clone()))
        for name in seen
    ]
    model.train()
    torch.manual_seed(0)
    model(**tiny_batch()).logits.sum().backward()
    for hook in hooks:
        hook.remove()
    samples = [sample for name in seen for sample in seen[name]]
    assert len(samples) == 6  # forward and recomputation, three members each
    assert all(torch.equal(sample, samples[0]) for sample in samples)
    assert layer.ffn_up.module.source.scores.grad.abs().sum() > 0


@pytest.mark.parametrize("model_type", ["bert", "llama"])
def test_gradient_checkpointing_gives_the_same_gradients(model_type):
    def gradients(checkpointing: bool):
        model = tiny_model(model_type, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
        patch_model(model, SparseArgs.hybrid(attention_block_rows=16, attention_block_cols=16))
        _prune_somewhat(model, model_sparse_args)
        if checkpointing:
            assert enable_checkpointing(model, use_reentrant=False)
        model.train()
        model(**tiny_batch(model_type)).logits.square().sum().backward()
        return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}

    model_sparse_args = SparseArgs.hybrid()
    plain, checkpointed = gradients(False), gradients(True)
    assert set(plain) == set(checkpointed) and any(name.endswith("scores") for name in plain)
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], msg=name)


def test_patched_parameters_are_the_original_objects():
    model = tiny_model("bert")
    weights = {name: param for name, param in model.named_parameters()}
    patch_model(model, SparseArgs())
    for name, param in model.named_parameters():
        if name in weights:
            assert param is weights[name]
    assert isinstance(model.bert.encoder.layer[0].attention.self.query, nn.Linear)


def test_inference_mode_then_training_works():
    model = patch_model(tiny_model("bert"), SparseArgs(attention_block_rows=16, attention_block_cols=16))
    with torch.inference_mode():
        inferred = model(**tiny_batch()).logits.clone()
    model.train()
    model(**tiny_batch()).logits.sum().backward()  # the CPU scratch buffers are not inference tensors
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(**tiny_batch()).logits, inferred)


def test_data_parallel_replicas_are_refused_with_the_fix():
    model = patch_model(tiny_model("bert"), SparseArgs())
    model.base_model._is_replica = True  # what torch.nn.parallel.replicate sets on each replica
    with pytest.raises(InputError, match="DistributedDataParallel"):
        model(**tiny_batch())


def test_bake_reads_replaced_parameters_not_the_cached_masks():
    model = patch_model(tiny_model("bert"), SparseArgs(final_threshold=0.5))
    set_thresholds(model, attention=0.5, dense=0.5)
    with torch.no_grad():
        model(**tiny_batch())  # caches masks from the current scores
        state = {k: (torch.randn_like(v) if k.endswith("scores") else v) for k, v in model.state_dict().items()}
    model.load_state_dict(state, assign=True)
    with torch.no_grad():
        expected = model(**tiny_batch()).logits
    bake_model(model)
    with torch.no_grad():
        assert (model(**tiny_batch()).logits - expected).abs().max() <= 1e-5


def test_a_model_patched_under_inference_mode_runs_and_equals_one_patched_outside():
    """Inference tensors have no version counter, which the mask cache reads (a RuntimeError before)."""
    batch = tiny_batch()
    outside = patch_model(tiny_model("bert"), SETUPS["hybrid"]()).eval()
    with torch.no_grad():
        expected = outside(**batch).logits
    with torch.inference_mode():
        inside = patch_model(tiny_model("bert"), SETUPS["hybrid"]()).eval()
        torch.testing.assert_close(inside(**batch).logits, expected, rtol=0, atol=0)
    # Its thresholds can still be moved outside inference mode (a training run after loading for evaluation).
    set_thresholds(inside, 0.3, 0.3)
    set_thresholds(outside, 0.3, 0.3)
    with torch.no_grad():
        torch.testing.assert_close(inside(**batch).logits, outside(**batch).logits, rtol=0, atol=0)
    assert all(float(group.threshold_tensor) == pytest.approx(0.3) for group in iter_mask_scores(inside))


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda model: patch_model("bert", SparseArgs()), r"patch_model: model must be a torch\.nn\.Module.*'bert' \(str\)"),
        (lambda model: patch_model(model, {"final_threshold": 0.1}), r"patch_model: sparse_args must be a SparseArgs, got dict"),
        (lambda model: patch_model(model, SparseArgs(), layout="bert"), r"patch_model: layout must be an ArchitectureLayout or None .*got str"),
        (lambda model: densities("bert"), r"densities: model must be a torch\.nn\.Module"),
        (lambda model: bake_model("bert"), r"bake_model: model must be a torch\.nn\.Module"),
    ],
    ids=["patch_name", "patch_args_dict", "patch_layout_text", "densities_name", "bake_name"],
)
def test_arguments_of_the_wrong_kind_are_refused_before_the_model_is_touched(call, message):
    # Before: AttributeErrors about str or dict ('dict' object has no attribute 'validate').
    model = tiny_model("bert")
    with pytest.raises(InputError, match=message):
        call(model)
    assert not is_patched(model)


@pytest.mark.parametrize(
    "attention, dense, message",
    [
        (float("nan"), 0.5, r"set_thresholds\(attention=\.\.\.\) must be a finite real number, got nan"),
        (0.5, "0.5", r"set_thresholds\(dense=\.\.\.\) must be a finite real number, got '0\.5' \(str\)"),
        (0.5, 1.5, r"set_thresholds\(dense=\.\.\.\)=1\.5 is out of range for pruning method 'sigmoied_threshold': it must lie in \[0\.0, 1\.0\]"),
    ],
    ids=["nan", "text", "out_of_range"],
)
def test_set_thresholds_refuses_a_threshold_that_is_not_finite_or_out_of_range_and_sets_none(attention, dense, message):
    # Before: a NaN threshold was set, and every mask came out empty (or an arbitrary half) without a word.
    model = patch_model(tiny_model("bert"), SparseArgs.struct())
    before = [scores.threshold for scores in iter_mask_scores(model)]
    with pytest.raises(InputError, match=message):
        set_thresholds(model, attention, dense)
    assert [scores.threshold for scores in iter_mask_scores(model)] == before
    set_thresholds(model, 1.0 + 1e-12, 0.25)  # an ulp past the bound, as the cubic schedule may land
    assert {scores.kind: scores.threshold for scores in iter_mask_scores(model)} == {"attention": 1.0 + 1e-12, "dense": 0.25}
