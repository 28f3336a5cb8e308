"""`summary(model)`: parameters per module and per layer, kept heads and FFN width, and FLOPs.

```python
from nn_prune_ext.summary import summary

print(summary(slim, seq_len=128))          # a table; summary(...).to_dict() for JSON
```

It describes the model as it is: a dense model's layers are all full, a slim model's show what
they kept of the dense model its config records (sizes and FLOPs, with the dense ones beside
them). Rows follow the layers of the dense model: a layer dropped whole (`optimize_model` of an
empty pre-norm layer, `drop_layers`) has a row marked dropped, with nothing kept. A patched
model (`SparseTrainer` while training) still has its dense shapes, so its rows are dense; its
mask densities are listed, and `summary(optimize_model(model))` shows what it will keep. Zeroed
heads of a baked model are counted as present, as `model_flops` does.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .flops import dense_layer_shapes, kept_layer_shapes, layer_macs
from .arch import get_layout
from .patch import densities, is_patched
from .slim.classes import stock_class
from .slim.layers import dense_num_parameters, kept_layer_indices
from .slim.modeling_slim import dense_config, is_slim_config, slim_spec
from .slim.optimize import count_parameters
from .transformers_internals import build_model
from .validation import InputError, check_model, check_whole

__all__ = ["LayerSummary", "ModelSummary", "summary", "dense_parameter_count"]

LAYERS = "layers"


@dataclass
class LayerSummary:
    """Parameters, sizes and cost of one transformer layer of the dense model.

    Args:
        index: Position of the layer in the dense model (the model's own position differs once
            layers were dropped).
        attention_parameters: Parameters of the query, key, value and output projections.
        ffn_parameters: Parameters of the FFN projections (up, gate, down), or of the whole FFN a family
            does not prune (a mixture of experts: experts and router).
        other_parameters: The rest of the layer (its norms; a patched model's mask scores count
            with the linear that holds them).
        heads, kv_heads, ffn_width: Query heads, key/value heads and FFN units the layer has.
        dense_heads, dense_kv_heads, dense_ffn_width: The same in the dense model (equal to the
            above unless the model is slim).
        flops: FLOPs of the layer for one sequence of the summary's `seq_len` tokens.
        dense_flops: The same for the dense layer.
        dropped: Whether the layer was removed whole (everything above is then 0 but the dense sizes).
        name: How the layer is named where the index alone is ambiguous (`"decoder layer 1"`).
        cross_heads, dense_cross_heads: Cross-attention query heads (an encoder-decoder's decoder layers).
    """

    index: int
    attention_parameters: int
    ffn_parameters: int
    other_parameters: int
    heads: int
    kv_heads: int
    ffn_width: int
    dense_heads: int
    dense_kv_heads: int
    dense_ffn_width: int
    flops: int
    dense_flops: int
    dropped: bool = False
    name: str = ""
    cross_heads: int = 0
    dense_cross_heads: int = 0

    @property
    def parameters(self) -> int:
        return self.attention_parameters + self.ffn_parameters + self.other_parameters


@dataclass
class ModelSummary:
    """What a model holds, module by module and layer by layer.

    Args:
        model_class: The model's class name.
        model_type: Its `config.model_type`.
        state: "dense", "slim", "patched" or "slim, patched".
        modules: Parameters per top-level module in model order (the base model's children and the
            task head's modules), all transformer layers together as "layers"; tied parameters are
            counted once, with the module that comes first.
        layers: One `LayerSummary` per transformer layer of the dense model, dropped ones included.
        seq_len: The sequence length of the FLOPs.
        dense_parameters: For a slim model or one that lost layers, the parameters of the dense
            model it was cut from; else `None`.
        mask_densities: For a patched model, `nn_prune_ext.densities` of its evaluation masks
            at the current thresholds; else `None`.
    """

    model_class: str
    model_type: str
    state: str
    modules: dict[str, int]
    layers: list[LayerSummary]
    seq_len: int
    dense_parameters: int | None = None
    mask_densities: dict[str, float] | None = None

    @property
    def parameters(self) -> int:
        """All parameters of the model (tied ones once)."""
        return sum(self.modules.values())

    @property
    def flops(self) -> int:
        """FLOPs of the transformer layers for one sequence of `seq_len` tokens (`model_flops`)."""
        return sum(layer.flops for layer in self.layers)

    @property
    def dense_flops(self) -> int:
        """The same for the dense model."""
        return sum(layer.dense_flops for layer in self.layers)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable form: the fields, with the totals and each layer's `parameters`."""
        result = dataclasses.asdict(self)
        for row, layer in zip(result["layers"], self.layers):
            row["parameters"] = layer.parameters
        result.update(parameters=self.parameters, flops=self.flops, dense_flops=self.dense_flops)
        return result

    def __str__(self) -> str:
        lines = [f"{self.model_class} ({self.model_type}), {self.state}"]
        total = f"parameters: {self.parameters:,}"
        if self.dense_parameters:
            total += f" (dense {self.dense_parameters:,}: {self.parameters / self.dense_parameters:.1%})"
        lines.append(total)
        width = max((len(name) for name in self.modules), default=0)
        lines += [f"  {name:<{width}}  {count:>14,}" for name, count in self.modules.items()]
        cross = any(layer.dense_cross_heads for layer in self.layers)
        header = ("layer", "heads", "kv heads") + (("cross heads",) if cross else ()) + (
            "FFN width", "attention", "FFN", "other", "FLOPs"
        )
        rows = [
            (
                f"{layer.name or layer.index}{' (dropped)' if layer.dropped else ''}",
                f"{layer.heads}/{layer.dense_heads}",
                f"{layer.kv_heads}/{layer.dense_kv_heads}",
                *((f"{layer.cross_heads}/{layer.dense_cross_heads}",) if cross else ()),
                f"{layer.ffn_width}/{layer.dense_ffn_width}",
                f"{layer.attention_parameters:,}",
                f"{layer.ffn_parameters:,}",
                f"{layer.other_parameters:,}",
                f"{layer.flops:,}",
            )
            for layer in self.layers
        ]
        lines += _aligned([header] + rows)
        flops = f"FLOPs of the transformer layers, one sequence of {self.seq_len} tokens: {self.flops:,}"
        if self.dense_flops != self.flops:
            flops += f" (dense {self.dense_flops:,}: {self.flops / max(self.dense_flops, 1):.1%})"
        lines.append(flops)
        if self.mask_densities is not None:
            lines.append(
                "mask densities (patched, current thresholds): "
                + ", ".join(f"{kind} {value:.1%}" for kind, value in self.mask_densities.items())
            )
        return "\n".join(lines)


def _aligned(rows: list[tuple[str, ...]]) -> list[str]:
    """Right-aligned columns, each as wide as its widest cell (kept heads etc. as `kept/dense`)."""
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    return ["  ".join(cell.rjust(width) for cell, width in zip(row, widths)) for row in rows]


def _parameter_groups(model: nn.Module) -> tuple[dict[str, int], dict[int, dict[str, int]]]:
    """Parameters per top-level module, and per layer (`iter_layers` index) and part ("attention", "ffn", "other")."""
    names = {id(module): name for name, module in model.named_modules(remove_duplicate=False)}
    base_name = names.get(id(getattr(model, "base_model", model)), "")
    owners: dict[int, tuple[int, str]] = {}  # parameter -> (layer, part)
    for layer in get_layout(model).iter_layers(model):
        parts: dict[int, str] = {}
        for part, projections in (("attention", layer.attention_projections), ("ffn", layer.ffn_projections)):
            for projection in projections.values():
                parts.update((id(parameter), part) for parameter in projection.parameters())
        fixed_ffn = layer.fixed_ffn_module()  # an FFN left whole (experts and router) counts as FFN too
        if fixed_ffn is not None:
            parts.update((id(parameter), "ffn") for parameter in fixed_ffn.parameters())
        for parameter in layer.module.parameters():
            owners.setdefault(id(parameter), (layer.index, parts.get(id(parameter), "other")))
    modules: dict[str, int] = {}
    per_layer: dict[int, dict[str, int]] = {}
    for name, parameter in model.named_parameters():  # tied parameters once, under their first name
        if id(parameter) in owners:
            index, part = owners[id(parameter)]
            counts = per_layer.setdefault(index, {"attention": 0, "ffn": 0, "other": 0})
            counts[part] += parameter.numel()
            module = LAYERS
        else:
            inside_base = base_name and name.startswith(base_name + ".")
            module = (name[len(base_name) + 1 :] if inside_base else name).split(".", 1)[0]
        modules[module] = modules.get(module, 0) + parameter.numel()
    return modules, per_layer


def dense_parameter_count(model: nn.Module) -> int | None:
    """Parameters of the dense model a slim model, or one that lost layers, was cut from.

    Args:
        model: A model of a registered architecture.

    Returns:
        The count its config records (`dense_num_parameters`). Slim checkpoints saved before that
        entry existed lack it, and the count is then taken of the dense model built on the meta
        device (shapes only, no memory for weights). `None` for a model that is neither slim nor
        missing layers: it is its own dense model.
    """
    config = model.config
    if not is_slim_config(config):
        return dense_num_parameters(config)
    recorded = slim_spec(config).get("dense_num_parameters")
    if recorded is not None:
        return int(recorded)
    with torch.device("meta"):
        dense = build_model(stock_class(type(model)), dense_config(config))
    return count_parameters(dense)


def summary(model: nn.Module, seq_len: int = 128) -> ModelSummary:
    """Summarize a dense, patched or slim model of a registered architecture.

    Args:
        model: The model.
        seq_len: Sequence length for the FLOPs (of the transformer layers, as `model_flops`).

    Returns:
        A `ModelSummary`; `str()` of it is a table, `to_dict()` a JSON-ready dict.

    Raises:
        InputError: If `model` is not a module, or `seq_len` is not a whole number >= 1 (tokens).
        UnsupportedArchitectureError: For a model without a registered layout (an `InputError`).
    """
    check_model(model, "summary")
    check_whole(seq_len, "summary(seq_len=...) (tokens per sequence for the FLOPs)", 1)
    modules, per_layer = _parameter_groups(model)
    slim, patched = is_slim_config(model.config), is_patched(model)
    # Parameters are counted per position in the model's layer list; rows are per layer of the dense model.
    positions = {dense_index: position for position, dense_index in enumerate(kept_layer_indices(model.config))}
    layout = get_layout(model)
    names = {layer.index: layer.name for layer in layout.iter_layers(model)} if layout.decoder is not None else {}
    layers = []
    for index, (shape, dense) in enumerate(zip(kept_layer_shapes(model), dense_layer_shapes(model))):
        counts = per_layer.get(positions.get(index), {})
        layers.append(
            LayerSummary(
                index=index,
                attention_parameters=counts.get("attention", 0),
                ffn_parameters=counts.get("ffn", 0),
                other_parameters=counts.get("other", 0),
                heads=shape.num_heads,
                kv_heads=shape.num_kv_heads,
                ffn_width=shape.ffn_width,
                dense_heads=dense.num_heads,
                dense_kv_heads=dense.num_kv_heads,
                dense_ffn_width=dense.ffn_width,
                flops=2 * layer_macs(shape, seq_len),
                dense_flops=2 * layer_macs(dense, seq_len),
                dropped=index not in positions,
                name=names.get(index, ""),
                cross_heads=shape.cross_heads,
                dense_cross_heads=dense.cross_heads,
            )
        )
    return ModelSummary(
        model_class=type(model).__name__,
        model_type=model.config.model_type,
        state=", ".join(name for name, flag in (("slim", slim), ("patched", patched)) if flag) or "dense",
        modules=modules,
        layers=layers,
        seq_len=seq_len,
        dense_parameters=dense_parameter_count(model),
        mask_densities=densities(model) if patched else None,
    )
