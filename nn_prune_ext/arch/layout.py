"""`ArchitectureLayout`: where the prunable projections of one family's layers live, resolved on a model.

A layout names, for one family of models, the layer list and the module of every role of a layer
(`query`, `key`, `value`, `output`, `ffn_up`, `ffn_gate`, `ffn_down`). Roles that share a module
path are fused in that module (GPT-2's `c_attn` computes query, key and value); how the module stores
its weight (`nn.Linear` or `Conv1D`) is read from the module itself. `iter_layers` resolves a layout
on a model into `LayerModules`, whose roles are `Projection` views with `(out, in)` weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, NamedTuple

import torch
from torch import nn

from .projections import (
    Projection,
    ProjectionSite,
    SplitProjection,
    UnsupportedProjectionError,
    stock_module,
    storage_of,
)

__all__ = [
    "ArchitectureLayout",
    "LayerModules",
    "ROLES",
    "SlicedProjection",
    "split_projections",
    "join_projections",
    "store_projections",
]

# Every role, in the order of a fused module's rows (GPT-2's [q | k | v], Phi-3's [gate | up]).
ROLES = ("query", "key", "value", "output", "ffn_gate", "ffn_up", "ffn_down")
ATTENTION_ROLES = ("query", "key", "value", "output")
NORM_PLACEMENTS = ("post", "pre", "sandwich")
INPUT_KINDS = ("text", "pixels")
FFN_ROLES = ("ffn_gate", "ffn_up", "ffn_down")


@dataclass(frozen=True)
class LayerModules:
    """The prunable projections of one transformer layer, resolved on a concrete model.

    Args:
        index: Position of the layer in the model's layer list.
        query, key, value, output: The attention projections; query, key and value are `None` in a
            slimmed layer that has no heads left.
        ffn_up: The FFN input projection.
        ffn_down: The FFN output projection.
        ffn_gate: The gate projection of gated FFNs (SwiGLU), `None` otherwise.
        num_heads: Query heads of this layer.
        num_kv_heads: Key/value heads of this layer (equal to `num_heads` without GQA).
        head_dim: Size of one head.
    """

    index: int
    query: Projection | None
    key: Projection | None
    value: Projection | None
    output: Projection
    ffn_up: Projection
    ffn_down: Projection
    ffn_gate: Projection | None
    num_heads: int
    num_kv_heads: int
    head_dim: int

    @property
    def attention_projections(self) -> dict[str, Projection]:
        if self.query is None:
            return {"output": self.output}
        return {"query": self.query, "key": self.key, "value": self.value, "output": self.output}

    @property
    def ffn_projections(self) -> dict[str, Projection]:
        projections = {"ffn_up": self.ffn_up}
        if self.ffn_gate is not None:
            projections["ffn_gate"] = self.ffn_gate
        projections["ffn_down"] = self.ffn_down
        return projections

    @property
    def projections(self) -> dict[str, Projection]:
        return {**self.attention_projections, **self.ffn_projections}


@dataclass(frozen=True)
class ArchitectureLayout:
    """Where the prunable parts of one family of transformer models live.

    Module paths are dotted attribute paths. `layers` is relative to the *base model*
    (`model.base_model`, e.g. `BertModel` inside `BertForSequenceClassification`), the other
    paths are relative to one layer. Roles given the same path are fused in that module.

    Args:
        model_types: The `config.model_type` values this layout serves.
        layers: Path of the `nn.ModuleList` of transformer layers in the base model.
        query, key, value, output: Paths of the attention projections in a layer.
        ffn_up, ffn_down: Paths of the FFN projections in a layer.
        ffn_gate: Path of the gate projection of gated FFNs, or `None`.
        qkv_interleave: How a module computing query, key and value orders its rows: `"blocks"`
            (`[q | k | v]`, GPT-2) or `"heads"` (`[q_h k_h v_h]` per head, GPT-NeoX).
        num_heads_attr: Config attribute holding the number of query heads.
        num_kv_heads_attr: Config attribute holding the number of key/value heads, `None`
            for architectures without grouped-query attention.
        hidden_size_attr: Config attribute holding the model width.
        intermediate_size_attr: Config attribute holding the FFN width.
        head_dim_attr: Config attribute holding an explicit head size; when it is absent or
            `None`, the head size is `hidden_size // num_heads`.
        norm_placement: Where a layer normalises: `"post"` (BERT: LayerNorm after the residual sum),
            `"pre"` (Llama: on the sublayer's input) or `"sandwich"` (Gemma 2, OLMo 2: also on the
            sublayer's output, before it joins the residual stream; the norm must map 0 to 0, as
            RMSNorm does).
        pre_norm_attr: Config attribute that chooses between `"pre"` (true) and `"post"` (false)
            placement per model (OPT's `do_layer_norm_before`); it overrides `norm_placement`.
        residual_scale_attr: Config attribute holding a factor each sublayer's output is multiplied
            by before it joins the residual stream (Granite's `residual_multiplier`).
        ffn_activation_attr: Config attribute naming the FFN activation.
        attention: Path of the module that turns a layer's hidden states into its attention
            output (it returns `(output, weights)`); by default the common parent of q/k/v.
            Slimming replaces it when a layer loses all its heads, and refuses to empty a layer
            of a layout without it.
        attention_attrs: Attributes of that module holding head counts, as pairs of attribute
            name and one of `"heads"`, `"kv_heads"`, `"groups"` (heads per key/value head) or
            `"width"` (heads x head size); slimming updates them per layer.
        attention_reads_config: The attention module reads head counts from its config while it runs
            (Phi-3); a slim layer's attention then gets a view of the config with that layer's sizes.
        input_kind: What the model takes: `"text"` (`input_ids` and `attention_mask`) or `"pixels"`
            (`pixel_values` of `config.num_channels` x `config.image_size` squared).
        fixed_heads: Why heads of this family cannot be removed exactly, or `None` when they can.
            When set, slimming keeps every head (zeroed ones compute zeros), movement pruning
            scores FFN units only, and the ways in that would remove heads refuse with this reason.
    """

    model_types: tuple[str, ...]
    layers: str
    query: str
    key: str
    value: str
    output: str
    ffn_up: str
    ffn_down: str
    ffn_gate: str | None = None
    qkv_interleave: str = "blocks"
    num_heads_attr: str = "num_attention_heads"
    num_kv_heads_attr: str | None = None
    hidden_size_attr: str = "hidden_size"
    intermediate_size_attr: str = "intermediate_size"
    head_dim_attr: str | None = "head_dim"
    norm_placement: str = "post"
    pre_norm_attr: str | None = None
    residual_scale_attr: str | None = None
    ffn_activation_attr: str = "hidden_act"
    attention: str | None = None
    attention_attrs: tuple[tuple[str, str], ...] = ()
    attention_reads_config: bool = False
    input_kind: str = "text"
    fixed_heads: str | None = None

    def __post_init__(self):
        if not self.model_types:
            raise ValueError("ArchitectureLayout needs at least one model_type.")
        if self.norm_placement not in NORM_PLACEMENTS:
            raise ValueError(f"norm_placement must be one of {NORM_PLACEMENTS}, got {self.norm_placement!r}.")
        if self.input_kind not in INPUT_KINDS:
            raise ValueError(f"input_kind must be one of {INPUT_KINDS}, got {self.input_kind!r}.")
        if self.qkv_interleave not in ("blocks", "heads"):
            raise ValueError(f"qkv_interleave must be 'blocks' or 'heads', got {self.qkv_interleave!r}.")
        if self.attention is None:
            parents = {path.rpartition(".")[0] for path in (self.query, self.key, self.value)}
            if len(parents) == 1 and next(iter(parents)):
                object.__setattr__(self, "attention", parents.pop())
        for attribute, kind in self.attention_attrs:
            if kind not in ("heads", "kv_heads", "groups", "width"):
                raise ValueError(
                    f"attention_attrs[{attribute!r}] must be 'heads', 'kv_heads', 'groups' or 'width', got {kind!r}."
                )
        for site in self.sites:
            mixed = set(site.roles) & set(ATTENTION_ROLES) and set(site.roles) & set(FFN_ROLES)
            if mixed or "output" in site.roles and site.fused or "ffn_down" in site.roles and site.fused:
                raise ValueError(
                    f"Roles {list(site.roles)} share the module {site.path!r}; only query/key/value, or gate/up, "
                    "can be fused in one module."
                )

    # ----- the structure ---------------------------------------------------------------------
    def role_path(self, role: str) -> str | None:
        return getattr(self, role)

    @property
    def sites(self) -> tuple[ProjectionSite, ...]:
        """Every projection module of a layer with the roles it computes, in role order."""
        roles_by_path: dict[str, list[str]] = {}
        for role in ROLES:
            path = self.role_path(role)
            if path is not None:
                roles_by_path.setdefault(path, []).append(role)
        return tuple(
            ProjectionSite(path, tuple(roles), self.qkv_interleave if "query" in roles else "blocks")
            for path, roles in roles_by_path.items()
        )

    def slim_spec(self, config, head_dim: int, storages: dict[str, str]) -> dict:
        """The description a slim checkpoint's config carries (`config.nn_prune_slim`).

        It holds the module paths and attribute names the self-contained slim modeling file needs
        to rebuild a model without nn_prune_ext.

        Args:
            config: The model's config.
            head_dim: Size of one head.
            storages: `{site path: "linear" or "conv1d"}` of the model being slimmed.
        """
        return {
            "format_version": 2,
            "layers": self.layers,
            "attention": self.attention,
            **{role: self.role_path(role) for role in ROLES},
            "sites": [{**site.to_dict(), "storage": storages[site.path]} for site in self.sites],
            "attention_attrs": dict(self.attention_attrs),
            "attention_reads_config": self.attention_reads_config,
            "num_heads_attr": self.num_heads_attr,
            "num_kv_heads_attr": self.num_kv_heads_attr,
            "head_dim_attr": self.head_dim_attr or "head_dim",
            "head_dim": head_dim,
            "hidden_size_attr": self.hidden_size_attr,
            "intermediate_size_attr": self.intermediate_size_attr,
        }

    # ----- resolving on a model -------------------------------------------------------
    def layer_list(self, model: nn.Module) -> nn.ModuleList:
        """Return the `nn.ModuleList` of transformer layers of `model` (any head class)."""
        base = getattr(model, "base_model", model)
        for root in (base, model):
            try:
                return get_submodule(root, self.layers)
            except AttributeError:
                continue
        raise AttributeError(
            f"Could not find the layer list {self.layers!r} in {type(model).__name__}; "
            f"the layout for {self.model_types} does not match this model."
        )

    def require_removable_heads(self, action: str) -> None:
        """Raise a `ValueError` saying why `action` cannot remove heads of this family, and what it can do instead."""
        if self.fixed_heads is not None:
            raise ValueError(
                f"{action} would remove attention heads, but heads of {', '.join(self.model_types)} cannot be removed "
                f"exactly: {self.fixed_heads}. Prune FFN units only: keep every head (1 in every head mask), or use "
                "prune_by_importance with target_ffn_width alone, or SparseTrainer (which scores FFN units only here)."
            )

    def norm_placement_for(self, config) -> str:
        """Where the layers of a model with this `config` normalise: `"post"`, `"pre"` or `"sandwich"`."""
        if self.pre_norm_attr is not None:
            return "pre" if getattr(config, self.pre_norm_attr) else "post"
        return self.norm_placement

    def residual_scale(self, config) -> float:
        """The factor sublayer outputs are multiplied by before joining the residual stream (1 by default)."""
        if self.residual_scale_attr is None:
            return 1.0
        return float(getattr(config, self.residual_scale_attr))

    def num_heads(self, config) -> int:
        return int(getattr(config, self.num_heads_attr))

    def num_kv_heads(self, config) -> int:
        if self.num_kv_heads_attr is None:
            return self.num_heads(config)
        value = getattr(config, self.num_kv_heads_attr, None)
        return self.num_heads(config) if value is None else int(value)

    def head_dim(self, config) -> int:
        explicit = getattr(config, self.head_dim_attr, None) if self.head_dim_attr else None
        if explicit is not None:
            return int(explicit)
        return int(getattr(config, self.hidden_size_attr)) // self.num_heads(config)

    def storages(self, model: nn.Module) -> dict[str, str]:
        """`{site path: storage}`, read from the first layer where each module has weights.

        Empty modules do not count: a slim model stores an empty `Conv1D` as an `nn.Linear`.
        """
        found: dict[str, str] = {}
        for layer in self.layer_list(model):
            for site in self.sites:
                try:
                    module = get_submodule(layer, site.path)
                except AttributeError:  # q/k/v of a slim layer without heads
                    continue
                if isinstance(module, SplitProjection):
                    storage = module.storage
                else:
                    storage = storage_of(module, site.path)
                if site.path not in found or (found[site.path] == "linear" and module.weight.numel()):
                    found[site.path] = storage
        return found

    def iter_layers(self, model: nn.Module) -> Iterator[LayerModules]:
        """Yield the resolved projections of every layer of `model`.

        Head counts are read from the projection shapes, so a model whose layers were slimmed
        to different widths is described correctly.
        """
        head_dim = self.head_dim(model.config)
        for index, layer in enumerate(self.layer_list(model)):
            yield self._resolve(index, layer, head_dim)

    def _resolve(self, index: int, layer: nn.Module, head_dim: int) -> LayerModules:
        sites = {role: site for site in self.sites for role in site.roles}
        projections: dict[str, Projection] = {}

        def resolve(role: str, known: dict[str, int]) -> Projection:
            site = sites[role]
            module = get_submodule(layer, site.path)
            where = f"layer {index} {site.path}"
            if isinstance(module, SplitProjection):  # patched: one nn.Linear per role
                part = getattr(module, role)
                single = ProjectionSite(f"{site.path}.{role}", (role,))
                return Projection(part, single.path, role, single, [part.out_features], head_dim)
            storage = storage_of(module, where)
            rows = int((module.weight if storage == "linear" else module.weight.t()).shape[0])
            multiple = head_dim if "query" in site.roles else 1
            sizes = _fused_sizes(site, rows, known, where, multiple) if site.fused else [rows]
            return Projection(module, site.path, role, site, sizes, head_dim)

        for role in ("output", "ffn_down"):
            projections[role] = resolve(role, {})
        attention_width = projections["output"].in_features
        width = projections["ffn_down"].in_features
        if attention_width % head_dim:
            raise UnsupportedProjectionError(
                f"Layer {index}: the output projection takes {attention_width} inputs, not a multiple of the head "
                f"size {head_dim}; the layout's head_dim_attr or num_heads_attr does not match this model."
            )
        known = {"query": attention_width, "ffn_gate": width, "ffn_up": width}
        roles = ["ffn_up", "ffn_gate"] + (["query", "key", "value"] if attention_width else [])
        for role in roles:
            if self.role_path(role) is not None:
                projections[role] = resolve(role, known)
        key = projections.get("key")
        return LayerModules(
            index=index,
            query=projections.get("query"),
            key=key,
            value=projections.get("value"),
            output=projections["output"],
            ffn_up=projections["ffn_up"],
            ffn_down=projections["ffn_down"],
            ffn_gate=projections.get("ffn_gate"),
            num_heads=attention_width // head_dim,
            num_kv_heads=key.out_features // head_dim if key is not None else 0,
            head_dim=head_dim,
        )


def _fused_sizes(site: ProjectionSite, total: int, known: dict[str, int], where: str, multiple: int) -> list[int]:
    """Rows of every role of a fused site: known roles take their size, the others share the rest.

    Every size must be a multiple of `multiple` (the head size, for attention roles).
    """
    unknown = [role for role in site.roles if role not in known]
    rest = total - sum(known[role] for role in site.roles if role in known)
    share = rest // len(unknown) if unknown else 0
    sizes = [known[role] if role in known else share for role in site.roles]
    if rest < 0 or sum(sizes) != total or any(size % multiple for size in sizes):
        expected = ", ".join(f"{role}={known[role]}" for role in site.roles if role in known)
        raise UnsupportedProjectionError(
            f"{where} computes {list(site.roles)} in {total} output rows, which does not fit {expected} rows "
            f"and equal shares{f' of whole heads ({multiple} rows each)' if multiple > 1 else ''} for the others: "
            "expected a fused projection of matching shape; the layout does not match this model."
        )
    return sizes


def get_submodule(root: nn.Module, path: str) -> nn.Module:
    """The module at a dotted attribute path (raises `AttributeError` when it is missing)."""
    module = root
    for part in path.split("."):
        module = getattr(module, part)
    return module


def _set_submodule(root: nn.Module, path: str, module: nn.Module) -> None:
    parent_path, _, name = path.rpartition(".")
    parent = get_submodule(root, parent_path) if parent_path else root
    setattr(parent, name, module)


def split_projections(model: nn.Module, layout: ArchitectureLayout) -> bool:
    """Replace every fused or transposed projection of `model` by a `SplitProjection`, in place.

    Afterwards every role is a plain `nn.Linear` of its own, which movement pruning masks. The model
    computes the same outputs and keeps the stock state dict.

    Returns:
        Whether anything was replaced.
    """
    head_dim = layout.head_dim(model.config)
    changed = False
    for layer_modules, layer in zip(list(layout.iter_layers(model)), layout.layer_list(model)):
        projections = layer_modules.projections
        for site in layout.sites:
            present = [projections[role] for role in site.roles if role in projections]
            if not present or isinstance(present[0].module, SplitProjection):
                continue
            if not site.fused and present[0].storage == "linear":
                continue
            split = SplitProjection.from_stock(
                present[0].module, site, present[0].sizes, head_dim, f"layer {layer_modules.index} {site.path}"
            )
            _set_submodule(layer, site.path, split)
            changed = True
    return changed


def join_projections(model: nn.Module) -> bool:
    """Put the stock module back in place of every `SplitProjection` of `model` (baked parts only).

    Returns:
        Whether anything was replaced.
    """
    splits = [(name, module) for name, module in model.named_modules() if isinstance(module, SplitProjection)]
    for name, split in splits:
        _set_submodule(model, name, split.to_stock())
    return bool(splits)


class SlicedProjection(NamedTuple):
    """The new `(out, in)` weight and bias of one role, and whether each requires gradients."""

    weight: torch.Tensor
    bias: torch.Tensor | None
    requires_grad: tuple[bool, bool]


def store_projections(
    layer: nn.Module,
    layout: ArchitectureLayout,
    storages: dict[str, str],
    projections: dict[str, SlicedProjection],
    head_dim: int,
) -> None:
    """Install stock modules holding the given roles' weights in `layer` (fused and transposed as stored).

    Args:
        layer: One layer of the model.
        layout: The model's layout.
        storages: `{site path: storage}` (`ArchitectureLayout.storages`).
        projections: The new weights of the roles that remain (query, key and value are absent in a
            layer without heads, whose attention module no longer holds them).
        head_dim: Rows per head.
    """
    for site in layout.sites:
        present = [projections[role] for role in site.roles if role in projections]
        if not present:
            continue
        if len(present) != len(site.roles):
            missing = [role for role in site.roles if role not in projections]
            raise ValueError(f"{site.path} computes {list(site.roles)}, but no weights were given for {missing}.")
        module = stock_module(
            storages[site.path],
            [part.weight for part in present],
            [part.bias for part in present],
            site.interleave,
            head_dim,
            present[0].requires_grad,
        )
        _set_submodule(layer, site.path, module)
