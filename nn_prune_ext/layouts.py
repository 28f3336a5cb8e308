"""Registry of architecture layouts: where the prunable linears of each transformer layer live.

All architecture knowledge of nn_prune_ext is here. Patching, baking, slimming and the
post-training methods ask a layout where q/k/v/o and the FFN projections are, and never
branch on `model_type` themselves. Supporting a new architecture is one `register_layout` call:

```python
from nn_prune_ext import ArchitectureLayout, register_layout

register_layout(
    ArchitectureLayout(
        model_types=("my_model",),
        layers="decoder.blocks",
        query="attn.q", key="attn.k", value="attn.v", output="attn.o",
        ffn_up="mlp.fc_in", ffn_down="mlp.fc_out",
    )
)
```
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

from torch import nn

__all__ = [
    "ArchitectureLayout",
    "LayerModules",
    "UnsupportedArchitectureError",
    "register_layout",
    "get_layout",
    "supported_model_types",
]


class UnsupportedArchitectureError(ValueError):
    """Raised when a model's `model_type` has no registered layout."""


@dataclass(frozen=True)
class LayerModules:
    """The prunable linears of one transformer layer, resolved on a concrete model.

    Args:
        index: Position of the layer in the model's layer list.
        query, key, value, output: The attention projections (`nn.Linear`); query, key and value
            are `None` in a slimmed layer that has no heads left.
        ffn_up: The FFN input projection (`nn.Linear`).
        ffn_down: The FFN output projection (`nn.Linear`).
        ffn_gate: The gate projection of gated FFNs (SwiGLU), `None` otherwise.
        num_heads: Query heads of this layer.
        num_kv_heads: Key/value heads of this layer (equal to `num_heads` without GQA).
        head_dim: Size of one head.
    """

    index: int
    query: nn.Linear | None
    key: nn.Linear | None
    value: nn.Linear | None
    output: nn.Linear
    ffn_up: nn.Linear
    ffn_down: nn.Linear
    ffn_gate: nn.Linear | None
    num_heads: int
    num_kv_heads: int
    head_dim: int

    @property
    def attention_linears(self) -> dict[str, nn.Linear]:
        if self.query is None:
            return {"output": self.output}
        return {"query": self.query, "key": self.key, "value": self.value, "output": self.output}

    @property
    def ffn_linears(self) -> dict[str, nn.Linear]:
        linears = {"ffn_up": self.ffn_up}
        if self.ffn_gate is not None:
            linears["ffn_gate"] = self.ffn_gate
        linears["ffn_down"] = self.ffn_down
        return linears


@dataclass(frozen=True)
class ArchitectureLayout:
    """Where the prunable parts of one family of transformer models live.

    Module paths are dotted attribute paths. `layers` is relative to the *base model*
    (`model.base_model`, e.g. `BertModel` inside `BertForSequenceClassification`), the other
    paths are relative to one layer.

    Args:
        model_types: The `config.model_type` values this layout serves.
        layers: Path of the `nn.ModuleList` of transformer layers in the base model.
        query, key, value, output: Paths of the attention projections in a layer.
        ffn_up, ffn_down: Paths of the FFN projections in a layer.
        ffn_gate: Path of the gate projection of gated FFNs, or `None`.
        num_heads_attr: Config attribute holding the number of query heads.
        num_kv_heads_attr: Config attribute holding the number of key/value heads, `None`
            for architectures without grouped-query attention.
        hidden_size_attr: Config attribute holding the model width.
        intermediate_size_attr: Config attribute holding the FFN width.
        head_dim_attr: Config attribute holding an explicit head size; when it is absent or
            `None`, the head size is `hidden_size // num_heads`.
        norm_placement: `"post"` (BERT: LayerNorm after the residual sum) or `"pre"` (Llama).
        ffn_activation_attr: Config attribute naming the FFN activation.
        attention: Path of the module that turns a layer's hidden states into its attention
            output (it returns `(output, weights)`); by default the common parent of q/k/v.
            Slimming replaces it when a layer loses all its heads, and refuses to empty a layer
            of a layout without it.
        attention_attrs: Attributes of that module holding head counts, as pairs of attribute
            name and one of `"heads"`, `"kv_heads"`, `"groups"` (heads per key/value head) or
            `"width"` (heads x head size); slimming updates them per layer.
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
    num_heads_attr: str = "num_attention_heads"
    num_kv_heads_attr: str | None = None
    hidden_size_attr: str = "hidden_size"
    intermediate_size_attr: str = "intermediate_size"
    head_dim_attr: str | None = "head_dim"
    norm_placement: str = "post"
    ffn_activation_attr: str = "hidden_act"
    attention: str | None = None
    attention_attrs: tuple[tuple[str, str], ...] = ()

    def __post_init__(self):
        if not self.model_types:
            raise ValueError("ArchitectureLayout needs at least one model_type.")
        if self.norm_placement not in ("pre", "post"):
            raise ValueError(f"norm_placement must be 'pre' or 'post', got {self.norm_placement!r}.")
        if self.attention is None:
            parents = {path.rpartition(".")[0] for path in (self.query, self.key, self.value)}
            if len(parents) == 1 and next(iter(parents)):
                object.__setattr__(self, "attention", parents.pop())
        for attribute, kind in self.attention_attrs:
            if kind not in ("heads", "kv_heads", "groups", "width"):
                raise ValueError(
                    f"attention_attrs[{attribute!r}] must be 'heads', 'kv_heads', 'groups' or 'width', got {kind!r}."
                )

    def slim_spec(self, config, head_dim: int) -> dict:
        """The description a slim checkpoint's config carries (`config.nn_prune_slim`).

        It holds the module paths and attribute names the self-contained slim modeling file needs
        to rebuild a model without nn_prune_ext.
        """
        return {
            "format_version": 1,
            "layers": self.layers,
            "attention": self.attention,
            "query": self.query,
            "key": self.key,
            "value": self.value,
            "output": self.output,
            "ffn_up": self.ffn_up,
            "ffn_gate": self.ffn_gate,
            "ffn_down": self.ffn_down,
            "attention_attrs": dict(self.attention_attrs),
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
                return _get_submodule(root, self.layers)
            except AttributeError:
                continue
        raise AttributeError(
            f"Could not find the layer list {self.layers!r} in {type(model).__name__}; "
            f"the layout for {self.model_types} does not match this model."
        )

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

    def iter_layers(self, model: nn.Module) -> Iterator[LayerModules]:
        """Yield the resolved prunable linears of every layer of `model`.

        Head counts are read from the projection shapes, so a model whose layers were slimmed
        to different widths is described correctly.
        """
        head_dim = self.head_dim(model.config)
        for index, layer in enumerate(self.layer_list(model)):
            output = _get_submodule(layer, self.output)
            if output.in_features == 0:  # a slimmed layer without heads: q/k/v are gone
                query = key = value = None
            else:
                query, key, value = (_get_submodule(layer, path) for path in (self.query, self.key, self.value))
            yield LayerModules(
                index=index,
                query=query,
                key=key,
                value=value,
                output=output,
                ffn_up=_get_submodule(layer, self.ffn_up),
                ffn_down=_get_submodule(layer, self.ffn_down),
                ffn_gate=_get_submodule(layer, self.ffn_gate) if self.ffn_gate else None,
                num_heads=output.in_features // head_dim,
                num_kv_heads=key.out_features // head_dim if key is not None else 0,
                head_dim=head_dim,
            )


def _get_submodule(root: nn.Module, path: str) -> nn.Module:
    module = root
    for part in path.split("."):
        module = getattr(module, part)
    return module


_REGISTRY: dict[str, ArchitectureLayout] = {}


def register_layout(layout: ArchitectureLayout, *, overwrite: bool = False) -> ArchitectureLayout:
    """Register `layout` for each of its `model_types`.

    Args:
        layout: The layout to register.
        overwrite: Replace an existing layout for the same `model_type` instead of raising.

    Returns:
        The registered layout.
    """
    for model_type in layout.model_types:
        if model_type in _REGISTRY and not overwrite:
            raise ValueError(
                f"A layout for model_type {model_type!r} is already registered; pass overwrite=True to replace it."
            )
    for model_type in layout.model_types:
        _REGISTRY[model_type] = layout
    return layout


def supported_model_types() -> list[str]:
    """The `model_type` values that have a registered layout, sorted."""
    return sorted(_REGISTRY)


def get_layout(model_or_type: nn.Module | str) -> ArchitectureLayout:
    """Return the layout of a model, a config or a `model_type` string.

    Raises:
        UnsupportedArchitectureError: If no layout is registered for the model type; the
            message names the supported types and how to register a new one.
    """
    if isinstance(model_or_type, str):
        model_type = model_or_type
    else:
        config = getattr(model_or_type, "config", model_or_type)
        model_type = getattr(config, "model_type", None)
    layout = _REGISTRY.get(model_type)
    if layout is None:
        raise UnsupportedArchitectureError(
            f"nn_prune_ext has no layout for model_type {model_type!r}. Supported: "
            f"{', '.join(supported_model_types())}. To add one, describe where its attention and FFN "
            "linears live with nn_prune_ext.register_layout(ArchitectureLayout(model_types=(...), "
            "layers=..., query=..., key=..., value=..., output=..., ffn_up=..., ffn_down=...))."
        )
    return layout


# ----- built-in layouts -------------------------------------------------------------------
BERT_LAYOUT = register_layout(
    ArchitectureLayout(
        model_types=("bert", "roberta", "xlm-roberta", "electra"),
        layers="encoder.layer",
        query="attention.self.query",
        key="attention.self.key",
        value="attention.self.value",
        output="attention.output.dense",
        ffn_up="intermediate.dense",
        ffn_down="output.dense",
        norm_placement="post",
        attention="attention.self",
        attention_attrs=(("num_attention_heads", "heads"), ("all_head_size", "width")),
    )
)

DISTILBERT_LAYOUT = register_layout(
    ArchitectureLayout(
        model_types=("distilbert",),
        layers="transformer.layer",
        query="attention.q_lin",
        key="attention.k_lin",
        value="attention.v_lin",
        output="attention.out_lin",
        ffn_up="ffn.lin1",
        ffn_down="ffn.lin2",
        intermediate_size_attr="hidden_dim",
        norm_placement="post",
        ffn_activation_attr="activation",
        attention="attention",
        attention_attrs=(("n_heads", "heads"),),
    )
)

LLAMA_LAYOUT = register_layout(
    ArchitectureLayout(
        model_types=("llama", "mistral", "qwen2"),
        layers="layers",
        query="self_attn.q_proj",
        key="self_attn.k_proj",
        value="self_attn.v_proj",
        output="self_attn.o_proj",
        ffn_up="mlp.up_proj",
        ffn_gate="mlp.gate_proj",
        ffn_down="mlp.down_proj",
        num_kv_heads_attr="num_key_value_heads",
        norm_placement="pre",
        attention="self_attn",
        attention_attrs=(("num_key_value_groups", "groups"),),
    )
)
