"""A layout for an unregistered decoder, derived from its config's tensor-parallel plan and then checked.

transformers' `base_model_tp_plan` already says which projections are cut column-wise (their output
rows split: query, key, value, gate, up) and which row-wise (their input columns split: the attention
output and the FFN down projection), which is exactly where heads and FFN units are cut and removed.
`derive_layout` reads a plan of the common shape (one layer list; an attention module with three
column-wise and one row-wise projection; an FFN with one or two column-wise and one row-wise), and
`verified_layout` accepts it only after slimming a tiny copy of the model (random weights, fewer
heads, a layer without heads, a layer without FFN units) gave exactly the masked model's outputs.
Anything else is refused with the error that names the supported types and `register_layout`.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import replace
from typing import Any

import torch
from torch import nn

from ..validation import InputError
from .layout import ArchitectureLayout, get_submodule

__all__ = ["derive_layout", "verified_layout", "FallbackError"]

logger = logging.getLogger(__name__)

COLWISE = ("colwise", "colwise_gather_output")
# Config attributes holding the number of experts of a mixture-of-experts FFN.
EXPERT_COUNT_ATTRS = ("num_local_experts", "num_experts", "n_routed_experts", "moe_num_experts")
ROWWISE = ("rowwise", "rowwise_split_input")
# Attributes of an attention module that may hold a head count, and the kind each value means.
HEAD_COUNT_KINDS = ("heads", "kv_heads", "groups")
# The tiny copy: 6 query heads of 8 over 2 key/value heads, so heads, key/value heads and
# groups (6, 2, 3) and the width (48) are told apart by value.
TINY = dict(heads=6, kv_heads=2, head_dim=8, intermediate=32, layers=2, vocab=64)


class FallbackError(InputError):
    """The tensor-parallel plan does not describe a layout nn_prune_ext can derive, or the derived one failed its check."""


def derive_layout(config: Any) -> ArchitectureLayout:
    """A layout read from `config.base_model_tp_plan` (not yet checked: see `verified_layout`).

    Raises:
        FallbackError: If the config has no plan, or the plan has another shape (fused projections,
            experts, several layer lists).
    """
    plan = getattr(config, "base_model_tp_plan", None) or {}
    # Since transformers 5.25 expert FFNs are left out of the tensor-parallel plan (an expert-parallel
    # plan covers them), so the config's expert count is checked as well as the plan.
    experts = [name for name in EXPERT_COUNT_ATTRS if isinstance(getattr(config, name, None), int) and getattr(config, name) > 1]
    if experts or getattr(config, "base_model_ep_plan", None):
        raise FallbackError("its layers hold mixture-of-experts FFNs, which the derived layouts do not cover")
    if not plan:
        raise FallbackError("its config has no base_model_tp_plan to derive a layout from")
    layers, groups = None, {}
    for pattern, style in plan.items():
        if ".*." not in pattern:
            continue  # embeddings, final norm
        prefix, _, inner = pattern.partition(".*.")
        if "experts" in inner:
            raise FallbackError("its layers hold mixture-of-experts FFNs, which the derived layouts do not cover")
        if style not in COLWISE + ROWWISE:
            continue  # norms and the like, replicated
        if layers not in (None, prefix):
            raise FallbackError(f"its plan names two layer lists ({layers!r}, {prefix!r})")
        layers = prefix
        parent, _, _ = inner.rpartition(".")
        kind = "col" if style in COLWISE else "row"
        groups.setdefault(parent, {"col": [], "row": []})[kind].append(inner)
    attention = [parent for parent, paths in groups.items() if len(paths["col"]) == 3 and len(paths["row"]) == 1]
    ffn = [parent for parent, paths in groups.items() if len(paths["col"]) in (1, 2) and len(paths["row"]) == 1]
    if layers is None or len(attention) != 1 or len(ffn) != 1 or len(groups) != 2:
        raise FallbackError(
            "its plan is not one attention module with separate query, key and value projections and one FFN "
            f"(found {({parent: {k: len(v) for k, v in paths.items()} for parent, paths in groups.items()})})"
        )
    query, key, value = groups[attention[0]]["col"]
    ffn_inputs = groups[ffn[0]]["col"]
    return ArchitectureLayout(
        model_types=(config.model_type,),
        layers=layers,
        query=query,
        key=key,
        value=value,
        output=groups[attention[0]]["row"][0],
        ffn_gate=ffn_inputs[0] if len(ffn_inputs) == 2 else None,
        ffn_up=ffn_inputs[-1],
        ffn_down=groups[ffn[0]]["row"][0],
        num_kv_heads_attr="num_key_value_heads" if hasattr(config, "num_key_value_heads") else None,
        norm_placement="pre",
        attention=attention[0],
    )


def _tiny_config(config: Any, layout: ArchitectureLayout) -> Any:
    tiny = copy.deepcopy(config)
    sizes = {
        layout.hidden_size_attr: TINY["heads"] * TINY["head_dim"],
        layout.num_heads_attr: TINY["heads"],
        layout.intermediate_size_attr: TINY["intermediate"],
        "num_hidden_layers": TINY["layers"],
        "vocab_size": TINY["vocab"],
    }
    if layout.num_kv_heads_attr:
        sizes[layout.num_kv_heads_attr] = TINY["kv_heads"]
    if layout.head_dim_attr and getattr(config, layout.head_dim_attr, None) is not None:
        sizes[layout.head_dim_attr] = TINY["head_dim"]
    for name, value in sizes.items():
        setattr(tiny, name, value)
    layer_types = getattr(tiny, "layer_types", None)
    if isinstance(layer_types, (list, tuple)):
        tiny.layer_types = list(layer_types[: TINY["layers"]])
    for name in ("pad_token_id", "bos_token_id", "eos_token_id"):
        if isinstance(getattr(tiny, name, None), int) and getattr(tiny, name) >= TINY["vocab"]:
            setattr(tiny, name, 0)
    return tiny


def _with_head_counts(layout: ArchitectureLayout, attention: nn.Module) -> ArchitectureLayout:
    """The layout with the attention module's head-count attributes, found by their values on the tiny copy."""
    kv_heads = TINY["kv_heads"] if layout.num_kv_heads_attr else TINY["heads"]
    values = {TINY["heads"]: "heads", kv_heads: "kv_heads", TINY["heads"] // kv_heads: "groups"}
    found = []
    for name, value in vars(attention).items():
        if name.startswith("_") or isinstance(value, bool) or not isinstance(value, int):
            continue
        if ("head" in name or "group" in name) and name != "head_dim" and value in values:
            found.append((name, values[value]))
    return replace(layout, attention_attrs=tuple(sorted(found)))


def verified_layout(model: nn.Module) -> ArchitectureLayout:
    """The derived layout of `model`'s type, accepted only if it slims a tiny copy of the model exactly.

    The tiny copy has the model's class and config with small sizes and random weights. Masks keep
    two heads of the second key/value group in the first layer (the first group goes, so the layer
    loses query and key/value heads), none in the second, and some FFN units (none in the first
    layer); `prune_with_masks` then slims it, and its own check (the slim against the masked model,
    layer by layer) must pass.
    The check runs under its own random state: the caller's is left as it was.

    Args:
        model: A model of an unregistered type whose config has a `base_model_tp_plan`.

    Returns:
        The derived layout, with the attention module's head-count attributes.

    Raises:
        FallbackError: If no layout can be derived, or the derived one does not slim the tiny copy exactly.
        MemoryError, OSError: Out of memory or another failure of the machine, not of the layout (not
            turned into a refusal, which `get_layout` would keep for the rest of the process).
    """
    # Imported here: slimming builds on the architecture package.
    from ..masks import StructureMasks
    from ..slim import prune_with_masks
    from ..transformers_internals import build_model

    config = model.config
    layout = derive_layout(config)
    try:
        # Seeded for a reproducible check, in a forked random state so the caller's is untouched.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            tiny = build_model(type(model), _tiny_config(config, layout)).eval()
            attention = get_submodule(layout.layer_list(tiny)[0], layout.attention)
            layout = _with_head_counts(layout, attention)
            group = TINY["heads"] // (TINY["kv_heads"] if layout.num_kv_heads_attr else TINY["heads"])
            # Layer 0: two heads of the second key/value group (heads 1 and 2 without grouped-query
            # attention), so the query and key/value head counts change: heads kept in every group
            # would be filled up to all heads again, leaving per-head state (q/k norms with a weight
            # per head) unchecked. Layer 1: no heads; every other FFN unit.
            heads = [[group, group + 1], []]
            units = [[], list(range(0, TINY["intermediate"], 2))]
            with _registered(layout):
                masks = StructureMasks.from_kept(tiny, heads=heads, units=units)
                prune_with_masks(tiny, masks)
    except (FallbackError, MemoryError, OSError):
        raise
    except Exception as error:
        raise FallbackError(
            f"the layout derived from its base_model_tp_plan did not slim a tiny copy exactly ({type(error).__name__}: "
            f"{error})"
        ) from error
    logger.info("nn_prune_ext: derived the layout of %r from base_model_tp_plan and checked it", config.model_type)
    return layout


class _registered:
    """Register a layout while the context is open (the tiny copy's slimming looks it up)."""

    def __init__(self, layout: ArchitectureLayout):
        self.layout = layout

    def __enter__(self):
        from .registry import _REGISTRY

        self.previous = {t: _REGISTRY.get(t) for t in self.layout.model_types}
        _REGISTRY.update({t: self.layout for t in self.layout.model_types})

    def __exit__(self, *exc_info):
        from .registry import _REGISTRY

        for model_type, previous in self.previous.items():
            if previous is None:
                _REGISTRY.pop(model_type, None)
            else:
                _REGISTRY[model_type] = previous
