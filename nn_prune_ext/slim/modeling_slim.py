"""Slim transformer models: every layer keeps its own number of attention heads and FFN units.

This file is self-contained on purpose: it imports only `torch` and `transformers`. nn_prune_ext
saves a copy of it next to every slim checkpoint, and the checkpoint's `config.json` maps the auto
classes to it (`auto_map`), so that

    AutoModelForSequenceClassification.from_pretrained(path, trust_remote_code=True)

rebuilds the slim model where nn_prune_ext is not installed.

How a slim checkpoint is described:
- `config.model_type` stays the stock one (`"bert"`, `"llama"`, ...), and the global sizes stay those
  of the dense model.
- `config.per_layer_config` (transformers' heterogeneous configs) gives each layer its number of
  heads, key/value heads, head size and FFN width. Stock modeling code reading one of these sizes
  globally raises `AmbiguousGlobalPerLayerAttributeError`, so loading a slim checkpoint without its
  modeling code fails loudly instead of building a wrong model.
- `config.nn_prune_slim` names where the attention and FFN projections live in a layer (the
  architecture layout) and which attention attributes hold head counts. An encoder-decoder's
  description has one entry per stack (`stacks`), each with every layer's sizes (`shapes`), because
  `per_layer_config` has one entry per layer index and the encoder and decoder share indices.

A slim class is the stock class with `SlimModelMixin` in front: the stock `__init__` builds the dense
modules, then `apply_slim_shapes` swaps each projection for one of the layer's size and replaces the
attention of a layer without heads by `EmptyAttention`.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import logging as _std_logging
import errno
import os
import re
import shutil
import socket
import tempfile
import warnings
from typing import Any, Callable, Iterator

import torch
from torch import nn

SLIM_SPEC_KEY = "nn_prune_slim"
# Which layers of the dense model a model keeps after whole layers were dropped (`drop_layers`),
# and the config entries of the dense model that dropping changed. Dense models carry it too.
LAYERS_KEY = "nn_prune_layers"
# The per-layer key of a layer's query heads, for configs that derive their head size from the head count
# (Falcon's head_dim property would divide by a layer's 0 heads); the description's layer_num_heads_attr.
LAYER_HEADS_KEY = "nn_prune_num_heads"
MODELING_FILE_NAME = "modeling_nn_prune_slim.py"
MODELING_MODULE_NAME = MODELING_FILE_NAME[: -len(".py")]
SLIM_CLASS_PREFIX = "Slim"
# Everything below this line in a saved copy was generated for that checkpoint.
GENERATED_MARKER = "# ----- generated for this checkpoint -----"

# Called as hook(model, directory) after a slim model is written, before the files are moved into
# place. nn_prune_ext registers its model-card writer here; a copy loaded as remote code has none.
SAVE_HOOKS: list[Callable[[nn.Module, str], None]] = []

_HETEROGENEITY_LOGGER = "transformers.integrations.heterogeneity.configuration_utils"


# ----- reading the description -------------------------------------------------------------
def is_slim_config(config) -> bool:
    """Whether `config` describes a slim model (carries `nn_prune_slim`)."""
    return isinstance(getattr(config, SLIM_SPEC_KEY, None), dict)


# Config entries that make a config slim (heterogeneous); without them it describes the dense model.
_SLIM_CONFIG_KEYS = (
    "per_layer_config",
    SLIM_SPEC_KEY,
    "auto_map",
    "serialize_explicit_per_layer_config",
    "allow_global_per_layer_attribute_access",
)


def dense_config(config):
    """The config of the dense model a slim model was cut from.

    A slim config keeps the dense global sizes (`global_size_access`); dropping the per-layer sizes,
    the layout description and the remote-code entries leaves the stock config of the dense model.
    Layers dropped whole are back: the number of layers and per-layer lists such as `layer_types`
    are those the config recorded before the first layer was dropped.

    Args:
        config: A slim config (see `is_slim_config`).

    Returns:
        A new config of the same (stock) class, not heterogeneous; `config` is left as it was.
    """
    slim_spec(config)  # a clear error for a config that is not slim
    with global_size_access(config):  # the global sizes are the dense ones; reading them is the point
        settings = config.to_dict()
    for key in _SLIM_CONFIG_KEYS:
        settings.pop(key, None)
    dropped = settings.pop(LAYERS_KEY, None)
    if dropped:
        settings.update(dropped["dense_values"])
    return type(config).from_dict(settings)


def slim_spec(config) -> dict[str, Any]:
    """The layout description stored in a slim config (`config.nn_prune_slim`)."""
    if not is_slim_config(config):
        raise _input_error(
            f"This config has no '{SLIM_SPEC_KEY}' entry, so it does not describe a slim model. Slim "
            "models are made by nn_prune_ext.optimize_model and saved with save_pretrained."
        )
    return getattr(config, SLIM_SPEC_KEY)


def layer_shape(config, index: int) -> dict[str, int]:
    """The sizes of layer `index` of a slim model.

    Returns:
        A dict with `num_heads`, `num_kv_heads`, `head_dim` and `ffn_width`.
    """
    spec = slim_spec(config)
    layer_config = config.per_layer_config[index] if config.is_heterogeneous else config
    with global_size_access(layer_config):
        heads = int(getattr(layer_config, spec.get("layer_num_heads_attr") or spec["num_heads_attr"]))
        kv_attr = spec.get("num_kv_heads_attr")
        kv_heads = getattr(layer_config, kv_attr, None) if kv_attr else None
        # Slimming never changes the head size: the description's is read first, since a config may
        # derive its head_dim from the head count (Falcon's property, which a layer without heads breaks).
        head_dim = spec.get("head_dim") or getattr(layer_config, spec["head_dim_attr"], None)
        return {
            "num_heads": heads,
            "num_kv_heads": heads if kv_heads is None else int(kv_heads),
            "head_dim": int(head_dim),
            "ffn_width": int(getattr(layer_config, spec["intermediate_size_attr"])),
        }


@contextlib.contextmanager
def global_size_access(config) -> Iterator[None]:
    """Let the stock modeling code read the dense (global) sizes of a heterogeneous config.

    The stock `__init__` builds dense modules from the global sizes; `apply_slim_shapes` then gives
    every layer its own. Outside this context the global sizes stay unreadable, so code that would
    use them for a layer fails instead of silently using a dense size.
    """
    if not getattr(config, "is_heterogeneous", False):
        yield
        return
    previous = config.allow_global_per_layer_attribute_access
    logger = _std_logging.getLogger(_HETEROGENEITY_LOGGER)
    level = logger.level
    config.allow_global_per_layer_attribute_access = True
    logger.setLevel(_std_logging.ERROR)
    try:
        yield
    finally:
        config.allow_global_per_layer_attribute_access = previous
        logger.setLevel(level)


# ----- modules -----------------------------------------------------------------------------
class EmptyAttention(nn.Module):
    """The attention of a layer whose heads were all removed.

    Its output is the output projection applied to a zero-width input, that is the projection's bias
    (or zeros), which is exactly what the pruned attention computed. It still fills its key/value
    entry of a cache (one zero head), so cache lengths stay right for generation, and returns attention
    weights with zero heads, so `output_attentions` keeps one entry per layer. `empty_attention_like`
    makes it an instance of the attention class it replaces, for the same reason: transformers
    records attention weights from the modules of that class.

    Args:
        output: The output projection when it lives inside the attention module (Llama's `o_proj`),
            resized to zero inputs; `None` when the layer applies it outside (BERT).
        output_name: The attribute name of `output`, so that state-dict keys do not change.
        head_dim: Size of one head, for the placeholder cache entry.
        layer_idx: Index of the layer, for the cache.
        cross: Whether it replaces a cross-attention (an encoder-decoder's decoder layer), whose keys
            and values come from the encoder: it then leaves the cache alone, since the cached length
            is read from the self-attention entries.
        outputs: What the replaced attention returns, in order: `"output"`, `"weights"` and others
            (returned as `None`; T5's position bias, which the next slim layer computes itself).
        residual: `(name, position)` of the replaced attention's `forward` argument that it adds to
            its output (Bloom's `residual`; position counted after `hidden_states`), or `None`.
    """

    def __init__(
        self,
        output: nn.Linear | None,
        output_name: str | None,
        head_dim: int,
        layer_idx: int,
        cross: bool = False,
        outputs: tuple[str, ...] = ("output", "weights"),
        residual: tuple[str, int] | None = None,
    ):
        nn.Module.__init__(self)  # not the replaced attention class's __init__ (see empty_attention_like)
        self.residual = residual
        self.output_name = output_name
        if output is not None:
            self.add_module(output_name, output)
        self.head_dim = head_dim
        self.layer_idx = layer_idx
        self.cross = cross
        self.outputs = tuple(outputs)

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs):
        batch, seq_len = hidden_states.shape[0], hidden_states.shape[-2]
        key_len = seq_len
        cache = None if self.cross else _cache_argument(args, kwargs)
        encoder_states = kwargs.get("key_value_states")
        if self.cross and isinstance(encoder_states, torch.Tensor):
            key_len = encoder_states.shape[-2]
        if cache is not None:
            cache = getattr(cache, "self_attention_cache", cache)
            # One zero key/value head, not zero heads: the model reads the cached length from the first
            # layer's entry, and transformers counts an entry without elements as empty (length 0).
            placeholder = hidden_states.new_zeros(batch, 1, seq_len, self.head_dim)
            keys, _ = cache.update(placeholder, placeholder, self.layer_idx)
            key_len = keys.shape[-2]
        # A zero-width slice of the input, not a new tensor: it stays in the autograd graph, so the
        # layer's input norm still gets a (zero) gradient, which DDP expects of every parameter.
        output = hidden_states[..., :0]
        if self.output_name is not None:
            output = getattr(self, self.output_name)(output)
        residual = getattr(self, "residual", None)
        if residual is not None:
            name, position = residual
            output = output + (kwargs[name] if name in kwargs else args[position])
        # Eager attention returns weights (here: of zero heads, one entry per layer in
        # output_attentions); the fused kernels return none.
        implementation = getattr(getattr(self, "config", None), "_attn_implementation", "eager")
        weights = hidden_states.new_zeros(batch, 0, seq_len, key_len) if implementation in (None, "eager") else None
        values = {"output": output, "weights": weights}
        return tuple(values.get(name) for name in getattr(self, "outputs", ("output", "weights")))


def _cache_argument(args: tuple, kwargs: dict[str, Any]) -> Any:
    """The key/value cache among an attention call's arguments, or `None`.

    Found by its type rather than by keyword: transformers passed it as `past_key_values` before
    5.24 and as `cache` since.
    """
    from transformers import Cache

    return next((value for value in (*args, *kwargs.values()) if isinstance(value, Cache)), None)


def empty_attention_like(attention: nn.Module, *args) -> EmptyAttention:
    """An `EmptyAttention(*args)` that is also an instance of `type(attention)`.

    It keeps the plain attributes of `attention` (`config`, `is_causal`, ...), so that code
    inspecting attention modules finds what it expects.
    """
    stock = type(attention)
    name = f"Empty{stock.__name__}"
    cls = globals().get(name)
    if cls is None or not issubclass(cls, stock):
        cls = type(name, (EmptyAttention, stock), {"__module__": __name__})
        globals()[name] = cls  # importable by name, so a pickled model finds it
    empty = cls(*args)
    for key, value in vars(attention).items():
        if not key.startswith("_") and key != "training" and not isinstance(value, (nn.Module, torch.Tensor)):
            empty.__dict__.setdefault(key, value)
    return empty


def _get(root: nn.Module, path: str) -> nn.Module:
    module = root
    for part in path.split("."):
        module = getattr(module, part)
    return module


def _set(root: nn.Module, path: str, module: nn.Module) -> None:
    parent_path, _, name = path.rpartition(".")
    parent = _get(root, parent_path) if parent_path else root
    setattr(parent, name, module)


def _layers(model: nn.Module, spec: dict[str, Any]) -> nn.ModuleList:
    base = getattr(model, "base_model", model)
    for root in (base, model):
        try:
            return _get(root, spec["layers"])
        except AttributeError:
            continue
    raise AttributeError(f"{type(model).__name__} has no layer list at {spec['layers']!r}.")


# Every role, in the order of a fused module's rows; the same order as nn_prune_ext.arch.
_ROLES = (
    "query", "key", "value", "output",
    "cross_query", "cross_key", "cross_value", "cross_output",
    "ffn_gate", "ffn_up", "ffn_down",
)
# Per attention block: its module's entry in a description, and its projection roles.
_BLOCKS = {
    "self": ("attention", ("query", "key", "value"), "output"),
    "cross": ("cross_attention", ("cross_query", "cross_key", "cross_value"), "cross_output"),
}


def _stacks(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """The description of every stack: format 3 lists them, formats 1 and 2 describe one stack."""
    return spec["stacks"] if "stacks" in spec else [spec]


def _sites(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """The projection modules of a layer: path, roles (in row order), interleave and storage.

    Checkpoints of format 1 name one `nn.Linear` per role.
    """
    if "sites" in spec:
        return spec["sites"]
    return [
        {"path": spec[role], "roles": [role], "interleave": "blocks", "storage": "linear"}
        for role in _ROLES
        if spec.get(role)
    ]


def _resized_projection(old: nn.Module, storage: str, in_features: int, out_features: int, device) -> nn.Module:
    """A module like `old` (`nn.Linear`, or transformers' `Conv1D` storing `(in, out)`) of the given sizes.

    A `Conv1D` without inputs is built as an `nn.Linear`: `Conv1D` cannot reshape a zero-width input.
    """
    device = old.weight.device if device is None else torch.device(device)
    conv1d = storage == "conv1d" and in_features > 0
    current = (old.in_features, old.out_features) if isinstance(old, nn.Linear) else tuple(old.weight.shape)
    if current == (in_features, out_features) and isinstance(old, nn.Linear) != conv1d and device == old.weight.device:
        return old
    with warnings.catch_warnings():
        # A layer without heads or FFN units has zero-size projections; their init is a no-op.
        warnings.filterwarnings("ignore", message="Initializing zero-element tensors")
        if conv1d:
            from transformers.pytorch_utils import Conv1D

            with torch.device(device):
                return Conv1D(out_features, in_features).to(old.weight.dtype)
        return nn.Linear(in_features, out_features, bias=old.bias is not None, device=device, dtype=old.weight.dtype)


def _relative(path: str, prefix: str) -> str | None:
    return path[len(prefix) + 1 :] if path.startswith(prefix + ".") else None


def apply_slim_shapes(model: nn.Module, device: torch.device | str | None = None) -> list[nn.Module]:
    """Give every layer of `model` the sizes its config describes (`per_layer_config`, or each stack's `shapes`).

    Projections whose shape changes are replaced by new modules of their kind (uninitialized values
    from the module's own init); the head-count attributes of the attention modules are updated; an
    attention block without heads becomes `EmptyAttention`.

    Args:
        model: A model whose config carries a slim description.
        device: Create the new projections on this device (`"meta"` when the caller assigns the
            weights itself); by default on the device of the projection they replace.

    Returns:
        The new modules, so a caller can initialize or fill them.
    """
    config = model.config
    created: list[nn.Module] = []
    stacks = _stacks(slim_spec(config))
    for stack in stacks:
        with global_size_access(config):
            hidden = int(getattr(config, stack["hidden_size_attr"]))
        layers = _layers(model, stack)
        # Index of each layer in the dense model: layers of a single stack may have been dropped.
        dropped = getattr(config, LAYERS_KEY, None) if len(stacks) == 1 else None
        dense_indices = list(dropped["kept"]) if dropped else list(range(len(layers)))
        buckets = _position_bias_buckets(layers, stack)  # before a layer's attention may become empty
        for index, layer in enumerate(layers):
            shape = stack["shapes"][index] if "shapes" in stack else layer_shape(config, index)
            created += _apply_layer_shape(model, layer, stack, index, shape, hidden, device)
            kept = stack.get("kept_heads", {}).get(str(dense_indices[index]))
            if stack.get("head_arguments") and kept and stack.get("attention"):
                HeadArgumentSelection.attach(
                    _get(layer, stack["attention"]), stack["head_arguments"], kept,
                    stack.get("head_argument_form", "batch_heads"),
                )
        if buckets is not None:
            created += _own_position_biases(layers, stack, buckets, device)
    return created


def _position_bias_buckets(layers, spec: dict[str, Any]) -> int | None:
    """Rows of the per-head position-bias embedding some layer's self-attention holds (`None` if none does)."""
    if not spec.get("position_bias") or not spec.get("attention"):
        return None
    for layer in layers:
        try:
            return int(_get(_get(layer, spec["attention"]), spec["position_bias"][0]).num_embeddings)
        except AttributeError:
            continue
    return None


def _own_position_biases(layers, spec: dict[str, Any], buckets: int, device) -> list[nn.Module]:
    """Give every slim layer's self-attention its own per-head position-bias embedding, and make every
    attention module compute the bias for its own heads rather than take the one passed in.

    The stock model computes the bias once, in the first layer, for all heads, and passes it on; a slim
    layer keeps other heads (`ArchitectureLayout.position_bias`).
    """
    path, flag, argument = spec["position_bias"]
    created = []
    for layer in layers:
        for module_key in ("attention", "cross_attention"):
            attention = _get(layer, spec[module_key]) if spec.get(module_key) else None
            if attention is None or isinstance(attention, EmptyAttention):
                continue
            ArgumentRecomputation.attach(attention, argument)
            if module_key == "cross_attention":
                continue
            heads = int(getattr(attention, "_nn_prune_heads"))
            try:
                old = _get(attention, path)
            except AttributeError:
                old = None
            if old is None or tuple(old.weight.shape) != (buckets, heads):
                target = device if device is not None else next(attention.parameters()).device
                new = nn.Embedding(buckets, heads, device=target)
                _set(attention, path, new)
                created.append(new)
            setattr(attention, flag, True)
    return created


class ArgumentRecomputation:
    """Drops an argument passed to an attention module (sets it to `None`), so that the module computes it
    for its own heads (T5's position bias, passed on from the first layer for all of the dense heads)."""

    ATTRIBUTE = "_nn_prune_recomputed_argument"

    def __init__(self, name: str):
        self.name = name

    @classmethod
    def attach(cls, attention: nn.Module, name: str) -> None:
        if attention.__dict__.get(cls.ATTRIBUTE) is None:
            hook = attention.__dict__[cls.ATTRIBUTE] = cls(name)
            attention.register_forward_pre_hook(hook, with_kwargs=True)

    def __call__(self, module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        return _rewrite_argument(module, args, kwargs, self.name, lambda value: None)


def _rewrite_argument(module: nn.Module, args: tuple, kwargs: dict, name: str, rewrite) -> tuple[tuple, dict]:
    """`(args, kwargs)` of a call of `module` with the argument `name` (keyword or positional) rewritten."""
    args, kwargs = list(args), dict(kwargs)
    parameters = _parameter_names(type(module))
    if name in kwargs:
        kwargs[name] = rewrite(kwargs[name])
    elif name in parameters and parameters.index(name) < len(args):
        args[parameters.index(name)] = rewrite(args[parameters.index(name)])
    return tuple(args), kwargs


@functools.lru_cache(maxsize=None)
def _parameter_names(module_class: type) -> list[str]:
    """The names of a module class's `forward` parameters after `self`, in order."""
    return list(inspect.signature(module_class.forward).parameters)[1:]


class HeadArgumentSelection:
    """Gives a slim layer's attention the entries of its kept heads of arguments computed for the dense heads.

    Some families compute a per-head tensor once for all layers (MPNet's relative position bias,
    `[batch, heads, query, key]`) and pass it to every layer; a layer that kept some heads must read
    only theirs. Attached as a forward pre-hook; a padding head (`None`) reads head 0, which it
    multiplies by zero output weights.

    Args:
        names: The attention `forward`'s parameters holding such tensors.
        kept: For each head of the slim layer, the dense head it comes from.
        form: `"batch_heads"` (heads along dimension 1 of `[batch, heads, ...]`) or `"flat"` (dimension 0
            of `[batch * heads, ...]`, Bloom's ALiBi bias; the batch size is read from `hidden_states`).
    """

    ATTRIBUTE = "_nn_prune_head_arguments"

    def __init__(self, names: list[str], kept: list[int | None], form: str = "batch_heads"):
        self.names = list(names)
        self.form = form
        # A list, made a tensor on first use on each device: models are often built on the meta device.
        self.kept = [0 if head is None else int(head) for head in kept]
        self._index: dict[torch.device, torch.Tensor] = {}

    @classmethod
    def attach(cls, attention: nn.Module, names: list[str], kept: list[int | None], form: str = "batch_heads") -> None:
        if isinstance(attention, EmptyAttention):
            return
        existing = attention.__dict__.get(cls.ATTRIBUTE)
        if existing is not None:  # slimmed again: one hook, with the latest choice
            existing.__init__(names, kept, form)
            return
        selection = cls(names, kept, form)
        attention.__dict__[cls.ATTRIBUTE] = selection
        attention.register_forward_pre_hook(selection, with_kwargs=True)

    def __call__(self, module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        hidden_states = args[0] if args else kwargs.get("hidden_states")
        batch = hidden_states.shape[0] if isinstance(hidden_states, torch.Tensor) else None
        for name in self.names:
            args, kwargs = _rewrite_argument(module, args, kwargs, name, lambda value: self._select(value, batch))
        return args, kwargs

    def _select(self, value: Any, batch: int | None) -> Any:
        if not isinstance(value, torch.Tensor) or value.dim() < 2:
            return value  # absent
        index = self._index.get(value.device)
        if index is None:
            index = self._index[value.device] = torch.tensor(self.kept, dtype=torch.long, device=value.device)
        if self.form == "flat":  # [batch * dense heads, ...]
            if batch is None or value.shape[0] % batch:
                raise ValueError(
                    f"A slim layer cannot find its heads in an argument of shape {tuple(value.shape)} for a batch of "
                    f"{batch}: it expected [batch * heads, ...]."
                )
            return value.unflatten(0, (batch, -1)).index_select(1, index).flatten(0, 1)
        if value.shape[1] == 1:
            return value  # broadcast over the heads
        return value.index_select(1, index)


def _apply_layer_shape(model, layer, spec, index, shape, hidden, device) -> list[nn.Module]:
    """`apply_slim_shapes` for one layer of one stack; returns the new modules."""
    head_dim, width = shape["head_dim"], shape["ffn_width"]
    heads = {"self": (shape["num_heads"], shape["num_kv_heads"])}
    heads["cross"] = (shape.get("cross_heads", 0), shape.get("cross_kv_heads", 0))
    for kind, (query, kv) in heads.items():
        if query % max(kv, 1) or (query == 0) != (kv == 0):
            raise _input_error(f"Layer {index}: {query} {kind}-attention query heads cannot be grouped over {kv} key/value heads.")
    # (inputs, outputs) of every role in this layer.
    sizes = {"ffn_gate": (hidden, width), "ffn_up": (hidden, width), "ffn_down": (width, hidden)}
    for kind, (query, kv) in heads.items():
        prefix = "" if kind == "self" else "cross_"
        sizes.update({
            prefix + "query": (hidden, query * head_dim),
            prefix + "key": (hidden, kv * head_dim),
            prefix + "value": (hidden, kv * head_dim),
            prefix + "output": (query * head_dim, hidden),
        })
    created = []
    for site in _sites(spec):
        roles = site["roles"]
        kind = next((kind for kind, (_, qkv, _) in _BLOCKS.items() if set(roles) <= set(qkv)), None)
        if kind is not None:
            attention = _get(layer, spec[_BLOCKS[kind][0]]) if spec.get(_BLOCKS[kind][0]) else None
            if heads[kind][0] == 0 or isinstance(attention, EmptyAttention):
                if heads[kind][0]:
                    raise _input_error(f"Layer {index} has no {kind}-attention heads left and cannot grow back.")
                continue  # replaced by EmptyAttention below, with the projections it held
        old = _get(layer, site["path"])
        new = _resized_projection(
            old, site["storage"], sizes[roles[0]][0], sum(sizes[role][1] for role in roles), device
        )
        if new is not old:
            _set(layer, site["path"], new)
            created.append(new)
    # Modules with one block of rows per query head (DeBERTa's position projections); a layer without
    # heads loses them with its attention module.
    for path in spec.get("head_rows", []) if heads["self"][0] else []:
        try:
            old = _get(layer, path)
        except AttributeError:  # a config option that leaves the module out
            continue
        new = _resized_projection(old, "linear", old.in_features, heads["self"][0] * head_dim, device)
        if new is not old:
            _set(layer, path, new)
            created.append(new)
    for kind in _BLOCKS:
        if kind == "self" or spec.get(_BLOCKS[kind][0]):
            _empty_or_resize_attention(layer, spec, index, kind, *heads[kind], head_dim)
    if spec.get("attention_reads_config") and spec.get("attention"):
        attention = _get(layer, spec["attention"])
        layer_sizes = {spec["num_heads_attr"]: heads["self"][0], spec["head_dim_attr"]: head_dim}
        if spec.get("num_kv_heads_attr"):
            layer_sizes[spec["num_kv_heads_attr"]] = heads["self"][1]
        attention.config = LayerConfig(model.config, layer_sizes)
    return created


class LayerConfig:
    """What the attention of one slim layer reads as its config: the layer's sizes, the rest from the model's.

    For attention modules that read head counts from their config while they run (Phi-3). Everything
    not overridden, `_attn_implementation` included, is read from the model's config when asked, so
    a later change of the attention implementation reaches the layer.

    Args:
        config: The model's config.
        sizes: `{attribute: value}` of this layer (number of heads, of key/value heads, head size).
    """

    def __init__(self, config, sizes: dict[str, int]):
        self.__dict__["_config"] = config
        self.__dict__["_sizes"] = dict(sizes)

    def __getattr__(self, name: str):
        if name.startswith("__") or name in ("_config", "_sizes"):
            raise AttributeError(name)
        sizes = self.__dict__["_sizes"]
        if name in sizes:
            return sizes[name]
        # Other per-layer sizes stay unreadable here, as on the model's config: a wrong size fails loudly.
        return getattr(self.__dict__["_config"], name)

    def __setattr__(self, name: str, value) -> None:
        setattr(self.__dict__["_config"], name, value)


def _empty_or_resize_attention(layer, spec, index, kind, heads, kv_heads, head_dim) -> None:
    """Replace an attention block without heads by `EmptyAttention`; set the head-count attributes."""
    module_key, _, output_key = _BLOCKS[kind]
    attention_path = spec.get(module_key)
    if attention_path is None:
        if heads == 0:
            raise _input_error(
                f"Layer {index} has no heads left, but the layout names no attention module to replace; "
                "register the layout with attention='<path of the attention module>'."
            )
        return
    attention = _get(layer, attention_path)
    if heads == 0 and not isinstance(attention, EmptyAttention):
        output_inside = _relative(spec[output_key], attention_path)
        if output_inside is not None and "." in output_inside:
            raise _input_error(f"The output projection path {spec[output_key]!r} is nested too deep to keep.")
        layer_idx = getattr(attention, "layer_idx", None)
        residual = spec.get("attention_residual")
        if residual is not None:  # its position among the arguments after hidden_states
            residual = (residual, _parameter_names(type(attention)).index(residual) - 1)
        empty = empty_attention_like(
            attention,
            _get(layer, spec[output_key]) if output_inside is not None else None,
            output_inside,
            head_dim,
            index if layer_idx is None else layer_idx,
            kind == "cross",
            tuple(spec.get("attention_outputs") or ("output", "weights")),
            residual,
        )
        _set(layer, attention_path, empty)
        attention = empty
    attention.__dict__["_nn_prune_heads"] = heads  # this layer's query heads, for its own position bias
    values = {
        "heads": heads,
        "kv_heads": kv_heads,
        "groups": heads // kv_heads if kv_heads else 0,
        "width": heads * head_dim,
    }
    for attribute, kind in spec.get("attention_attrs", {}).items():
        if hasattr(attention, attribute):
            setattr(attention, attribute, values[kind])


# ----- the slim classes ---------------------------------------------------------------------
class SlimModelMixin:
    """Put in front of a stock transformers model class to build its slim variant."""

    def __init__(self, config, *args, **kwargs):
        with global_size_access(config):
            super().__init__(config, *args, **kwargs)
        created = apply_slim_shapes(self)
        # A loaded config may allow global reads (see _drop_session_flags); the built model does not
        # need them, and code reading a dense size for a slim layer should fail, not run wrong.
        config.allow_global_per_layer_attribute_access = False
        if created and not any(p.is_meta for p in self.parameters()):
            for module in created:
                self._init_weights(module)

    # The stock initialisation may read global sizes (RoPE's head size from the head count, Falcon): the
    # dense ones are right there, since slimming keeps the head size. `initialize_weights` reaches the
    # inner stock models too, which share this config.
    def _init_weights(self, module):
        with global_size_access(self.config):
            super()._init_weights(module)

    def initialize_weights(self):
        with global_size_access(self.config):
            super().initialize_weights()

    def save_pretrained(self, save_directory: str | os.PathLike, is_main_process: bool = True, **kwargs) -> None:
        """Save weights, config, this modeling file and (with nn_prune_ext) a model card.

        Everything is written to a staging folder beside `save_directory`
        (`.slim-staging-<host>-<pid>-<random>`), which then takes the old folder's place in one step
        (Linux `renameat2(RENAME_EXCHANGE)`; elsewhere two renames, and a save killed between them is
        undone by the next one), so a save that fails or is killed leaves at the path the whole old
        checkpoint or the whole new one. Files of the old folder that no slim save writes (a tokenizer,
        the user's notes) are kept; those an earlier slim save wrote and this one does not (other weight
        shards, the picture under its old name `density.svg`) are not. A link to a folder is followed.
        Where the folder cannot be renamed (a mount point), files are replaced one by one, `config.json`
        last. Each save first removes what saves of dead processes left beside it. With
        `push_to_hub=True` the saved folder is then uploaded with `push_to_hub` (`repo_id` defaults to
        the folder name; `commit_message`, `private`, `token`, `create_pr` and `revision` are passed on).

        Args:
            save_directory: The checkpoint folder; created, or replaced where it exists.
            is_main_process: False on the other ranks of a distributed run: they write nothing.
            **kwargs: Passed to transformers' `save_pretrained` (`max_shard_size`, ...), plus the
                `push_to_hub` settings above.

        Raises:
            InputError: `save_directory` is a file, a link to a file or lies below a file; nothing was
                written, moved or changed.
            OSError: The save failed; the folder holds the checkpoint it held before.
        """
        push = kwargs.pop("push_to_hub", False)
        hub_kwargs = {
            key: kwargs.pop(key)
            for key in ("repo_id", "commit_message", "private", "create_pr", "revision")
            if key in kwargs
        }
        if "token" in kwargs:
            hub_kwargs["token"] = kwargs["token"]
        if not is_main_process:
            # Other ranks still take part in gathering sharded weights; they write nothing.
            with global_size_access(self.config):
                super().save_pretrained(save_directory, is_main_process=False, **kwargs)
            return
        save_directory = os.fspath(save_directory)
        target = _checked_target(save_directory)
        self.config.auto_map = auto_map_for(type(self))
        parent = os.path.dirname(target)
        os.makedirs(parent, exist_ok=True)
        _clean_stale_staging(parent)
        if os.path.isdir(target):
            _clean_stale_staging(target)  # what a file-by-file save into a mount point left
        staging = tempfile.mkdtemp(prefix=f"{_STAGING}{_owner()}-", dir=parent)
        lock = _lock(staging)
        try:
            os.chmod(staging, 0o777 & ~_umask())  # mkdtemp makes it private; a checkpoint is not
            with global_size_access(self.config):  # config validators read global sizes
                super().save_pretrained(staging, **kwargs)
            _drop_session_flags(self.config, os.path.join(staging, "config.json"))
            write_modeling_file(type(self), staging)
            for hook in SAVE_HOOKS:
                hook(self, staging)
            _move_into_place(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
            if lock is not None:
                os.close(lock)
        if push:
            repo_id = hub_kwargs.pop("repo_id", os.path.basename(os.path.abspath(save_directory)))
            self.push_to_hub(repo_id, **hub_kwargs)

    def push_to_hub(
        self,
        repo_id: str,
        *,
        commit_message: str | None = None,
        commit_description: str | None = None,
        private: bool | None = None,
        token: str | bool | None = None,
        revision: str | None = None,
        create_pr: bool = False,
        max_shard_size: int | str = "50GB",
    ):
        """Upload the checkpoint `save_pretrained` writes (model card included) to the Hub.

        transformers' own `push_to_hub` would replace the model card with a generic one, so the
        saved folder is uploaded as it is.

        Returns:
            The `CommitInfo` of the upload.
        """
        from huggingface_hub import HfApi  # a dependency of transformers

        api = HfApi(token=token)
        repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
        with tempfile.TemporaryDirectory() as folder:
            self.save_pretrained(folder, max_shard_size=max_shard_size)
            return api.upload_folder(
                repo_id=repo_id,
                folder_path=folder,
                commit_message=commit_message or "Upload slim model",
                commit_description=commit_description,
                revision=revision,
                create_pr=create_pr,
            )


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def _drop_session_flags(config: Any, config_path: str) -> None:
    """Keep global reads of per-layer sizes forbidden in the saved config where transformers allows.

    `global_size_access` is on while saving, so config.json says so. Where the stock config class
    validates without it, the flag is dropped, and stock code that would build dense modules fails
    at the first global read. Some config classes (Llama's) read the sizes in their own validator,
    so their flag must stay; loading such a checkpoint without its modeling code still fails,
    on the size mismatch of the weights.
    """
    with open(config_path, encoding="utf-8") as handle:
        payload = json.load(handle)
    if not payload.pop("allow_global_per_layer_attribute_access", False):
        return
    try:
        # A deep copy: building a config may rewrite nested entries in place (transformers 5.14 adds a
        # top-level rope_type to ModernBERT's per-layer-type rope_parameters), and `payload` is written back.
        type(config).from_dict(json.loads(json.dumps(payload)))
    except Exception:
        return
    with open(config_path, "w", encoding="utf-8") as handle:
        json.dump(payload, handle, indent=2, sort_keys=True)
        handle.write("\n")


def _is_weight_file(name: str) -> bool:
    return name.startswith("model") and ".safetensors" in name


# The other names a slim save writes, or wrote in an earlier release. A re-save drops those it did not
# write this time (a picture under its old name, a generation config of another model): they would
# describe a model that is no longer there. Any other file of the folder (a tokenizer, training state,
# the user's notes) is kept. The model card's names are spelled out because a copy of this file loaded
# as remote code cannot import nn_prune_ext.slim.model_card (a test checks that they agree).
_SAVED_NAMES = frozenset({
    "config.json",
    "generation_config.json",  # transformers writes it for models that generate
    MODELING_FILE_NAME,
    "README.md",
    "kept_per_layer.svg",  # nn_prune_ext.slim.model_card.PICTURE_NAME
    "density.svg",  # the same picture, as earlier releases named it
})


def _written_by_saves(name: str) -> bool:
    """Whether a slim save owns the file `name` (writes it, or wrote it in an earlier release)."""
    return _is_weight_file(name) or name in _SAVED_NAMES


# ----- putting a saved folder in place without a moment of nothing -------------------------
# A save is written to `.slim-staging-<host>-<pid>-<random>` beside its target. Where the two cannot be swapped
# in one step, the folder it replaces is moved aside to `.slim-old-<host>-<pid>-<target name>`. The owner in
# the names lets a later save remove what a killed one left, and never what a live one writes; the lock a
# save holds on its staging folder covers a live owner whose pid this process cannot see (another container).
_STAGING = ".slim-staging-"
_BACKUP = ".slim-old-"
_LEFTOVER = re.compile(r"^\.slim-(staging|old)-(?P<host>[A-Za-z0-9_]+)-(?P<pid>\d+)-(?P<rest>.+)$")
_RENAME_EXCHANGE = 2  # linux/fs.h
# A folder that cannot be renamed where it is: a mount point (EBUSY) or another file system (EXDEV).
_UNMOVABLE = (errno.EBUSY, errno.EXDEV)
_SAVE_LOGGER = _std_logging.getLogger(__name__)


def _owner() -> str:
    host = re.sub(r"[^A-Za-z0-9]", "_", socket.gethostname())[:32] or "host"
    return f"{host}-{os.getpid()}"


def _checked_target(path: str) -> str:
    """The folder a save to `path` writes, checked before anything is written or moved.

    A link to a folder is followed: the folder it points to is replaced and the link stays a link.

    Args:
        path: The folder the user asked to save to; it may exist or not.

    Returns:
        The absolute path of that folder, links resolved.

    Raises:
        InputError: `path` is a file, a link to a file or to nothing, or lies below a file. Nothing is changed.
    """
    if os.path.islink(path) and not os.path.exists(path):
        raise _input_error(
            f"Cannot save a slim checkpoint to {path!r}: it is a link to {os.readlink(path)!r}, which does not "
            "exist. Pick a folder path, or remove the link; it was left as it is."
        )
    if os.path.exists(path) and not os.path.isdir(path):
        what = f"a link to the file {os.path.realpath(path)!r}" if os.path.islink(path) else "an existing file"
        raise _input_error(
            f"Cannot save a slim checkpoint to {path!r}: it is {what}, not a folder. Pick a folder path, or "
            "remove the file; it was left as it is."
        )
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.lexists(parent):  # ends at the root at the latest
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise _input_error(
            f"Cannot save a slim checkpoint to {path!r}: {parent!r} is a file, not a folder. Pick a folder path; "
            "the file was left as it is."
        )
    return os.path.realpath(path)


def _input_error(message: str) -> ValueError:
    """nn_prune_ext's `InputError` where it is installed; a copy loaded as remote code has only `ValueError`."""
    try:
        from nn_prune_ext.validation import InputError
    except ImportError:
        return ValueError(message)
    return InputError(message)


def _is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def _lock(folder: str) -> int | None:
    """Take an exclusive lock on `folder` for the time of a save.

    Returns:
        The descriptor holding the lock (close it to let go), or None where the system or file system has
        no such locks (the owner's pid in the folder name then protects it alone).
    """
    try:
        import fcntl

        descriptor = os.open(folder, os.O_RDONLY)
    except (ImportError, OSError):
        return None
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(descriptor)
        return None
    return descriptor


def _is_locked(path: str) -> bool:
    """Whether a process holds the lock of the folder `path` (a live save); False where that cannot be told."""
    try:
        import fcntl

        descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except (ImportError, OSError):
        return False
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(descriptor)  # also lets go of the lock just taken
    return False


def _stale_leftovers(parent: str) -> Iterator[tuple[str, str]]:
    """`(name, target name)` of the `.slim-*` entries in `parent` that saves of dead processes of this host left.

    A target name is given for folders a save moved aside (`.slim-old-*`), else None.
    """
    host = _owner().rsplit("-", 1)[0]
    try:
        names = sorted(os.listdir(parent))
    except OSError:
        return
    for name in names:
        match = _LEFTOVER.match(name)
        # Another host's pid says nothing here (a shared file system): its leftovers stay.
        if match is None or match["host"] != host or _is_alive(int(match["pid"])):
            continue
        if _is_locked(os.path.join(parent, name)):
            continue  # a live save whose pid this process does not see
        yield name, (match["rest"] if name.startswith(_BACKUP) else None)


def recover_interrupted_save(path: str | os.PathLike) -> bool:
    """Put back the checkpoint that a killed save had moved aside, where nothing is at `path`.

    Only a save on a system without the one-step exchange (not Linux, or a file system without it) can leave
    that: it moves the old folder to `.slim-old-<host>-<pid>-<name>` and the new one in its place, and a kill
    between the two renames leaves the path empty. Every save does this for its own path; a loader may call it
    before reading a path that is missing.

    Args:
        path: The checkpoint folder.

    Returns:
        Whether a folder was put back at `path`.
    """
    target = os.path.abspath(os.fspath(path))
    if os.path.lexists(target):
        return False
    parent, name = os.path.split(target)
    for leftover, moved_from in _stale_leftovers(parent):
        if moved_from == name:
            try:
                os.rename(os.path.join(parent, leftover), target)
            except OSError:
                return False
            return True
    return False


def _clean_stale_staging(parent: str) -> list[str]:
    """Remove what saves of dead processes of this host left in `parent`; put back a folder one moved aside.

    A save killed between its two renames left its target missing and the old folder under `.slim-old-...`:
    that folder is renamed back (a save that did not finish keeps the old checkpoint). A leftover that cannot
    be removed is reported with a warning; it does not stop the save.

    Args:
        parent: The folder beside the target (or the target itself, for a mount point).

    Returns:
        The names removed or restored.
    """
    handled = []
    for name, moved_from in _stale_leftovers(parent):
        path = os.path.join(parent, name)
        try:
            if moved_from is not None and not os.path.lexists(os.path.join(parent, moved_from)):
                os.rename(path, os.path.join(parent, moved_from))
            elif os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            else:
                os.remove(path)
        except OSError as error:
            _SAVE_LOGGER.warning("Could not remove %s, left by an earlier save that was stopped: %s", path, error)
            continue
        handled.append(name)
    return handled


def _exchange(first: str, second: str) -> bool:
    """Swap two folders in one step (Linux `renameat2(RENAME_EXCHANGE)`).

    Returns:
        True once swapped; False where that is not possible here (no such call, a file system without it,
        a mount point), and nothing was changed.

    Raises:
        OSError: Any other failure of the call.
    """
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_current_folder = -100  # AT_FDCWD
    if renameat2(at_current_folder, os.fsencode(first), at_current_folder, os.fsencode(second), _RENAME_EXCHANGE) == 0:
        return True
    error = ctypes.get_errno()
    if error in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, *_UNMOVABLE):
        return False  # the two renames, or file by file, do it
    raise OSError(error, os.strerror(error), second)


def _link_or_copy(source: str, destination: str) -> None:
    """Hard-link `source` to `destination` (nothing copied, and the old folder stays whole); copy where that fails."""
    try:
        os.link(source, destination, follow_symlinks=False)
    except OSError:
        shutil.copy2(source, destination, follow_symlinks=False)


def _keep_unwritten_files(target: str, staging: str, staged: set[str]) -> None:
    """Put into `staging` what the old folder holds and this save does not write (tokenizer, training state).

    Files a slim save owns are not kept: other shards of an earlier save would load along with the new
    ones, and a picture or generation config of an earlier save would describe another model.
    """
    for name in os.listdir(target):
        if name in staged or _written_by_saves(name) or _LEFTOVER.match(name):
            continue
        source, destination = os.path.join(target, name), os.path.join(staging, name)
        if os.path.isdir(source) and not os.path.islink(source):
            shutil.copytree(source, destination, symlinks=True, copy_function=_link_or_copy)
        else:
            _link_or_copy(source, destination)


def _move_into_place(staging: str, target: str) -> None:
    """Make the complete folder `staging` the folder `target`, so that `target` is always one whole checkpoint.

    A new target is one rename. An existing one first lends the files this save does not write, then is
    swapped with the staging folder in one step where the system can (Linux), else moved aside and back in
    place of the staged one; a save killed between those two renames is undone by the next save in that folder.
    A target that cannot be renamed (a mount point) has its files replaced one by one, `config.json` last.

    Args:
        staging: The folder this save wrote, beside `target`.
        target: The folder to replace or create (no link).

    Raises:
        OSError: The folder could not be put in place; `target` then holds what it held before.
    """
    if not os.path.lexists(target):
        try:
            os.rename(staging, target)
            return
        except OSError as error:
            if error.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
            # Another save put a folder there since: this one replaces it like any old folder.
    staged = set(os.listdir(staging))
    parent = os.path.dirname(target)
    if os.path.ismount(target) or os.stat(target).st_dev != os.stat(parent).st_dev:
        _replace_files(staging, target, staged)
        return
    _keep_unwritten_files(target, staging, staged)
    with contextlib.suppress(OSError):
        os.chmod(staging, os.stat(target).st_mode & 0o7777)  # the permissions chosen for the folder stay
    if _exchange(staging, target):
        shutil.rmtree(staging, ignore_errors=True)  # now the old folder; a kill here leaves it to the next save
        return
    backup = os.path.join(parent, f"{_BACKUP}{_owner()}-{os.path.basename(target)}")
    try:
        os.rename(target, backup)
    except OSError as error:
        if error.errno not in _UNMOVABLE:
            raise
        _replace_files(staging, target, staged)  # a mount point that `ismount` does not see (a bind mount)
        return
    try:
        os.rename(staging, target)
    except OSError:
        os.rename(backup, target)
        raise
    shutil.rmtree(backup, ignore_errors=True)


def _replace_files(staging: str, target: str, staged: set[str]) -> None:
    """Replace the files of `target` one by one (each `os.replace` is atomic), weights first, `config.json` last.

    The staged files are first moved into a staging folder inside `target` (copied where `target` is another
    file system), since a rename cannot cross into a mount point. The files of earlier saves that this
    one did not write (old weight shards, `density.svg`) are removed after.
    """
    inner = tempfile.mkdtemp(prefix=f"{_STAGING}{_owner()}-", dir=target)
    try:
        for name in staged:
            shutil.move(os.path.join(staging, name), os.path.join(inner, name))
        for name in sorted(staged, key=lambda name: name == "config.json"):
            os.replace(os.path.join(inner, name), os.path.join(target, name))
    finally:
        shutil.rmtree(inner, ignore_errors=True)
    for name in set(os.listdir(target)) - staged:
        if _written_by_saves(name):
            os.remove(os.path.join(target, name))


def stock_class_of(slim_class: type) -> type:
    """The stock model class a slim class extends."""
    for base in slim_class.__mro__[1:]:
        if not issubclass(base, SlimModelMixin):
            return base
    raise TypeError(f"{slim_class.__name__} does not extend a model class.")


def task_classes(stock: type) -> dict[str, type]:
    """The stock class of every auto class for `stock`'s model type (`{"AutoModel": BertModel, ...}`).

    A slim checkpoint maps all of them, so that it loads for any task, like a stock checkpoint
    (a slim sentence encoder saved as `AutoModel` can be fine-tuned for classification).
    """
    import transformers

    model_type = stock.config_class.model_type
    classes = {}
    for name in dir(transformers):
        if not name.startswith("AutoModel"):
            continue
        names = getattr(getattr(getattr(transformers, name, None), "_model_mapping", None), "_model_mapping", None)
        class_name = names.get(model_type) if isinstance(names, dict) else None
        model_class = getattr(transformers, class_name, None) if isinstance(class_name, str) else None
        if isinstance(model_class, type):
            classes[name] = model_class
    return classes


def auto_map_for(slim_class: type) -> dict[str, str]:
    """`auto_map` entries pointing every auto class of the model type at a slim class of this file."""
    return {
        name: f"{MODELING_MODULE_NAME}.{SLIM_CLASS_PREFIX}{model_class.__name__}"
        for name, model_class in sorted(task_classes(stock_class_of(slim_class)).items())
    }


def template_source() -> str:
    """The source of this file without any checkpoint-specific part."""
    with open(__file__, encoding="utf-8") as handle:
        source = handle.read()
    marker = source.find("\n" + GENERATED_MARKER)
    return source if marker < 0 else source[: marker + 1]


def write_modeling_file(slim_class: type, directory: str) -> str:
    """Write this file, plus the slim classes of `slim_class`'s checkpoint, into `directory`."""
    import transformers

    stocks = [stock_class_of(slim_class)]
    if getattr(transformers, stocks[0].__name__, None) is not stocks[0]:
        raise TypeError(
            f"{stocks[0].__name__} is not a class of the transformers package, so a checkpoint loading it "
            "through trust_remote_code cannot import it. Save the weights with torch/safetensors instead."
        )
    stocks = sorted({*stocks, *task_classes(stocks[0]).values()}, key=lambda cls: cls.__name__)
    lines = [GENERATED_MARKER, f"from transformers import {', '.join(s.__name__ for s in stocks)}", ""]
    for stock in stocks:
        lines += ["", f"class {SLIM_CLASS_PREFIX}{stock.__name__}(SlimModelMixin, {stock.__name__}):", "    pass", ""]
    path = os.path.join(directory, MODELING_FILE_NAME)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(template_source() + "\n".join(lines))
    return path
