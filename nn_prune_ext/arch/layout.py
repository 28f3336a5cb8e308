"""`ArchitectureLayout`: where the prunable projections of one family's layers live, resolved on a model.

A layout names, for one family of models, the layer list and the module of every role of a layer
(`query`, `key`, `value`, `output`, `ffn_up`, `ffn_gate`, `ffn_down`, and `cross_query` ...
`cross_output` for a decoder layer's cross-attention). Roles that share a module path are fused in
that module (GPT-2's `c_attn` computes query, key and value); how the module stores its weight
(`nn.Linear` or `Conv1D`) is read from the module itself.

A model is one or more *stacks* of layers: one for encoders and decoders, two for encoder-decoders
(the layout's own layers are the encoder, `decoder` describes the decoder's). A layer has one or two
*attention blocks* (self-attention; cross-attention in an encoder-decoder's decoder) and an FFN.
`iter_layers` resolves a layout on a model into `LayerModules`, stack after stack, whose roles are
`Projection` views with `(out, in)` weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, NamedTuple

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
from ..validation import InputError

__all__ = [
    "ArchitectureLayout",
    "LayoutMismatchError",
    "AttentionBlock",
    "LayerModules",
    "ROLES",
    "SlicedProjection",
    "split_projections",
    "join_projections",
    "store_projections",
]


class LayoutMismatchError(InputError, AttributeError):
    """The model's modules are not where its layout says (e.g. a custom model behind a stock `model_type`).

    An `InputError` for the user; also an `AttributeError`, which the code probing for a layer list catches.
    """


# Every role, in the order of a fused module's rows (GPT-2's [q | k | v], Phi-3's [gate | up]).
ROLES = (
    "query", "key", "value", "output",
    "cross_query", "cross_key", "cross_value", "cross_output",
    "ffn_gate", "ffn_up", "ffn_down",
)
# The roles of each kind of attention block; cross-attention roles are the self-attention ones prefixed.
BLOCK_ROLES = {
    "self": ("query", "key", "value", "output"),
    "cross": ("cross_query", "cross_key", "cross_value", "cross_output"),
}
ATTENTION_ROLES = BLOCK_ROLES["self"] + BLOCK_ROLES["cross"]
NORM_PLACEMENTS = ("post", "pre", "sandwich")
INPUT_KINDS = ("text", "pixels", "seq2seq")
FFN_ROLES = ("ffn_gate", "ffn_up", "ffn_down")


@dataclass(frozen=True)
class AttentionBlock:
    """One attention block of a layer (self- or cross-attention), resolved on a concrete model.

    Its projections are named by their self-attention role (`query`, ..., `output`) whatever the
    block; `role(name)` gives the layer-wide role name (`cross_query` in a cross-attention block).

    Args:
        kind: `"self"` or `"cross"`.
        index: Position of the layer in `iter_layers` (over all stacks).
        query, key, value: Projections; `None` in a slimmed block without heads.
        output: The output projection.
        num_heads: Query heads.
        num_kv_heads: Key/value heads (equal to `num_heads` without GQA).
        head_dim: Size of one head.
    """

    kind: str
    index: int
    query: Projection | None
    key: Projection | None
    value: Projection | None
    output: Projection
    num_heads: int
    num_kv_heads: int
    head_dim: int

    def role(self, name: str) -> str:
        """The layer-wide role of this block's projection `name` (`"query"` -> `"cross_query"` in cross-attention)."""
        return name if self.kind == "self" else f"cross_{name}"

    @property
    def attention_projections(self) -> dict[str, Projection]:
        """`{self-attention role name: projection}` of this block."""
        if self.query is None:
            return {"output": self.output}
        return {"query": self.query, "key": self.key, "value": self.value, "output": self.output}


@dataclass(frozen=True)
class LayerModules:
    """The prunable projections of one transformer layer, resolved on a concrete model.

    Args:
        index: Position of the layer in `iter_layers` (stack after stack; the position in the model's
            layer list for single-stack models).
        query, key, value, output: The attention projections; query, key and value are `None` in a
            slimmed layer that has no heads left.
        ffn_up: The FFN input projection (`None` for an FFN that is not pruned, see `fixed_ffn`).
        ffn_down: The FFN output projection (`None` likewise).
        ffn_gate: The gate projection of gated FFNs (SwiGLU), `None` otherwise.
        num_heads: Query heads of this layer.
        num_kv_heads: Key/value heads of this layer (equal to `num_heads` without GQA).
        head_dim: Size of one head.
        cross: The cross-attention block of an encoder-decoder's decoder layer, `None` elsewhere.
        stack: Name of the stack holding the layer (`""` for single-stack models, else `"encoder"`
            or `"decoder"`).
        position: Position of the layer in its stack's layer list.
        module: The layer module itself.
        layout: The layout of the layer's stack (for an encoder-decoder's decoder, the `decoder` layout).
    """

    index: int
    query: Projection | None
    key: Projection | None
    value: Projection | None
    output: Projection
    ffn_up: Projection | None
    ffn_down: Projection | None
    ffn_gate: Projection | None
    num_heads: int
    num_kv_heads: int
    head_dim: int
    cross: AttentionBlock | None = None
    stack: str = ""
    position: int = 0
    module: nn.Module | None = None
    layout: "ArchitectureLayout | None" = None

    @property
    def name(self) -> str:
        """How messages name this layer: `"layer 3"`, or `"decoder layer 3"` in an encoder-decoder."""
        return f"{self.stack} layer {self.position}".strip() if self.stack else f"layer {self.index}"

    @property
    def self_attention(self) -> AttentionBlock:
        return AttentionBlock(
            "self", self.index, self.query, self.key, self.value, self.output,
            self.num_heads, self.num_kv_heads, self.head_dim,
        )

    @property
    def attention_blocks(self) -> tuple[AttentionBlock, ...]:
        """The self-attention block, then the cross-attention block where the layer has one."""
        return (self.self_attention,) if self.cross is None else (self.self_attention, self.cross)

    @property
    def attention_projections(self) -> dict[str, Projection]:
        """`{role: projection}` of every attention block (cross-attention roles prefixed `cross_`)."""
        return {block.role(name): p for block in self.attention_blocks for name, p in block.attention_projections.items()}

    @property
    def ffn_width(self) -> int:
        """Prunable FFN units of this layer (0 for an FFN the layout leaves whole, see `fixed_ffn`)."""
        return self.ffn_down.in_features if self.ffn_down is not None else 0

    def fixed_ffn_module(self) -> nn.Module | None:
        """The whole FFN module of a layout whose FFN is not pruned (`ArchitectureLayout.ffn`), else `None`."""
        if self.layout is None or self.layout.fixed_ffn is None:
            return None
        return get_submodule(self.module, self.layout.ffn)

    def fixed_ffn_macs(self, config) -> int:
        """Multiply-accumulates per token of the FFN the layout leaves whole (0 for a prunable FFN).

        Every matrix counts once, except the experts' (`ArchitectureLayout.experts`), which count in the
        share of them a token is routed to (`experts_per_token_attr` of the experts, the first dimension).
        """
        module = self.fixed_ffn_module()
        if module is None:
            return 0
        experts = get_submodule(self.module, self.layout.experts) if self.layout.experts else None
        expert_parameters = {id(p) for p in experts.parameters()} if experts is not None else set()
        routed = int(getattr(config, self.layout.experts_per_token_attr, 1)) if experts is not None else 1
        macs = 0
        for parameter in module.parameters():
            if parameter.dim() < 2:  # biases and norm weights: no multiply-accumulates
                continue
            share = routed / parameter.shape[0] if id(parameter) in expert_parameters else 1
            macs += round(parameter.numel() * share)
        return macs

    @property
    def ffn_projections(self) -> dict[str, Projection]:
        if self.ffn_down is None:
            return {}
        projections = {"ffn_up": self.ffn_up}
        if self.ffn_gate is not None:
            projections["ffn_gate"] = self.ffn_gate
        projections["ffn_down"] = self.ffn_down
        return projections

    def position_bias_embedding(self) -> nn.Embedding | None:
        """The per-head position-bias embedding this layer's self-attention holds (`position_bias`), if any."""
        if self.layout is None or self.layout.position_bias is None or self.layout.attention is None:
            return None
        try:
            attention = get_submodule(self.module, self.layout.attention)
            return get_submodule(attention, self.layout.position_bias[0])
        except AttributeError:
            return None

    def head_row_modules(self) -> dict[str, nn.Linear]:
        """`{path: module}` of the layout's `head_rows` modules present in this layer."""
        found = {}
        for path in self.layout.head_rows if self.layout is not None else ():
            try:
                found[path] = get_submodule(self.module, path)
            except AttributeError:
                continue
        return found

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
        ffn_up, ffn_down: Paths of the FFN projections in a layer; `None` for an FFN that is not pruned
            (`fixed_ffn`).
        ffn_gate: Path of the gate projection of gated FFNs, or `None`.
        qkv_interleave: How a module computing query, key and value orders its rows: `"blocks"`
            (`[q | k | v]`, GPT-2) or `"heads"` (per key/value group: `[q_h k_h v_h]` per head in
            GPT-NeoX, `[q_1 .. q_r k v]` per group in Falcon's new decoder architecture).
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
        ffn_activation: The activation's name in transformers' `ACT2FN`, for a family whose FFN
            activation is fixed rather than configured (Bloom's tanh-approximated GELU).
        attention: Path of the module that turns a layer's hidden states into its attention
            output (it returns `(output, weights)`); by default the common parent of q/k/v.
            Slimming replaces it when a layer loses all its heads, and refuses to empty a layer
            of a layout without it.
        attention_attrs: Attributes of that module holding head counts, as pairs of attribute
            name and one of `"heads"`, `"kv_heads"`, `"groups"` (heads per key/value head) or
            `"width"` (heads x head size); slimming updates them per layer.
        attention_reads_config: The attention module reads head counts from its config while it runs
            (Phi-3); a slim layer's attention then gets a view of the config with that layer's sizes.
        input_kind: What the model takes: `"text"` (`input_ids` and `attention_mask`), `"pixels"`
            (`pixel_values` of `config.num_channels` x `config.image_size` squared) or `"seq2seq"`
            (an encoder-decoder's `input_ids` and `decoder_input_ids`; the default with a `decoder`).
        fixed_heads: Why heads of this family cannot be removed exactly, or `None` when they can.
            When set, slimming keeps every head (zeroed ones compute zeros), movement pruning
            scores FFN units only, and the ways in that would remove heads refuse with this reason.
        cross_query, cross_key, cross_value, cross_output: Paths of the cross-attention projections
            of a decoder layer in an encoder-decoder (keys and values read the encoder's output).
        cross_attention: Path of the cross-attention module (by default the common parent of its
            q/k/v); slimming replaces it when the layer loses all its cross-attention heads. Its head
            counts are kept in the attributes `attention_attrs` names.
        head_rows: Paths of further `nn.Linear` modules of a layer whose output rows hold one block of
            `head_dim` rows per query head of the self-attention (DeBERTa's `pos_key_proj` and
            `pos_query_proj`, which project the shared relative position embeddings per head): slimming
            keeps the rows of the kept heads. A path missing from a model (a config option off) is skipped.
        head_arguments: Arguments of the attention module (its `forward`'s parameter names) that carry
            one entry per head of the dense model along dimension 1 (`[batch, heads, query, key]`),
            computed once for all layers (MPNet's `position_bias`): a slim layer's attention takes the
            entries of the heads it kept.
        head_argument_form: How those arguments hold their heads: `"batch_heads"` (dimension 1 of
            `[batch, heads, ...]`) or `"flat"` (dimension 0 of `[batch * heads, ...]`, Bloom's ALiBi bias).
        attention_residual: The argument of the attention module's `forward` that it adds to its own
            output (Bloom's attention returns `dense(context) + residual`): the stand-in of a layer without
            heads adds it too.
        position_bias: For attention modules that compute a per-head position bias from an
            `nn.Embedding` only the first layer of a stack holds and then pass it on to the later layers
            (T5's relative attention bias), the triple `(embedding path relative to the attention module,
            attribute flagging the module that computes it, argument passing it in)`. Slimming gives every
            layer's self-attention its own copy of its kept heads' columns and the flag, and the slim
            attention modules (self and cross) compute the bias for their own heads instead of taking the
            one passed in.
        attention_outputs: What the attention module returns, in order (`"output"`, `"weights"`, and
            any other entry, which a layer without heads returns as `None`; T5's attention returns
            `("output", "position_bias", "weights")`).
        when: `(config attribute, value)`: this layout serves the models of its types whose config has
            that value (T5 v1.1's gated FFN: `("is_gated_act", True)`); a layout without `when`
            serves the others.
        num_layers_attr: Config attribute holding the number of layers of this stack.
        fixed_ffn: Why the FFN units of this family are not pruned (a mixture of experts whose experts
            are stored together), or `None` when they are. When set, the layout names no FFN
            projections but the whole FFN module (`ffn`): slimming leaves it as it is, movement pruning
            scores attention only, and the ways in that would remove FFN units refuse with this reason.
        ffn: Path of the whole FFN module in a layer (required with `fixed_ffn`).
        experts: Path, relative to the layer, of the module whose parameters hold one slice per expert
            along their first dimension (a mixture of experts); FLOPs count the share of them a token
            uses (`experts_per_token_attr` of the experts).
        experts_per_token_attr: Config attribute holding the number of experts each token is routed to.
        decoder: For an encoder-decoder, the layout of the decoder's layers (its `layers` path is
            relative to the base model too); this layout's own layers are then the encoder's.
            Model-wide fields (`model_types`, `input_kind`, `fixed_heads`) are read from the outer layout.
    """

    model_types: tuple[str, ...]
    layers: str
    query: str
    key: str
    value: str
    output: str
    ffn_up: str | None = None
    ffn_down: str | None = None
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
    ffn_activation: str | None = None
    attention: str | None = None
    attention_attrs: tuple[tuple[str, str], ...] = ()
    attention_reads_config: bool = False
    input_kind: str = "text"
    fixed_heads: str | None = None
    cross_query: str | None = None
    cross_key: str | None = None
    cross_value: str | None = None
    cross_output: str | None = None
    cross_attention: str | None = None
    head_rows: tuple[str, ...] = ()
    head_arguments: tuple[str, ...] = ()
    head_argument_form: str = "batch_heads"
    attention_residual: str | None = None
    position_bias: tuple[str, str, str] | None = None
    attention_outputs: tuple[str, ...] = ("output", "weights")
    when: tuple[str, Any] | None = None
    num_layers_attr: str = "num_hidden_layers"
    fixed_ffn: str | None = None
    ffn: str | None = None
    experts: str | None = None
    experts_per_token_attr: str = "num_experts_per_tok"
    decoder: "ArchitectureLayout | None" = None

    def __post_init__(self):
        if not self.model_types:
            raise InputError("ArchitectureLayout needs at least one model_type.")
        if self.norm_placement not in NORM_PLACEMENTS:
            raise InputError(f"norm_placement must be one of {NORM_PLACEMENTS}, got {self.norm_placement!r}.")
        if self.input_kind not in INPUT_KINDS:
            raise InputError(f"input_kind must be one of {INPUT_KINDS}, got {self.input_kind!r}.")
        if self.head_argument_form not in ("batch_heads", "flat"):
            raise InputError(f"head_argument_form must be 'batch_heads' or 'flat', got {self.head_argument_form!r}.")
        if self.qkv_interleave not in ("blocks", "heads"):
            raise InputError(f"qkv_interleave must be 'blocks' or 'heads', got {self.qkv_interleave!r}.")
        if self.attention is None:
            object.__setattr__(self, "attention", _common_parent((self.query, self.key, self.value)))
        ffn_paths = {"ffn_up": self.ffn_up, "ffn_down": self.ffn_down, "ffn_gate": self.ffn_gate}
        if self.fixed_ffn is None and (self.ffn_up is None or self.ffn_down is None):
            raise InputError(
                "ArchitectureLayout needs ffn_up and ffn_down (the FFN projections), or fixed_ffn (why the FFN is not "
                "pruned) with ffn (the path of the whole FFN module)."
            )
        if self.fixed_ffn is not None and (self.ffn is None or any(ffn_paths.values())):
            raise InputError(
                "A layout with fixed_ffn leaves the FFN whole: give ffn (the path of the FFN module) and no FFN "
                f"projections; got ffn={self.ffn!r} and {ffn_paths}."
            )
        cross = [self.cross_query, self.cross_key, self.cross_value, self.cross_output]
        if any(cross) and not all(cross):
            raise InputError(
                "A cross-attention block needs all of cross_query, cross_key, cross_value and cross_output; "
                f"got {dict(zip(BLOCK_ROLES['cross'], cross))}."
            )
        if self.cross_attention is None and self.cross_query is not None:
            object.__setattr__(
                self, "cross_attention", _common_parent((self.cross_query, self.cross_key, self.cross_value))
            )
        if self.decoder is not None and self.input_kind == "text":
            object.__setattr__(self, "input_kind", "seq2seq")
        if self.decoder is not None and self.decoder.decoder is not None:
            raise InputError("A decoder layout cannot have a decoder of its own: a model has at most two stacks.")
        for attribute, kind in self.attention_attrs:
            if kind not in ("heads", "kv_heads", "groups", "width"):
                raise InputError(
                    f"attention_attrs[{attribute!r}] must be 'heads', 'kv_heads', 'groups' or 'width', got {kind!r}."
                )
        for site in self.sites:
            fusable = [set(BLOCK_ROLES[kind][:3]) for kind in BLOCK_ROLES] + [{"ffn_gate", "ffn_up"}]
            if site.fused and not any(set(site.roles) <= roles for roles in fusable):
                raise InputError(
                    f"Roles {list(site.roles)} share the module {site.path!r}; only query/key/value (of one "
                    "attention block), or gate/up, can be fused in one module."
                )

    # ----- the structure ---------------------------------------------------------------------
    def role_path(self, role: str) -> str | None:
        return getattr(self, role)

    @property
    def stacks(self) -> tuple[tuple[str, "ArchitectureLayout"], ...]:
        """`(name, layout)` of every stack: `(("", self),)`, or encoder and decoder for an encoder-decoder."""
        if self.decoder is None:
            return (("", self),)
        return (("encoder", self), ("decoder", self.decoder))

    @property
    def block_kinds(self) -> tuple[str, ...]:
        """The attention blocks of this stack's layers: `("self",)` or `("self", "cross")`."""
        return ("self",) if self.cross_query is None else ("self", "cross")

    def attention_path(self, kind: str) -> str | None:
        """Path of the module of attention block `kind` (`"self"` or `"cross"`) in a layer."""
        return self.attention if kind == "self" else self.cross_attention

    @property
    def sites(self) -> tuple[ProjectionSite, ...]:
        """Every projection module of a layer with the roles it computes, in role order."""
        roles_by_path: dict[str, list[str]] = {}
        for role in ROLES:
            path = self.role_path(role)
            if path is not None:
                roles_by_path.setdefault(path, []).append(role)
        return tuple(
            ProjectionSite(
                path, tuple(roles), self.qkv_interleave if {"query", "cross_query"} & set(roles) else "blocks"
            )
            for path, roles in roles_by_path.items()
        )

    def slim_spec(self, model: nn.Module) -> dict:
        """The description a slim checkpoint's config carries (`config.nn_prune_slim`).

        It holds the module paths and attribute names the self-contained slim modeling file needs
        to rebuild a model without nn_prune_ext: for a single stack, format 2 (the stack's entries at
        the top level); for an encoder-decoder, format 3 (`stacks`, one entry per stack, which the
        slimming fills with every layer's sizes under `shapes`).

        Args:
            model: The model being slimmed.
        """
        stacks = [{"name": name, **stack._stack_spec(model)} for name, stack in self.stacks]
        if len(stacks) == 1:
            del stacks[0]["name"]
            return {"format_version": 2, **stacks[0]}
        return {"format_version": 3, "stacks": stacks}

    def _stack_spec(self, model: nn.Module) -> dict:
        config = model.config
        storages = self.storages(model)
        return {
            "layers": self.layers,
            "attention": self.attention,
            "cross_attention": self.cross_attention,
            **{role: self.role_path(role) for role in ROLES},
            "sites": [{**site.to_dict(), "storage": storages[site.path]} for site in self.sites],
            "head_rows": list(self.head_rows),
            "head_arguments": list(self.head_arguments),
            "head_argument_form": self.head_argument_form,
            "attention_residual": self.attention_residual,
            "position_bias": list(self.position_bias) if self.position_bias else None,
            "attention_outputs": list(self.attention_outputs),
            "attention_attrs": dict(self.attention_attrs),
            "attention_reads_config": self.attention_reads_config,
            "num_heads_attr": self.num_heads_attr,
            "num_kv_heads_attr": self.num_kv_heads_attr,
            "head_dim_attr": self.head_dim_attr or "head_dim",
            "head_dim": self.head_dim(config),
            "hidden_size_attr": self.hidden_size_attr,
            "intermediate_size_attr": self.intermediate_size_attr,
        }

    # ----- resolving on a model -------------------------------------------------------
    def layer_list(self, model: nn.Module) -> nn.ModuleList:
        """Return the `nn.ModuleList` of transformer layers of `model` (any head class).

        Raises:
            ValueError: For an encoder-decoder layout, which has two layer lists (`layer_lists`).
        """
        if self.decoder is not None:
            raise InputError(
                f"{'/'.join(self.model_types)} models have an encoder and a decoder stack; this operation works on "
                "models with one stack of layers (encoders and decoders) and does not support encoder-decoders yet."
            )
        return self._own_layer_list(model)

    def layer_lists(self, model: nn.Module) -> list[nn.ModuleList]:
        """The layer list of every stack of `model` (`stacks` order)."""
        return [stack._own_layer_list(model) for _, stack in self.stacks]

    def _own_layer_list(self, model: nn.Module) -> nn.ModuleList:
        base = getattr(model, "base_model", model)
        for root in (base, model):
            try:
                return get_submodule(root, self.layers)
            except AttributeError:
                continue
        raise LayoutMismatchError(
            f"Could not find the layer list {self.layers!r} in {type(model).__name__}; "
            f"the layout for {self.model_types} does not match this model. Pass a model of the class its "
            "config.model_type names, or register a layout for it (nn_prune_ext.register_layout)."
        )

    def require_single_stack(self, action: str, instead: str) -> None:
        """Raise a `ValueError` when this layout has two stacks and `action` supports one; `instead` says what to do."""
        if self.decoder is not None:
            raise InputError(
                f"{action} runs the layers of one stack in order, and {'/'.join(self.model_types)} models have an "
                f"encoder and a decoder: encoder-decoders are not supported there yet; {instead}."
            )

    def require_removable_heads(self, action: str) -> None:
        """Raise a `ValueError` saying why `action` cannot remove heads of this family, and what it can do instead."""
        if self.fixed_heads is not None:
            raise InputError(
                f"{action} would remove attention heads, but heads of {', '.join(self.model_types)} cannot be removed "
                f"exactly: {self.fixed_heads}. Prune FFN units only: keep every head (1 in every head mask), or use "
                "prune_by_importance with target_ffn_width alone, or SparseTrainer (which scores FFN units only here)."
            )

    def require_prunable_ffn(self, action: str) -> None:
        """Raise a `ValueError` saying why `action` cannot remove FFN units of this family, and what it can do instead."""
        if self.fixed_ffn is not None:
            raise InputError(
                f"{action} would remove FFN units, but the FFN of {', '.join(self.model_types)} is not pruned: "
                f"{self.fixed_ffn}. Prune attention heads only: pass FFN-unit masks without entries (what "
                "StructureMasks.ones gives), or use prune_by_importance with target_num_heads alone, or SparseTrainer "
                "(which scores attention only here)."
            )

    def ffn_activation_name(self, config) -> Any:
        """The FFN activation of a model with `config`: its name in `ACT2FN` (or a callable), `None` if unknown."""
        return getattr(config, self.ffn_activation_attr, None) or self.ffn_activation

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

    def num_layers(self, config) -> int:
        """Layers of a model with this `config`, over all stacks (as its config says)."""
        return sum(int(getattr(config, stack.num_layers_attr)) for _, stack in self.stacks)

    def num_heads(self, config) -> int:
        return int(getattr(config, self.num_heads_attr))

    def num_kv_heads(self, config) -> int:
        if self.num_kv_heads_attr is None:
            return self.num_heads(config)
        value = getattr(config, self.num_kv_heads_attr, None)
        return self.num_heads(config) if value is None else int(value)

    def head_dim(self, config) -> int:
        # A slim config's head size is the one recorded when it was slimmed: slimming never changes it, and a
        # config may derive head_dim from per-layer head counts (Falcon's property).
        recorded = _recorded_stack(config, self).get("head_dim")
        if recorded:
            return int(recorded)
        explicit = getattr(config, self.head_dim_attr, None) if self.head_dim_attr else None
        if explicit is not None:
            return int(explicit)
        return int(getattr(config, self.hidden_size_attr)) // self.num_heads(config)

    def storages(self, model: nn.Module) -> dict[str, str]:
        """`{site path: storage}` of this stack's sites, read from the first layer where each module has weights.

        Empty modules do not count: a slim model stores an empty `Conv1D` as an `nn.Linear`. A site
        with no weights left in any layer (q/k/v and output of layers without heads) keeps the storage
        the model's slim description recorded, or `"linear"`.
        """
        found: dict[str, str] = {}
        for layer in self._own_layer_list(model):
            for site in self.sites:
                try:
                    module = get_submodule(layer, site.path)
                except AttributeError:  # q/k/v of a slim layer without heads
                    continue
                if isinstance(module, SplitProjection):
                    storage, empty = module.storage, all(part.weight.numel() == 0 for part in module.parts())
                else:
                    storage, empty = storage_of(module, site.path), module.weight.numel() == 0
                if not empty:
                    found.setdefault(site.path, storage)
        previous = {site["path"]: site.get("storage") for site in _previous_sites(model.config, self)}
        return {site.path: found.get(site.path) or previous.get(site.path) or "linear" for site in self.sites}

    def iter_layers(self, model: nn.Module) -> Iterator[LayerModules]:
        """Yield the resolved projections of every layer of `model`, stack after stack.

        Head counts are read from the projection shapes, so a model whose layers were slimmed
        to different widths is described correctly.
        """
        index = 0
        for name, stack in self.stacks:
            head_dim = stack.head_dim(model.config)
            for position, layer in enumerate(stack._own_layer_list(model)):
                yield stack._resolve(index, layer, head_dim, name, position)
                index += 1

    def _resolve(self, index: int, layer: nn.Module, head_dim: int, stack: str = "", position: int = 0) -> LayerModules:
        sites = {role: site for site in self.sites for role in site.roles}
        projections: dict[str, Projection] = {}
        layer_name = f"{stack} layer {position}" if stack else f"layer {index}"

        def resolve(role: str, known: dict[str, int]) -> Projection:
            site = sites[role]
            module = get_submodule(layer, site.path)
            where = f"{layer_name} {site.path}"
            if isinstance(module, SplitProjection):  # patched: one nn.Linear per role
                part = getattr(module, role)
                single = ProjectionSite(f"{site.path}.{role}", (role,))
                return Projection(part, single.path, role, single, [part.out_features], head_dim)
            storage = storage_of(module, where)
            rows = int((module.weight if storage == "linear" else module.weight.t()).shape[0])
            multiple = head_dim if {"query", "cross_query"} & set(site.roles) else 1
            sizes = _fused_sizes(site, rows, known, where, multiple) if site.fused else [rows]
            return Projection(module, site.path, role, site, sizes, head_dim)

        if self.ffn_down is not None:
            projections["ffn_down"] = resolve("ffn_down", {})
            width = projections["ffn_down"].in_features
            known = {"ffn_gate": width, "ffn_up": width}
            for role in ("ffn_up", "ffn_gate"):
                if self.role_path(role) is not None:
                    projections[role] = resolve(role, known)
        blocks: dict[str, tuple[int, int]] = {}
        for kind in self.block_kinds:
            query, key, value, output = BLOCK_ROLES[kind]
            projections[output] = resolve(output, {})
            attention_width = projections[output].in_features
            if attention_width % head_dim:
                raise UnsupportedProjectionError(
                    f"{layer_name.capitalize()}: the {kind}-attention output projection takes {attention_width} inputs, "
                    f"not a multiple of the head size {head_dim}; the layout's head_dim_attr or num_heads_attr does "
                    "not match this model."
                )
            if attention_width:
                for role in (query, key, value):
                    projections[role] = resolve(role, {query: attention_width})
            kv = projections.get(key)
            blocks[kind] = (attention_width // head_dim, kv.out_features // head_dim if kv is not None else 0)
        cross = None
        if "cross" in blocks:
            cross = AttentionBlock(
                "cross", index, projections.get("cross_query"), projections.get("cross_key"),
                projections.get("cross_value"), projections["cross_output"], *blocks["cross"], head_dim,
            )
        return LayerModules(
            index=index,
            query=projections.get("query"),
            key=projections.get("key"),
            value=projections.get("value"),
            output=projections["output"],
            ffn_up=projections.get("ffn_up"),
            ffn_down=projections.get("ffn_down"),
            ffn_gate=projections.get("ffn_gate"),
            num_heads=blocks["self"][0],
            num_kv_heads=blocks["self"][1],
            head_dim=head_dim,
            cross=cross,
            stack=stack,
            position=position if stack else index,
            module=layer,
            layout=self,
        )


def _common_parent(paths) -> str | None:
    """The module path holding all of `paths` directly, or `None` when they have no common parent."""
    parents = {path.rpartition(".")[0] for path in paths}
    return parents.pop() if len(parents) == 1 and next(iter(parents)) else None


def _previous_sites(config, stack: ArchitectureLayout) -> list[dict]:
    """The sites a slim config recorded for `stack` when it was slimmed before (none otherwise)."""
    return list(_recorded_stack(config, stack).get("sites", []))


def _recorded_stack(config, stack: ArchitectureLayout) -> dict:
    """The description a slim config recorded for `stack` (`{}` for a model never slimmed)."""
    spec = getattr(config, "nn_prune_slim", None)
    if not isinstance(spec, dict):
        return {}
    return next((entry for entry in spec.get("stacks", [spec]) if entry.get("layers") == stack.layers), {})


def _fused_sizes(site: ProjectionSite, total: int, known: dict[str, int], where: str, multiple: int) -> list[int]:
    """Rows of every role of a fused site: known roles take their size, the others share the rest.

    Every size must be a multiple of `multiple` (the head size, for attention roles).
    """
    unknown = [role for role in site.roles if role not in known]
    rest = total - sum(known[role] for role in site.roles if role in known)
    share = rest // len(unknown) if unknown else 0
    sizes = [known[role] if role in known else share for role in site.roles]
    # Group-interleaved rows ([q_1 .. q_r k v] per key/value group) hold every role's share of a group per
    # step: the roles after the query have one head per group, the query a whole number of heads per group.
    groups = sizes[-1] // multiple if multiple else 0
    unequal = site.interleave == "heads" and (
        len(set(sizes[1:])) > 1 or not groups or sizes[0] % (groups * multiple)
    )
    if rest < 0 or sum(sizes) != total or any(size % multiple for size in sizes) or unequal:
        expected = ", ".join(f"{role}={known[role]}" for role in site.roles if role in known)
        raise UnsupportedProjectionError(
            f"{where} computes {list(site.roles)} in {total} output rows, which does not fit {expected} rows "
            f"and equal shares{f' of whole heads ({multiple} rows each)' if multiple > 1 else ''} for the others: "
            "expected a fused projection of matching shape"
            + (" (group-interleaved key and value need equal sizes, the query whole heads per group)" if unequal else "")
            + "; the layout does not match this model."
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
    changed = False
    for layer in list(layout.iter_layers(model)):
        projections = layer.projections
        for site in layer.layout.sites:
            present = [projections[role] for role in site.roles if role in projections]
            if not present or isinstance(present[0].module, SplitProjection):
                continue
            if not site.fused and present[0].storage == "linear":
                continue
            split = SplitProjection.from_stock(
                present[0].module, site, present[0].sizes, layer.head_dim, f"{layer.name} {site.path}"
            )
            _set_submodule(layer.module, site.path, split)
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
            raise InputError(f"{site.path} computes {list(site.roles)}, but no weights were given for {missing}.")
        module = stock_module(
            storages[site.path],
            [part.weight for part in present],
            [part.bias for part in present],
            site.interleave,
            head_dim,
            # One parameter holds every fused role: it stays trainable if any role's was.
            tuple(any(part.requires_grad[i] for part in present) for i in range(2)),
        )
        _set_submodule(layer, site.path, module)
