"""Remove whole transformer layers, keeping the model consistent, saveable and aware of its origin.

`drop_layers` deletes layers from the layout's layer list and updates everything that counts
layers: the config's number of layers (`num_hidden_layers`, through the config's `attribute_map`:
DistilBERT's `n_layers`), per-layer lists such as `layer_types`, a slim config's
`per_layer_config`, and the `layer_idx` of the modules that address a KV cache. The config also
records which layers of the dense model remain (`config.nn_prune_layers`), so that FLOPs,
parameter counts, the model card and the dense reference of `nn-prune bench` / `report` still
describe the model the layers were dropped from.

A dense model stays a stock model: it saves with `save_pretrained` and loads with its own class, as
a shallower model of the same type. A slim model stays slim and loads with its slim class (or
`trust_remote_code=True`).
"""

from __future__ import annotations

import contextlib
import copy
import json
import warnings
import operator
from typing import Any, Iterable, Iterator

from torch import nn

from ..arch import ArchitectureLayout, UnsupportedArchitectureError, get_layout
from ..patch import require_unpatched
from . import modeling_slim
from ..validation import InputError, check_flag, check_model

__all__ = [
    "drop_layers",
    "layers_removed",
    "kept_layer_indices",
    "dropped_layer_indices",
    "dense_num_layers",
    "dense_num_parameters",
]

LAYERS_KEY = modeling_slim.LAYERS_KEY
# Config attributes that hold one entry per layer (a transformers convention, not an architecture's).
PER_LAYER_LISTS = ("layer_types",)


def drop_layers(model: nn.Module, indices: Iterable[int], *, inplace: bool = False) -> nn.Module:
    """Remove whole transformer layers from `model`.

    The result computes what `model` computes with those layers skipped (each layer's output
    replaced by its input).

    Args:
        model: A model of a registered architecture, dense or slim (bake a patched model first).
        indices: Positions of the layers to remove in `model`'s layer list (0 is the first layer).
        inplace: Modify `model` itself instead of a copy.

    Returns:
        The model without those layers. Its config records which layers of the dense model remain
        (`kept_layer_indices`); dropping again composes with earlier drops.

    Raises:
        InputError: For a model that is not a module, indices that are not a list of integers, an index
            out of range or given twice, dropping every layer, a patched model, or `inplace` not True or
            False (`inplace="no"` would drop the layers of the model passed in).
    """
    check_model(model, "drop_layers")
    check_flag(inplace, "drop_layers(inplace=...)")
    layout = get_layout(model)
    drop = _checked_indices(indices, len(layout.layer_list(model)))
    _check_not_patched(model)
    if not inplace:
        model = copy.deepcopy(model)
    if drop:
        _drop_in_place(model, layout, drop)
    return model


@contextlib.contextmanager
def layers_removed(model: nn.Module, indices: Iterable[int]) -> Iterator[nn.Module]:
    """Run `model` without some of its layers while the context is open, then put them back.

    It does what `drop_layers(model, indices, inplace=True)` does and undoes it on exit (also
    after an error), without copying the model: meant for trying many candidate layers on a large
    model. Do not save the model inside the context.

    Args:
        model: As for `drop_layers`.
        indices: As for `drop_layers`.

    Yields:
        `model` itself, without those layers.
    """
    check_model(model, "layers_removed")
    layout = get_layout(model)
    layer_list = layout.layer_list(model)
    drop = _checked_indices(indices, len(layer_list))
    _check_not_patched(model)
    modules = list(layer_list)
    layer_indices = [(module, module.layer_idx) for module in model.modules() if _has_layer_idx(module)]
    # Dropping only assigns new values to config attributes (it never mutates them), so a shallow
    # snapshot of the attributes restores the config exactly.
    config_state = dict(vars(model.config))
    try:
        if drop:
            _drop_in_place(model, layout, drop)
        yield model
    finally:
        while len(layer_list):
            del layer_list[-1]
        layer_list.extend(modules)
        for module, index in layer_indices:
            module.layer_idx = index
        vars(model.config).clear()
        vars(model.config).update(config_state)


def kept_layer_indices(config: Any) -> list[int]:
    """For every layer of a model, its index in the dense model (before any layer was dropped).

    Args:
        config: The model's config.

    Returns:
        `[0, 1, ..., n - 1]` for a model that never lost a layer.
    """
    record = getattr(config, LAYERS_KEY, None)
    return list(record["kept"]) if record else list(range(_num_layers(config)))


def dense_num_layers(config: Any) -> int:
    """The number of layers of the dense model, before any layer was dropped."""
    record = getattr(config, LAYERS_KEY, None)
    return int(record["dense_num_layers"]) if record else _num_layers(config)


def _num_layers(config: Any) -> int:
    """Layers of the model over all its stacks (an encoder-decoder's encoder and decoder layers)."""
    try:
        layout = get_layout(config)
    except UnsupportedArchitectureError:  # a type whose layout is derived from a model: one stack
        return int(config.num_hidden_layers)
    return layout.num_layers(config)


def dropped_layer_indices(config: Any) -> list[int]:
    """The indices, in the dense model, of the layers that were dropped (empty if none)."""
    kept = set(kept_layer_indices(config))
    return [index for index in range(dense_num_layers(config)) if index not in kept]


def dense_num_parameters(config: Any) -> int | None:
    """The parameters of the model before its first layer was dropped, or `None` if none was."""
    record = getattr(config, LAYERS_KEY, None)
    return record.get("dense_num_parameters") if record else None


# ----- the work ------------------------------------------------------------------------------
def _checked_indices(indices: Iterable[int], count: int) -> list[int]:
    if isinstance(indices, (str, bytes)) or not isinstance(indices, Iterable):
        raise InputError(f"indices must be a list of layer positions such as [2, 5], got {indices!r}.")
    indices = list(indices)
    checked: list[int] = []
    for index in indices:
        try:
            if isinstance(index, bool):
                raise TypeError
            position = operator.index(index)
        except TypeError:
            raise InputError(f"Layer indices must be integers, got {index!r} in {indices}.") from None
        if not 0 <= position < count:
            raise InputError(
                f"Layer index {position} is out of range: the model has {count} layers, numbered 0 to {count - 1}."
            )
        if position in checked:
            raise InputError(f"Layer {position} is listed twice in {indices}; list each layer once.")
        checked.append(position)
    if checked and len(checked) == count:
        raise InputError(f"Cannot drop all {count} layers: a model needs at least one. Keep at least one layer.")
    return sorted(checked)


def _check_not_patched(model: nn.Module) -> None:
    require_unpatched(model, "drop_layers")


def _has_layer_idx(module: nn.Module) -> bool:
    index = getattr(module, "layer_idx", None)
    return isinstance(index, int) and not isinstance(index, bool)


def _num_layers_attr(config: Any) -> str:
    """The name under which the config stores its number of layers (DistilBERT: `n_layers`)."""
    return config.attribute_map.get("num_hidden_layers", "num_hidden_layers")


def _updated_record(model: nn.Module, count: int, keep: list[int]) -> dict[str, Any]:
    """The config's record of kept layers after keeping `keep` of the current `count` layers."""
    config = model.config
    previous = getattr(config, LAYERS_KEY, None)
    if previous:
        return {**previous, "kept": [previous["kept"][index] for index in keep]}
    dense_values: dict[str, Any] = {_num_layers_attr(config): count}
    for name in PER_LAYER_LISTS:
        values = getattr(config, name, None)
        if isinstance(values, (list, tuple)):
            dense_values[name] = list(values)
    if modeling_slim.is_slim_config(config):
        parameters = modeling_slim.slim_spec(config).get("dense_num_parameters")
    else:
        # Imported here: optimize.py drops layers with this module, so a top-level import would be circular.
        from .optimize import count_parameters

        parameters = count_parameters(model)
    return {"kept": keep, "dense_num_layers": count, "dense_values": dense_values, "dense_num_parameters": parameters}


def _per_layer_sizes(config: Any) -> dict[int, dict[str, Any]]:
    """A slim config's `per_layer_config` as `{layer index: {attribute: value}}`."""
    return {int(index): sizes for index, sizes in config.to_dict().get("per_layer_config", {}).items()}


def _drop_in_place(model: nn.Module, layout: ArchitectureLayout, drop: list[int]) -> None:
    config = model.config
    layer_list = layout.layer_list(model)
    count = len(layer_list)
    keep = [index for index in range(count) if index not in drop]
    record = _updated_record(model, count, keep)
    per_layer = _per_layer_sizes(config) if modeling_slim.is_slim_config(config) else None
    for new, old in enumerate(keep):
        # Attention modules address their KV-cache entry by layer_idx, which must follow the new numbering.
        for module in layer_list[old].modules():
            if _has_layer_idx(module) and module.layer_idx == old:
                module.layer_idx = new
    for index in reversed(drop):
        del layer_list[index]
    _keep_in_config(config, count, keep, per_layer)
    setattr(config, LAYERS_KEY, record)


def _keep_in_config(config: Any, count: int, keep: list[int], per_layer: dict[int, dict[str, Any]] | None) -> None:
    """Make `config` describe only the layers `keep` of its `count` layers (per-layer lists and sizes)."""
    for name in PER_LAYER_LISTS:
        values = getattr(config, name, None)
        if isinstance(values, (list, tuple)) and len(values) == count:
            setattr(config, name, [values[index] for index in keep])
    setattr(config, _num_layers_attr(config), len(keep))
    if per_layer is not None:
        config.per_layer_config = {new: per_layer.get(old, {}) for new, old in enumerate(keep)}


def config_loads_without(model: nn.Module, indices: Iterable[int]) -> bool:
    """Whether the config of `model` without the layers `indices` still loads with this transformers release.

    Some config classes cannot describe every subset of their layers: transformers before 5.19 cannot
    build a ModernBERT config whose layers are all of one attention type (a stock one-layer ModernBERT
    fails too). Dropping such layers would write a checkpoint that does not load.
    """
    config = copy.deepcopy(model.config)
    count = len(get_layout(model).layer_list(model))
    keep = [index for index in range(count) if index not in set(indices)]
    per_layer = _per_layer_sizes(config) if modeling_slim.is_slim_config(config) else None
    with modeling_slim.global_size_access(config):
        _keep_in_config(config, count, keep, per_layer)
        settings = json.loads(config.to_json_string(use_diff=False))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            type(config).from_dict(settings)
    except Exception:  # whatever the config class raises, the checkpoint would not load
        return False
    return True
