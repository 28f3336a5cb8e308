"""The registry of architecture layouts: `model_type` -> `ArchitectureLayout`."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from torch import nn

from .layout import ArchitectureLayout
from ..validation import InputError

__all__ = [
    "UnsupportedArchitectureError", "register_layout", "refuse_model_type", "get_layout", "supported_model_types",
]


class UnsupportedArchitectureError(InputError):
    """Raised when a model's `model_type` has no registered layout."""


_REGISTRY: dict[str, ArchitectureLayout] = {}
# Layouts that serve only the configs with a given value (`ArchitectureLayout.when`), per model_type.
_VARIANTS: dict[str, list[ArchitectureLayout]] = {}
# Layouts derived from a model's tensor-parallel plan and checked (`fallback`), and the reasons
# derivation failed, per model class and config (`_fingerprint`): each is checked once per process.
# `_DERIVED_BY_TYPE` answers lookups by a bare model_type string with the latest derived layout.
_DERIVED: dict[tuple, ArchitectureLayout] = {}
_REFUSED: dict[tuple, str] = {}
_DERIVED_BY_TYPE: dict[str, ArchitectureLayout] = {}
# Model types known not to fit the architecture model, with the reason (no fallback is tried for them).
_KNOWN_UNSUPPORTED: dict[str, str] = {}


# Config entries a derived layout and its check do not depend on: the sizes the check's tiny copy
# replaces (`fallback._tiny_config`), and bookkeeping that saving, loading or a task head changes.
_UNFINGERPRINTED = frozenset({
    "hidden_size", "num_attention_heads", "num_key_value_heads", "intermediate_size", "head_dim",
    "num_hidden_layers", "vocab_size", "_name_or_path", "architectures", "transformers_version", "_commit_hash",
    "dtype", "torch_dtype", "id2label", "label2id", "problem_type", "finetuning_task", "use_cache",
    "output_attentions", "output_hidden_states", "return_dict",
})


def _config_digest(config: Any) -> str:
    """A stable hash of the config entries a derived layout can depend on.

    A slim config is hashed as the config of the dense model it was cut from (`dense_config`), so a
    slim model, saved and loaded or not, keeps the layout its dense model was slimmed with.
    """
    # Imported here: the slim package builds on this one.
    from ..slim.modeling_slim import dense_config, is_slim_config

    settings = (dense_config(config) if is_slim_config(config) else config).to_dict()
    relevant = {name: value for name, value in settings.items() if name not in _UNFINGERPRINTED}
    text = json.dumps(relevant, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _fingerprint(model: nn.Module) -> tuple:
    """What a derived layout depends on: the base model's class, the model type, the plan and the config.

    The base model's class, not the model's: slimming swaps the task class for a slim one, and the
    layout of the slim model must be the one its dense model was slimmed with. The config, not only
    the plan: a setting such as per-head q/k norms changes whether the derived layout slims exactly.

    Returns:
        `(base model class, model_type, plan, config digest)`; `register_layout` reads `key[1]`.
    """
    config = model.config
    plan = json.dumps(getattr(config, "base_model_tp_plan", None) or {}, sort_keys=True)
    return (type(getattr(model, "base_model", model)).__qualname__, config.model_type, plan, _config_digest(config))


def register_layout(layout: ArchitectureLayout, *, overwrite: bool = False) -> ArchitectureLayout:
    """Register `layout` for each of its `model_types`.

    Args:
        layout: The layout to register.
        overwrite: Replace an existing layout for the same `model_type` instead of raising.

    Returns:
        The registered layout.
    """
    if layout.when is not None:
        for model_type in layout.model_types:
            variants = _VARIANTS.setdefault(model_type, [])
            clash = [variant for variant in variants if variant.when == layout.when]
            if clash and not overwrite:
                raise InputError(
                    f"A layout for model_type {model_type!r} with {layout.when} is already registered; pass "
                    "overwrite=True to replace it."
                )
            variants[:] = [variant for variant in variants if variant.when != layout.when] + [layout]
        return layout
    for model_type in layout.model_types:
        if model_type in _REGISTRY and not overwrite:
            raise InputError(
                f"A layout for model_type {model_type!r} is already registered; pass overwrite=True to replace it."
            )
    for model_type in layout.model_types:
        _REGISTRY[model_type] = layout
        _DERIVED_BY_TYPE.pop(model_type, None)
        for cache in (_DERIVED, _REFUSED):
            for key in [key for key in cache if key[1] == model_type]:
                del cache[key]
    return layout


def refuse_model_type(model_type: str, reason: str) -> None:
    """Record why models of `model_type` cannot be pruned, for the error `get_layout` raises for them.

    A layout registered later for the type takes precedence.
    """
    _KNOWN_UNSUPPORTED[model_type] = reason


def supported_model_types() -> list[str]:
    """The `model_type` values that have a registered layout, sorted."""
    return sorted(_REGISTRY)


def get_layout(model_or_type: nn.Module | str) -> ArchitectureLayout:
    """Return the layout of a model, a config or a `model_type` string.

    A model of an unregistered type gets a layout derived from its config's `base_model_tp_plan`
    when slimming a tiny copy of the model with it gives exactly the masked model's outputs
    (`nn_prune_ext.arch.fallback`); the check runs once per model class and config (`_fingerprint`).

    Args:
        model_or_type: A model, a config or a `model_type` string. Only a model can get a derived
            layout; a config or a string gets the latest layout derived for its type, if any.

    Returns:
        The registered layout of the type (the variant matching the config, where there are several),
        or the derived one.

    Raises:
        UnsupportedArchitectureError: If no layout is registered for the model type and none could
            be derived; the message names the supported types and how to register a new one.
    """
    if isinstance(model_or_type, str):
        model_type = model_or_type
    else:
        config = getattr(model_or_type, "config", model_or_type)
        model_type = getattr(config, "model_type", None)
        if not isinstance(model_type, str):  # a plain nn.Module, a number: "model_type None" would say little
            raise UnsupportedArchitectureError(
                f"nn_prune_ext needs a transformers model (or its config, or a model_type name such as 'bert'), got "
                f"{type(model_or_type).__name__}, which has no config.model_type. Supported: "
                f"{', '.join(supported_model_types())}; describe another transformers model type with "
                "nn_prune_ext.register_layout(ArchitectureLayout(...))."
            )
    layout = _REGISTRY.get(model_type)
    if layout is not None and model_type in _VARIANTS and not isinstance(model_or_type, str):
        config = getattr(model_or_type, "config", model_or_type)
        layout = next(
            (variant for variant in _VARIANTS[model_type] if getattr(config, variant.when[0], None) == variant.when[1]),
            layout,
        )
    if layout is None and model_type in _KNOWN_UNSUPPORTED:
        raise UnsupportedArchitectureError(
            f"nn_prune_ext cannot prune model_type {model_type!r}: {_KNOWN_UNSUPPORTED[model_type]}. Supported: "
            f"{', '.join(supported_model_types())}."
        )
    derivable = isinstance(model_or_type, nn.Module) and hasattr(model_or_type, "config") and model_type is not None
    key = _fingerprint(model_or_type) if layout is None and derivable else None
    if layout is None and key is None:
        layout = _DERIVED_BY_TYPE.get(model_type)
    if layout is None and key is not None:
        layout = _DERIVED.get(key)
        if layout is None and key not in _REFUSED:
            from .fallback import FallbackError, verified_layout

            try:
                layout = _DERIVED[key] = _DERIVED_BY_TYPE[model_type] = verified_layout(model_or_type)
            except FallbackError as error:
                # Only a refusal of the layout itself is kept; any other error (out of memory, an
                # interrupt) propagates and the next call derives afresh.
                _REFUSED[key] = str(error)
    if layout is None:
        reason = f" and could not derive one: {_REFUSED[key]}" if key in _REFUSED else ""
        raise UnsupportedArchitectureError(
            f"nn_prune_ext has no layout for model_type {model_type!r}{reason}. Supported: "
            f"{', '.join(supported_model_types())}. To add one, describe where its attention and FFN "
            "projections live with nn_prune_ext.register_layout(ArchitectureLayout(model_types=(...), "
            "layers=..., query=..., key=..., value=..., output=..., ffn_up=..., ffn_down=...)); "
            "see nn_prune_ext/arch/families.py for the built-in ones."
        )
    return layout
