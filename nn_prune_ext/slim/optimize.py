"""`optimize_model`: physically remove empty attention heads and FFN units, and empty pre-norm layers.

The result is a smaller dense model of a slim class (the stock class with per-layer sizes, see
`modeling_slim`) whose outputs equal the input model's. It saves as a Hub-ready checkpoint.

A layer left without heads and FFN units adds only its output biases to the residual stream. In a
pre-norm layout (Llama family) that is the identity when there are no such biases, and the layer is
dropped whole (`drop_layers`). A post-norm layer (BERT family) still applies its LayerNorms to the
residual sum, so it is kept.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn
from transformers.activations import ACT2FN

from ..arch import ArchitectureLayout, LayerModules, SlicedProjection, get_layout, store_projections
from ..flops import dense_layer_shapes
from ..masks import StructureMasks, fold_masks, require_structure_masks
from ..patch import bake_model, is_patched
from . import modeling_slim
from .classes import slim_class_for
from .layers import config_loads_without, dense_num_parameters, drop_layers, kept_layer_indices
from .structure import AttentionPlan, LayerPlan, plan_layer, plan_layer_from_masks
from .verify import SlimMismatchError, check_against, reference_probe
from ..validation import InputError, check_flag, check_model

__all__ = ["optimize_model", "prune_with_masks", "SlimReport", "LayerReport", "is_slim_model", "kept_head_indices"]

logger = logging.getLogger(__name__)


@dataclass
class LayerReport:
    """Sizes of one layer before and after slimming.

    Args:
        index: Position of the layer in the model that was slimmed.
        heads: Query heads before and after.
        kv_heads: Key/value heads before and after.
        ffn_width: FFN units before and after.
        notes: Human-readable remarks.
        dropped: Whether the whole layer was removed (its sizes after are then 0).
        cross_heads: Cross-attention query heads before and after, `None` for a layer without cross-attention.
        name: How the layer is named (`"layer 3"`, `"decoder layer 1"` in an encoder-decoder).
    """

    index: int
    heads: tuple[int, int]
    kv_heads: tuple[int, int]
    ffn_width: tuple[int, int]
    notes: list[str] = field(default_factory=list)
    dropped: bool = False
    cross_heads: tuple[int, int] | None = None
    name: str = ""


@dataclass
class SlimReport:
    """What `optimize_model` removed, per layer.

    Args:
        layers: One `LayerReport` per layer of the model that was slimmed, dropped layers included.
        parameters: Parameter count before and after.
    """

    layers: list[LayerReport]
    parameters: tuple[int, int]

    @property
    def dropped_layers(self) -> list[int]:
        """Indices (in the model that was slimmed) of the layers removed whole."""
        return [layer.index for layer in self.layers if layer.dropped]

    @property
    def parameter_ratio(self) -> float:
        """Parameters after / before."""
        before, after = self.parameters
        return after / before if before else 1.0

    def __str__(self) -> str:
        cross = any(layer.cross_heads is not None for layer in self.layers)
        rows = ["layer  heads        kv heads     " + ("cross heads  " if cross else "") + "FFN width      notes"]
        for layer in self.layers:
            cross_column = ""
            if cross:
                before, after = layer.cross_heads or ("-", "-")
                cross_column = f"{before:>4} -> {after:<4}  "
            rows.append(
                f"{layer.index:>5}  {layer.heads[0]:>4} -> {layer.heads[1]:<4}  {layer.kv_heads[0]:>4} -> "
                f"{layer.kv_heads[1]:<4}  {cross_column}{layer.ffn_width[0]:>5} -> {layer.ffn_width[1]:<5}  "
                + "; ".join(([layer.name] if layer.name and cross else []) + layer.notes)
            )
        before, after = self.parameters
        rows.append(f"parameters: {before:,} -> {after:,} ({after / max(before, 1):.1%})")
        return "\n".join(rows)


def optimize_model(model: nn.Module, mode: str = "dense", *, inplace: bool = False, verify: bool = True) -> nn.Module:
    """Remove the attention heads and FFN units whose removal leaves every output unchanged.

    Accepts a patched model (it is baked first with its evaluation-mode masks at the current
    thresholds, which are the final ones after `SparseTrainer.train()`), a baked model,
    or a plain model whose pruned heads and FFN units are zero (e.g. nn_pruning's "hybrid-filled"
    Hub checkpoints). Heads are removed only when their output-projection columns or their value
    rows are zero, never on query or key alone; see `nn_prune_ext.slim.structure` for the rules.
    A pre-norm layer left without heads, FFN units and output biases is the identity and is
    dropped whole; the report lists it (`SlimReport.dropped_layers`) and the config remembers the
    dense model's layers (`nn_prune_ext.slim.layers`). An empty post-norm layer is kept.

    Args:
        model: A model of a registered architecture (any task head).
        mode: `"dense"`: the result is a smaller dense model. (nn_pruning's block-sparse mode needs
            special kernels and is not offered.)
        inplace: Modify `model` itself instead of a copy (saves memory on large models). If `verify`
            then refuses the result, the model passed in is left slimmed (the error says so).
        verify: Check the result on a small made-up input against the model before slimming (two
            forward passes of a few tokens) and refuse it, naming the first layer and tensor that
            differ, rather than return a model that computes something else.

    Returns:
        A model of the slim variant of the input's class, in eval mode, with `slim_report` (a
        `SlimReport`) describing what was removed per layer of the input. It saves with
        `save_pretrained`.

    Raises:
        InputError: If `model` is not a module, for another `mode`, or for `inplace` or `verify` not True or
            False (`inplace="no"` would slim the model itself).
        UnsupportedArchitectureError: For a model without a registered layout (an `InputError`).
        SlimMismatchError: If `verify` finds the slim model computing something else than the masked
            model (a layout that misses state following the heads).
    """
    check_model(model, "optimize_model")
    check_flag(inplace, "optimize_model(inplace=...)")
    check_flag(verify, "optimize_model(verify=...)")
    if mode != "dense":
        raise InputError(
            f"optimize_model supports mode='dense' only (got {mode!r}): it removes heads and FFN units "
            "so that the model is faster on any hardware without sparse kernels."
        )
    layout = get_layout(model)
    model = _working_model(model, inplace)
    activation = _activation(model, layout)
    keep_heads = layout.fixed_heads is not None
    return _slim_planned(
        model, layout, lambda layer: plan_layer(layer, activation, keep_heads=keep_heads), inplace=inplace, verify=verify
    )


def prune_with_masks(
    model: nn.Module, masks: StructureMasks, *, inplace: bool = False, verify: bool = True
) -> nn.Module:
    """Remove the heads and FFN units whose mask is 0 and fold the other mask values into the weights.

    The cut is planned from the masks alone (`plan_layer_from_masks`): the slim model has exactly the
    sizes the masks describe, and computes what the model computes under the masks
    (`importance.apply_masks`). Every way of choosing what to remove ends here: `masks_from_scores`
    after movement pruning, `post_training_prune`, `prune_by_importance`, or masks written by hand.

    Args:
        model: A model of a registered architecture (dense, baked or slim; a patched model is baked
            first with its evaluation masks).
        masks: One value per head and FFN unit of every layer (`StructureMasks`).
        inplace: Modify `model` instead of a copy. If `verify` then refuses the result, the model
            passed in is left slimmed (the error says so).
        verify: Check the result on a small made-up input against the masked model and refuse it,
            naming the first layer and tensor that differ.

    Returns:
        A model of the slim variant of the input's class, in eval mode, with `slim_report`; it saves
        with `save_pretrained`.

    Raises:
        InputError: If `model` is not a module, the masks are not `StructureMasks`, do not fit the model, or
            remove heads of a family whose heads cannot be removed exactly; for `inplace` or `verify` not True
            or False.
        UnsupportedArchitectureError: For a model without a registered layout (an `InputError`).
        SlimMismatchError: If `verify` finds the slim model computing something else than the masked model.
    """
    check_model(model, "prune_with_masks")
    check_flag(inplace, "prune_with_masks(inplace=...)")
    check_flag(verify, "prune_with_masks(verify=...)")
    require_structure_masks(masks, "prune_with_masks: masks")
    layout = get_layout(model)
    masks.check(model)  # before the copy: masks of the wrong shape should cost nothing
    model = _working_model(model, inplace)
    fold_masks(model, masks)  # kept values scale their columns; the probe reference is the masked model
    cross_masks = masks.cross_heads or [None] * masks.num_layers
    per_layer = {
        layer.index: (heads, units, cross)
        for layer, heads, units, cross in zip(layout.iter_layers(model), masks.heads, masks.units, cross_masks)
    }
    return _slim_planned(
        model, layout, lambda layer: plan_layer_from_masks(layer, *per_layer[layer.index]), inplace=inplace, verify=verify
    )


def _working_model(model: nn.Module, inplace: bool) -> nn.Module:
    """The model to slim (a copy unless `inplace`), baked if patched, in eval mode."""
    if not inplace:
        model = copy.deepcopy(model)
    if is_patched(model):
        bake_model(model)
    return model.eval()


def _slim_planned(
    model: nn.Module,
    layout: ArchitectureLayout,
    plan_for: Callable[[LayerModules], LayerPlan],
    *,
    inplace: bool,
    verify: bool,
) -> nn.Module:
    """Slice every layer of `model` (in place) as `plan_for` plans it, drop identity layers, check and report."""
    reference = reference_probe(model) if verify else None
    parameters_before = count_parameters(model)
    layers = list(layout.iter_layers(model))
    plans = [plan_for(layer) for layer in layers]
    storages = {name: stack.storages(model) for name, stack in layout.stacks}
    with torch.no_grad():
        tensors = [_slice_layer(layer, plan) for layer, plan in zip(layers, plans)]
        head_rows = [_slice_head_rows(layer, plan) for layer, plan in zip(layers, plans)]
        biases = _slice_position_biases(layers, plans)
        _describe_slim_config(model, layout, layers, plans, parameters_before)
        modeling_slim.apply_slim_shapes(model, device="meta")
        for layer, layer_tensors in zip(layers, tensors):
            store_projections(layer.module, layer.layout, storages[layer.stack], layer_tensors, head_dim=layer.head_dim)
            _store_head_rows(layer, head_rows[layer.index])
            _store_position_bias(layer, biases[layer.index])
    if not isinstance(model, modeling_slim.SlimModelMixin):
        model.__class__ = slim_class_for(type(model))
    identity, notes = _identity_layers(layout, model.config, plans, tensors)
    if identity and not config_loads_without(model, identity):
        for index in identity:
            notes[index] = (
                "kept without heads or FFN units (the identity): this transformers release cannot load the "
                "config of the model without it"
            )
        identity = []
    if identity:
        drop_layers(model, identity, inplace=True)
    model.eval()
    if reference is not None:
        try:
            check_against(reference, model)
        except SlimMismatchError as error:
            if not inplace:
                raise
            raise SlimMismatchError(
                f"{error} With inplace=True the model passed in was slimmed all the same and is now this refused "
                "model: load it again before using it."
            ) from error
    model.slim_report = SlimReport(
        layers=[
            _layer_report(plan, layer.name, plan.index in identity, notes.get(plan.index))
            for layer, plan in zip(layers, plans)
        ],
        parameters=(parameters_before, count_parameters(model)),
    )
    logger.info("slimmed:\n%s", model.slim_report)
    return model


def is_slim_model(model: nn.Module) -> bool:
    """Whether `model` is slim already and has nothing left to slim: a slim config, and no mask scores."""
    return modeling_slim.is_slim_config(model.config) and not is_patched(model)


def count_parameters(model: nn.Module) -> int:
    """Parameters of `model`, tied ones counted once."""
    seen, total = set(), 0
    for parameter in model.parameters():
        if id(parameter) not in seen:
            seen.add(id(parameter))
            total += parameter.numel()
    return total


def _activation(model: nn.Module, layout: ArchitectureLayout) -> nn.Module | None:
    name = layout.ffn_activation_name(model.config)
    if callable(name) and not isinstance(name, str):
        return name
    try:
        return ACT2FN[name]
    except KeyError:
        return None


def _rows(weight: torch.Tensor, heads: list[int | None], head_dim: int) -> torch.Tensor:
    """Rows of `weight` (or entries of a bias) for the given heads; `None` heads are zero rows."""
    pieces = [
        weight[h * head_dim : (h + 1) * head_dim] if h is not None else weight.new_zeros(head_dim, *weight.shape[1:])
        for h in heads
    ]
    return torch.cat(pieces) if pieces else weight.new_zeros(0, *weight.shape[1:])


def _slice_attention(
    block, query_heads: list[int | None], kv_heads: list[int], output_delta: torch.Tensor | None, head_dim: int
) -> dict[str, tuple[torch.Tensor, torch.Tensor | None]]:
    """The `(out, in)` weight and bias of every role of one attention block keeping the given heads."""
    result = {}
    if query_heads:
        for name, heads in (("query", query_heads), ("key", kv_heads), ("value", kv_heads)):
            projection = getattr(block, name)
            bias = _rows(projection.bias, heads, head_dim) if projection.bias is not None else None
            result[block.role(name)] = (_rows(projection.weight, heads, head_dim), bias)
    output = block.output
    output_bias = output.bias
    if output_bias is not None and output_delta is not None:
        output_bias = output_bias + output_delta
    result[block.role("output")] = (
        _rows(output.weight.t(), query_heads, head_dim).t().contiguous(), _clone(output_bias)
    )
    return result


def _slice_layer(layer: LayerModules, plan: LayerPlan) -> dict[str, SlicedProjection]:
    """The `(out, in)` weight and bias of every role of `layer` under `plan`.

    Each remembers whether the parameters it is cut from require gradients, so frozen ones stay frozen.
    """
    d = plan.head_dim
    result = _slice_attention(layer.self_attention, plan.query_heads, plan.kv_heads, plan.output_bias_delta, d)
    if plan.cross is not None:
        cross = plan.cross
        result.update(_slice_attention(layer.cross, cross.query_heads, cross.kv_heads, cross.output_bias_delta, d))

    if layer.ffn_down is not None:
        result.update(_slice_ffn(layer, plan))
    projections = layer.projections
    return {
        name: SlicedProjection(
            weight.contiguous(),
            bias,
            (
                projections[name].stored_weight.requires_grad,
                projections[name].stored_bias is not None and projections[name].stored_bias.requires_grad,
            ),
        )
        for name, (weight, bias) in result.items()
    }


def _slice_ffn(layer: LayerModules, plan: LayerPlan) -> dict[str, tuple[torch.Tensor, torch.Tensor | None]]:
    """The `(out, in)` weight and bias of the FFN projections keeping the planned units."""
    result = {}
    units = torch.tensor(plan.ffn_units, dtype=torch.long, device=layer.ffn_down.weight.device)
    for name in ("ffn_up", "ffn_gate"):
        projection = getattr(layer, name)
        if projection is not None:
            bias = projection.bias.index_select(0, units) if projection.bias is not None else None
            result[name] = (projection.weight.index_select(0, units), bias)
    down = layer.ffn_down
    down_bias = down.bias
    if down_bias is not None and plan.down_bias_delta is not None:
        down_bias = down_bias + plan.down_bias_delta
    result["ffn_down"] = (down.weight.index_select(1, units), _clone(down_bias))
    return result


def _slice_head_rows(layer: LayerModules, plan: LayerPlan) -> dict[str, SlicedProjection]:
    """The kept heads' rows of the layer's per-head modules (the layout's `head_rows`); none without heads."""
    if not plan.query_heads:
        return {}
    result = {}
    for path, module in layer.head_row_modules().items():
        bias = _rows(module.bias, plan.query_heads, plan.head_dim) if module.bias is not None else None
        requires_grad = (module.weight.requires_grad, module.bias is not None and module.bias.requires_grad)
        result[path] = SlicedProjection(_rows(module.weight, plan.query_heads, plan.head_dim), bias, requires_grad)
    return result


def _store_head_rows(layer: LayerModules, sliced: dict[str, SlicedProjection]) -> None:
    """Install `nn.Linear`s holding the sliced per-head rows in place of the (meta) modules of the slim layer."""
    for path, part in sliced.items():
        linear = nn.Linear(part.weight.shape[1], part.weight.shape[0], bias=part.bias is not None, device="meta")
        linear.weight = nn.Parameter(part.weight.contiguous(), requires_grad=part.requires_grad[0])
        if part.bias is not None:
            linear.bias = nn.Parameter(part.bias.contiguous(), requires_grad=part.requires_grad[1])
        parent_path, _, name = path.rpartition(".")
        setattr(layer.module.get_submodule(parent_path) if parent_path else layer.module, name, linear)


def _slice_position_biases(
    layers: list[LayerModules], plans: list[LayerPlan]
) -> list[tuple[torch.Tensor, bool] | None]:
    """Per layer, the columns of its kept heads of the per-head position-bias embedding (`position_bias`).

    A layer reads its own embedding (the first layer of a dense stack, every layer of a slim one) or else
    the first one of its stack, which the dense model shares with all its layers.
    """
    first: dict[str, nn.Embedding] = {}
    for layer in layers:
        embedding = layer.position_bias_embedding()
        if embedding is not None:
            first.setdefault(layer.stack, embedding)
    result = []
    for layer, plan in zip(layers, plans):
        source = layer.position_bias_embedding() or first.get(layer.stack)
        if source is None or not plan.query_heads:
            result.append(None)
            continue
        columns = source.weight.t()  # [heads, buckets]: one row per head, as _rows expects
        result.append((_rows(columns, plan.query_heads, 1).t().contiguous(), source.weight.requires_grad))
    return result


def _store_position_bias(layer: LayerModules, sliced: tuple[torch.Tensor, bool] | None) -> None:
    """Fill the slim layer's own position-bias embedding (made by `apply_slim_shapes`) with its heads' columns."""
    if sliced is None:
        return
    weight, requires_grad = sliced
    layer.position_bias_embedding().weight = nn.Parameter(weight.detach().clone(), requires_grad=requires_grad)


def _clone(tensor: torch.Tensor | None) -> torch.Tensor | None:
    return None if tensor is None else tensor.detach().clone()


def _derives_head_dim(config, layout: ArchitectureLayout) -> bool:
    """Whether the config class computes the head size from the head count (Falcon's `head_dim` property)."""
    return isinstance(getattr(type(config), layout.head_dim_attr or "head_dim", None), property)


def _identity_layers(
    layout: ArchitectureLayout,
    config,
    plans: list[LayerPlan],
    tensors: list[dict[str, SlicedProjection]],
) -> tuple[list[int], dict[int, str]]:
    """The layers to drop because they compute the identity, and a note for each empty layer.

    Args:
        layout: The model's layout.
        config: The model's config (norm placement can be a config choice).
        plans: The plan of every layer.
        tensors: The sliced parameters of every layer (`_slice_layer`), biases with folded constants.

    Returns:
        `(indices of the layers to drop, {layer index: note})`.
    """
    norm_placement = layout.norm_placement_for(config)
    drop, notes = [], {}
    for plan, layer_tensors in zip(plans, tensors):
        if not plan.empty:
            continue
        biases = [layer_tensors[name].bias for name in ("output", "cross_output", "ffn_down") if name in layer_tensors]
        if norm_placement == "post":
            notes[plan.index] = (
                "kept without heads or FFN units: its post-norm LayerNorms still transform the hidden states"
            )
        elif any(bias is not None and bias.any() for bias in biases):
            notes[plan.index] = "kept without heads or FFN units: its output biases still add a constant"
        elif layout.decoder is not None:
            notes[plan.index] = "kept without heads or FFN units (the identity): encoder-decoder layers are not dropped"
        else:
            drop.append(plan.index)
            notes[plan.index] = "dropped: without heads or FFN units this pre-norm layer is the identity"
    if drop and len(drop) == len(plans):
        notes[drop[0]] = "kept without heads or FFN units (the identity): a model needs at least one layer"
        drop = drop[1:]
    return drop, notes


def _describe_slim_config(
    model: nn.Module, layout: ArchitectureLayout, layers: list[LayerModules], plans: list[LayerPlan], parameters: int
) -> None:
    """Write every layer's sizes and the layout description into the config.

    A single stack's sizes go to `per_layer_config` (transformers' heterogeneous configs, so stock code
    reading a global size fails); an encoder-decoder's to each stack's `shapes` in the description,
    since `per_layer_config` has one entry per layer index and the two stacks share indices.
    """
    config = model.config
    previous = getattr(config, modeling_slim.SLIM_SPEC_KEY, None) or {}
    # The dense model's layer shapes, for FLOPs and model cards (a config's global sizes can be a family
    # default such as GPT-2's n_inner=None); read before this model's description is replaced.
    dense_shapes = [dataclasses.asdict(shape) for shape in dense_layer_shapes(model)]
    canonical = lambda attribute: config.attribute_map.get(attribute, attribute)  # noqa: E731
    spec = layout.slim_spec(model)
    stack_specs = spec.get("stacks", [spec])
    for stack_spec in stack_specs:
        for key in ("num_heads_attr", "num_kv_heads_attr", "head_dim_attr", "intermediate_size_attr", "hidden_size_attr"):
            if stack_spec[key] is not None:
                stack_spec[key] = canonical(stack_spec[key])
    # Slimming a slim model again, or a model that lost layers, keeps the size of the original dense
    # model for the model card.
    spec["dense_num_parameters"] = previous.get("dense_num_parameters") or dense_num_parameters(config) or parameters
    spec["dense_shapes"] = dense_shapes
    _record_kept_heads(config, previous, layers, plans, stack_specs)
    if "stacks" in spec:
        by_name = {stack_spec["name"]: stack_spec for stack_spec in stack_specs}
        for stack_spec in stack_specs:
            stack_spec["shapes"] = []
        for layer, plan in zip(layers, plans):
            by_name[layer.stack]["shapes"].append(_shape(plan))
        setattr(config, modeling_slim.SLIM_SPEC_KEY, spec)
        return
    head_dim = plans[0].head_dim if plans else layout.head_dim(config)
    # A config that derives its head size from the head count (Falcon's head_dim property) divides by a
    # layer's head count, which may be 0: its layers' head counts go under LAYER_HEADS_KEY instead (the
    # stock code reads the dense count there, which is right for the head size), and no head_dim per layer.
    derived_head_dim = _derives_head_dim(config, layout)
    if derived_head_dim:
        spec["layer_num_heads_attr"] = modeling_slim.LAYER_HEADS_KEY
    per_layer = {}
    for plan in plans:
        sizes = {spec.get("layer_num_heads_attr") or spec["num_heads_attr"]: len(plan.query_heads)}
        if not derived_head_dim:
            sizes[spec["head_dim_attr"]] = head_dim
        if not plan.fixed_ffn:  # a whole FFN keeps reading the global width
            sizes[spec["intermediate_size_attr"]] = len(plan.ffn_units)
        if spec["num_kv_heads_attr"]:
            sizes[spec["num_kv_heads_attr"]] = len(plan.kv_heads)
        per_layer[plan.index] = sizes
    with modeling_slim.global_size_access(config):
        if not derived_head_dim and getattr(config, spec["head_dim_attr"], None) is None:
            setattr(config, spec["head_dim_attr"], head_dim)
    setattr(config, modeling_slim.SLIM_SPEC_KEY, spec)
    config.per_layer_config = per_layer
    config.serialize_explicit_per_layer_config = True


def _record_kept_heads(
    config, previous: dict, layers: list[LayerModules], plans: list[LayerPlan], stack_specs: list[dict]
) -> None:
    """Record which dense heads every layer keeps (`kept_heads`, keyed by the layer's index in the dense model).

    Stacks whose attention takes per-head arguments of the dense model (`head_arguments`) select those
    arguments with it when loading; every stack's record names the heads in pictures
    (`kept_head_indices`). Slimming a slim model again composes the new choice with the recorded one.
    """
    dense_indices = kept_layer_indices(config)
    previous_stacks = previous.get("stacks", [previous]) if previous else []
    for stack_spec in stack_specs:
        earlier_spec = next((entry for entry in previous_stacks if entry.get("layers") == stack_spec["layers"]), None)
        if earlier_spec is not None and "kept_heads" not in earlier_spec and not stack_spec.get("head_arguments"):
            # Slim already, saved before every stack recorded its heads: which dense heads remain is unknown,
            # and recording the slim positions instead would name the wrong heads.
            continue
        before = (earlier_spec or {}).get("kept_heads", {})
        kept = {}
        stack_layers = [(layer, plan) for layer, plan in zip(layers, plans) if layer.layout.layers == stack_spec["layers"]]
        for layer, plan in stack_layers:
            dense_index = dense_indices[layer.index] if len(stack_specs) == 1 else layer.position
            earlier = before.get(str(dense_index))
            kept[str(dense_index)] = [
                None if head is None else (earlier[head] if earlier is not None else head) for head in plan.query_heads
            ]
        stack_spec["kept_heads"] = kept


def kept_head_indices(model: nn.Module) -> list[list[int | None]] | None:
    """For every layer of a slim model, the dense model's index of each of its query heads.

    Args:
        model: A slim model (`optimize_model`'s result, or a loaded slim checkpoint).

    Returns:
        One list per layer, in `iter_layers` order: entry `j` is the dense index of the layer's head
        `j`, `None` for a zero head slimming added to fill a key/value group. `None` instead of the
        lists for a model that is not slim, or a slim checkpoint saved before the heads were recorded.

    Raises:
        ValueError: When a recorded list does not match its layer's head count (the model was
            changed after slimming without recording it).
    """
    if not modeling_slim.is_slim_config(model.config):
        return None
    stacks = modeling_slim.slim_spec(model.config).get("stacks")
    stack_specs = stacks or [modeling_slim.slim_spec(model.config)]
    dense_indices = kept_layer_indices(model.config)
    result = []
    for layer in get_layout(model).iter_layers(model):
        spec = next((entry for entry in stack_specs if entry.get("layers") == layer.layout.layers), {})
        key = dense_indices[layer.index] if len(stack_specs) == 1 else layer.position
        kept = spec.get("kept_heads", {}).get(str(key))
        if kept is None:
            return None
        if len(kept) != layer.num_heads:
            raise InputError(
                f"The slim config records {len(kept)} heads for {layer.name}, but the layer has {layer.num_heads}: "
                "the model changed after slimming. Slim it again with optimize_model to record its heads."
            )
        result.append(list(kept))
    return result


def _shape(plan: LayerPlan) -> dict[str, int]:
    """One layer's sizes as a slim description's `shapes` entry (`modeling_slim.layer_shape`'s keys)."""
    cross = plan.cross or AttentionPlan(0, 0, [], [])
    return {
        "num_heads": len(plan.query_heads),
        "num_kv_heads": len(plan.kv_heads),
        "head_dim": plan.head_dim,
        "ffn_width": len(plan.ffn_units),
        "cross_heads": len(cross.query_heads),
        "cross_kv_heads": len(cross.kv_heads),
    }


def _layer_report(plan: LayerPlan, name: str, dropped: bool, note: str | None) -> LayerReport:
    return LayerReport(
        index=plan.index,
        heads=(plan.num_heads, len(plan.query_heads)),
        kv_heads=(plan.num_kv_heads, len(plan.kv_heads)),
        ffn_width=(plan.ffn_width, len(plan.ffn_units)),
        notes=list(plan.notes) + ([note] if note else []),
        dropped=dropped,
        cross_heads=None if plan.cross is None else (plan.cross.num_heads, len(plan.cross.query_heads)),
        name=name,
    )
