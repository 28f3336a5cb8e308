"""Patch a model for pruning (scored, masked linears), inspect it, and bake it back.

`patch_model` replaces the attention and FFN projections named by the model's layout with
`MaskedLinear`s that keep the same parameters, and attaches one `MaskScores` per group of
linears sharing a mask. A fused or transposed projection (see `arch.projections`) is first split into
one `nn.Linear` per role (`arch.split_projections`), so every role gets its own mask.
`bake_model` multiplies the masks into the weights and restores the stock modules, so the model
saves as an ordinary checkpoint with zeros where it was pruned.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Iterator

import torch
from torch import nn

from .args import SparseArgs, require_sparse_args
from .arch import ArchitectureLayout, AttentionBlock, LayerModules, get_layout, join_projections, split_projections
from .scores.masked_linear import MaskedLinear, MaskScores, begin_forward_all, release_scratch_buffers
from .scores.methods import PruningMethod
from .validation import InputError, check_model, check_real

__all__ = [
    "patch_model",
    "bake_model",
    "is_patched",
    "iter_mask_scores",
    "iter_masked_linears",
    "set_thresholds",
    "densities",
]

logger = logging.getLogger(__name__)

_SCORES_ATTR = "_nn_prune_ext_scores"
_HOOKS_ATTR = "_nn_prune_ext_hooks"


@dataclass
class _Member:
    name: str  # "query", "ffn_up", ... (a key of LayerModules.projections)
    grid: tuple[int, int]


@dataclass
class _Group:
    kind: str  # "attention" or "dense"
    method: PruningMethod
    shape: tuple[int, ...]
    members: list[_Member]


def _block_grid(linear: nn.Module, rows: int, cols: int, where: str) -> tuple[int, int]:
    out_features, in_features = linear.weight.shape
    if out_features % rows or in_features % cols:
        raise InputError(
            f"Block size {rows}x{cols} does not divide the {where} weight of shape ({out_features}, {in_features}). "
            "Choose block rows/cols that divide both dimensions (attention_block_rows/cols or dense_block_rows/cols)."
        )
    return out_features // rows, in_features // cols


def _literal_grid(linear: nn.Linear, granularity: str, block: tuple[int, int], where: str) -> tuple[int, int]:
    """Grid of one matrix pruned on its own: blocks, whole rows or whole columns."""
    if granularity == "row":
        return linear.out_features, 1
    if granularity == "col":
        return 1, linear.in_features
    return _block_grid(linear, block[0], block[1], where)


def _separate_groups(
    names: list[str], kind: str, method: PruningMethod, grids: dict[str, tuple[int, int]]
) -> list[_Group]:
    return [_Group(kind, method, grids[name], [_Member(name, grids[name])]) for name in names]


def _attention_groups(layer: AttentionBlock, args: SparseArgs, where: str) -> list[_Group]:
    """The score groups of one attention block; member names are the block's own (`query`, ...)."""
    linears = layer.attention_projections
    method = args.attention_method
    if args.attention_output_with_dense:
        block = (args.dense_block_rows, args.dense_block_cols)
        output_grid = _literal_grid(layer.output, args.dense_granularity, block, where.format("output"))
        groups = [_Group("dense", args.dense_method, output_grid, [_Member("output", output_grid)])]
        qkv = ["query", "key", "value"]
    else:
        groups, qkv = [], ["query", "key", "value", "output"]

    if args.attention_granularity == "head":
        heads, kv_heads = layer.num_heads, layer.num_kv_heads
        with_output = "output" in qkv
        q_members = [_Member("query", (heads, 1))] + ([_Member("output", (1, heads))] if with_output else [])
        kv_members = [_Member("key", (kv_heads, 1)), _Member("value", (kv_heads, 1))]
        if kv_heads == heads:  # plain multi-head attention: one score per head for q, k, v and o
            return groups + [_Group("attention", method, (heads,), q_members + kv_members)]
        return groups + [
            _Group("attention", method, (heads,), q_members),
            _Group("attention", method, (kv_heads,), kv_members),
        ]

    block = (args.attention_block_rows, args.attention_block_cols)
    grids = {
        name: _literal_grid(linears[name], args.attention_granularity, block, where.format(name))
        for name in ("query", "key", "value")
    }
    if "output" in qkv:
        # The output projection consumes the heads on its columns: its block is the transposed one.
        grids["output"] = _literal_grid(
            layer.output, {"row": "col", "col": "row"}.get(args.attention_granularity, "block"),
            block[::-1], where.format("output"),
        )
    if args.shared_qkv_scores:
        if len({grids["query"], grids["key"], grids["value"]}) != 1:
            raise InputError(
                f"shared_qkv_scores needs q, k and v grids of one shape; {where.format('attention')} has "
                f"{grids['query']}, {grids['key']}, {grids['value']} (grouped-query attention?). "
                "Set shared_qkv_scores=False or use attention_granularity='head'."
            )
        shared = _Group("attention", method, grids["query"], [_Member(n, grids[n]) for n in ("query", "key", "value")])
        return groups + [shared] + _separate_groups(qkv[3:], "attention", method, grids)
    return groups + _separate_groups(qkv, "attention", method, grids)


def _block_groups(block: AttentionBlock, args: SparseArgs, where: str) -> list[_Group]:
    """`_attention_groups` of `block`, its members named by their layer-wide role (`cross_query`, ...)."""
    groups = _attention_groups(block, args, where)
    for group in groups:
        group.members = [_Member(block.role(member.name), member.grid) for member in group.members]
    return groups


def _dense_groups(layer: LayerModules, args: SparseArgs) -> list[_Group]:
    linears = layer.ffn_projections
    method = args.dense_method
    inputs = [name for name in linears if name != "ffn_down"]
    if args.dense_granularity == "unit":
        units = layer.ffn_up.out_features
        members = [_Member(name, (units, 1)) for name in inputs] + [_Member("ffn_down", (1, units))]
        return [_Group("dense", method, (units,), members)]
    block = (args.dense_block_rows, args.dense_block_cols)
    where = f"{layer.name} {{}}"
    grids = {name: _literal_grid(linears[name], args.dense_granularity, block, where.format(name)) for name in inputs}
    grids["ffn_down"] = _literal_grid(
        layer.ffn_down, args.dense_granularity, block[::-1] if args.dense_granularity == "block" else block,
        where.format("ffn_down"),
    )
    return _separate_groups(list(linears), "dense", method, grids)


def _replace(root: nn.Module, path: str, new: nn.Module) -> None:
    parent_path, _, attr = path.rpartition(".")
    parent = root.get_submodule(parent_path) if parent_path else root
    setattr(parent, attr, new)


def _begin_forward(module: nn.Module, args) -> None:
    if getattr(module, "_is_replica", False):
        # DataParallel replicas share the original score modules (plain-list references), so
        # each replica would read masks living on the first device.
        raise InputError(
            "nn_prune_ext does not support torch.nn.DataParallel. Run on several GPUs with DistributedDataParallel "
            "(`accelerate launch` or `torchrun`; the Trainer then uses DDP), or restrict the run to one GPU with "
            "CUDA_VISIBLE_DEVICES=0."
        )
    begin_forward_all(getattr(module, _SCORES_ATTR))


def patch_model(model: nn.Module, sparse_args: SparseArgs, layout: ArchitectureLayout | None = None) -> nn.Module:
    """Attach learnable scores and masks to the attention and FFN linears of `model`, in place.

    Args:
        model: A model whose `config.model_type` has a registered layout (or pass `layout`).
        sparse_args: Methods, granularities and initial thresholds.
        layout: Override the registered layout.

    Returns:
        The same model, patched.

    Raises:
        UnsupportedArchitectureError: No layout for the model's type (an `InputError`).
        InputError: `model` is not a module, `sparse_args` not a `SparseArgs`, `layout` not an
            `ArchitectureLayout`, the model is patched already, or a block size does not divide a matrix.
    """
    check_model(model, "patch_model")
    require_sparse_args(sparse_args, "patch_model: sparse_args")
    if layout is not None and not isinstance(layout, ArchitectureLayout):
        raise InputError(
            f"patch_model: layout must be an ArchitectureLayout or None (the registered one), got {type(layout).__name__}."
        )
    if is_patched(model):
        raise InputError("The model is already patched; bake_model() it first to patch it again.")
    sparse_args.validate()
    layout = layout or get_layout(model)
    if layout.fixed_heads is not None:
        logger.warning(
            "Heads of %s cannot be removed exactly (%s): patch_model scores the FFN units only.",
            "/".join(layout.model_types), layout.fixed_heads,
        )
    if layout.fixed_ffn is not None:
        logger.warning(
            "The FFN of %s is not pruned (%s): patch_model scores the attention only.",
            "/".join(layout.model_types), layout.fixed_ffn,
        )
    split = split_projections(model, layout)
    try:  # every group is checked (block sizes) before any module is replaced
        planned = [(layer, _layer_groups(layer, sparse_args, layout)) for layer in layout.iter_layers(model)]
    except Exception:
        if split:
            join_projections(model)
        raise
    for layer, groups in planned:
        projections = layer.projections
        for group in groups:
            weight = projections[group.members[0].name].weight
            scores = MaskScores(group.method, group.shape, group.kind, sparse_args.initial_threshold)
            scores.to(device=weight.device).train(model.training)
            for position, member in enumerate(group.members):
                projection = projections[member.name]
                masked = MaskedLinear.from_linear(
                    projection.module, scores, member.grid, owner=position == 0, mask_bias=sparse_args.bias_mask
                )
                _replace(layer.module, projection.path, masked.train(model.training))

    base = getattr(model, "base_model", model)
    # In module order, as a walk over the model finds them (the optimizer's parameter order and so its
    # saved state follow it), not in the order of the groups above.
    setattr(base, _SCORES_ATTR, [module for module in model.modules() if isinstance(module, MaskScores)])
    hooks = [base.register_forward_pre_hook(_begin_forward)]
    setattr(base, _HOOKS_ATTR, hooks)
    return model


def _layer_groups(layer: LayerModules, args: SparseArgs, layout: ArchitectureLayout) -> list[_Group]:
    """The score groups of one layer: each attention block's, then the FFN's."""
    groups = []
    if layout.fixed_heads is None:
        for block in layer.attention_blocks:
            if block.num_heads:  # a slimmed block may have no heads left: nothing to score there
                where = f"{layer.name} {block.kind + '-' if block.kind != 'self' else ''}{{}}"
                groups += _block_groups(block, args, where)
    return groups + (_dense_groups(layer, args) if layer.ffn_width else [])


def is_patched(model: nn.Module) -> bool:
    """Whether `model` holds masked linears from `patch_model`."""
    return any(isinstance(module, MaskedLinear) for module in model.modules())


def require_unpatched(model: nn.Module, action: str) -> None:
    """Raise a `ValueError` saying how to proceed when `model` is patched.

    Args:
        model: The model to check.
        action: What needs the plain model, for the message (e.g. "post_training_prune").
    """
    if is_patched(model):
        raise InputError(
            f"{action} needs a plain model, but this one is patched for movement pruning (it holds mask scores): "
            "bake it first with nn_prune_ext.bake_model(model), or pass the dense model."
        )


def iter_mask_scores(model: nn.Module) -> Iterator[MaskScores]:
    """Every score group of a patched model, in module order."""
    # `patch_model` keeps the list on the model it patched: the trainer's callbacks read it at every
    # step, and a walk over every module would cost more than the checks they make.
    registered = getattr(getattr(model, "base_model", model), _SCORES_ATTR, None)
    if registered is not None:
        return iter(registered)
    return (module for module in model.modules() if isinstance(module, MaskScores))


def iter_masked_linears(model: nn.Module) -> Iterator[tuple[str, MaskedLinear]]:
    """`(qualified name, module)` for every masked linear of a patched model."""
    return ((name, module) for name, module in model.named_modules() if isinstance(module, MaskedLinear))


def set_thresholds(model: nn.Module, attention: float, dense: float) -> None:
    """Set the threshold of every attention and every dense score group.

    Args:
        model: A patched model.
        attention: Threshold of the attention score groups.
        dense: Threshold of the FFN score groups.

    Raises:
        InputError: If `model` is not a module, or a threshold is not a finite number in its method's range
            (e.g. [0, 1] for topK); no threshold is set then. A NaN threshold would prune everything (or keep
            an arbitrary half) without a word.
    """
    check_model(model, "set_thresholds")
    values = {
        "attention": check_real(attention, "set_thresholds(attention=...)"),
        "dense": check_real(dense, "set_thresholds(dense=...)"),
    }
    groups = list(iter_mask_scores(model))
    checked = set()
    for scores in groups:  # every group is checked before any is set
        if (scores.kind, scores.method.name) not in checked:
            checked.add((scores.kind, scores.method.name))
            scores.method.check_threshold(values[scores.kind], f"set_thresholds({scores.kind}=...)", tolerance=1e-9)
    for scores in groups:
        scores.threshold = values[scores.kind]


@torch.no_grad()
def eval_grids(model: nn.Module) -> dict[MaskedLinear, torch.Tensor]:
    """The evaluation-mode mask grid of every masked linear, freshly computed.

    Each score group's mask is computed once, from its current scores and threshold (fresh
    rather than cached: magnitude masks read weights that may have changed since the last
    forward, and parameters may have been replaced).

    Returns:
        `{masked linear: mask grid}`, the grid shaped like `linear.grid_shape`.
    """
    masks: dict[int, torch.Tensor] = {}
    grids = {}
    for _, linear in iter_masked_linears(model):
        source = linear.source
        if id(source) not in masks:
            masks[id(source)] = source.method.mask(source.importance(), source.threshold, training=False)
        grids[linear] = masks[id(source)].reshape(linear.grid_shape)
    return grids


@torch.no_grad()
def densities(model: nn.Module) -> dict[str, float]:
    """Fraction of weights kept by the eval-mode masks, per kind and overall.

    Returns:
        `{"attention": ..., "dense": ..., "total": ...}` weighted by the number of weights, over
        the masked linears only (embeddings and heads are not pruned).

    Raises:
        InputError: If `model` is not a module.
    """
    check_model(model, "densities")
    kept = {"attention": 0.0, "dense": 0.0}
    numel = {"attention": 0, "dense": 0}
    for linear, grid in eval_grids(model).items():
        kind = linear.source.kind
        kept[kind] += float(grid.float().mean()) * linear.weight.numel()
        numel[kind] += linear.weight.numel()
    result = {kind: kept[kind] / numel[kind] if numel[kind] else 1.0 for kind in kept}
    total = sum(numel.values())
    result["total"] = sum(kept.values()) / total if total else 1.0
    return result


@torch.no_grad()
def bake_model(model: nn.Module) -> nn.Module:
    """Multiply the eval-mode masks into the weights and restore the stock modules, in place.

    The result has the original module classes and shapes, zeros where pruned, and gives the
    same outputs as the patched model in eval mode.

    Returns:
        The same model, unpatched.

    Raises:
        InputError: If `model` is not a module.
    """
    check_model(model, "bake_model")
    was_training = model.training
    model.eval()
    masked_linears = list(iter_masked_linears(model))
    grids = eval_grids(model)  # all masks first: magnitude masks read the weights baking overwrites
    for name, masked in masked_linears:
        weight, bias = masked.masked_parameters(grids[masked])
        masked.weight.data.copy_(weight)
        if bias is not None:
            masked.bias.data.copy_(bias)
        linear = nn.Linear.__new__(nn.Linear)
        nn.Module.__init__(linear)
        linear.in_features, linear.out_features = masked.in_features, masked.out_features
        linear.weight, linear.bias = masked.weight, masked.bias
        _replace(model, name, linear)
    base = getattr(model, "base_model", model)
    for hook in getattr(base, _HOOKS_ATTR, []):
        hook.remove()
    for attr in (_SCORES_ATTR, _HOOKS_ATTR):
        if hasattr(base, attr):
            delattr(base, attr)
    join_projections(model)
    release_scratch_buffers()
    model.train(was_training)
    return model
