"""Slim classes for any stock model class, and loading slim checkpoints without remote code."""

from __future__ import annotations

import os
import re

import transformers
from torch import nn

from . import modeling_slim
from ..validation import InputError

__all__ = ["slim_class_for", "stock_class", "load_slim"]

_SLIM_CLASSES: dict[type, type] = {}


def slim_class_for(model_class: type) -> type:
    """The slim variant of a stock model class (`BertModel` -> `SlimBertModel`).

    The class comes from nn_prune_ext's own copy of the slim modeling file, the same code a saved
    checkpoint carries, so models built here and models loaded as remote code behave alike.
    """
    if issubclass(model_class, modeling_slim.SlimModelMixin):
        return model_class
    if model_class not in _SLIM_CLASSES:
        name = f"{modeling_slim.SLIM_CLASS_PREFIX}{model_class.__name__}"
        _SLIM_CLASSES[model_class] = type(
            name,
            (modeling_slim.SlimModelMixin, model_class),
            {"__module__": modeling_slim.__name__, "__doc__": f"{model_class.__name__} with per-layer sizes."},
        )
        # Importable by name (e.g. for pickling), unless another class of that name is there already.
        if not hasattr(modeling_slim, name):
            setattr(modeling_slim, name, _SLIM_CLASSES[model_class])
    return _SLIM_CLASSES[model_class]


_HUB_KWARGS = ("subfolder", "revision", "token", "cache_dir", "local_files_only", "force_download", "proxies")


def hub_kwargs(kwargs: dict) -> dict:
    """The `from_pretrained` keyword arguments that say where the files are (for the config too)."""
    return {key: kwargs[key] for key in _HUB_KWARGS if key in kwargs}


def stock_class(model_class: type) -> type:
    """The stock class of a slim class; any other class is returned unchanged.

    Slim classes loaded with `trust_remote_code` come from the checkpoint's own copy of the
    modeling file, so they are recognised by their mixin's name, not by `issubclass`.
    """
    if issubclass(model_class, modeling_slim.SlimModelMixin):
        return modeling_slim.stock_class_of(model_class)
    if any(base.__name__ == modeling_slim.SlimModelMixin.__name__ for base in model_class.__mro__):
        return next(base for base in model_class.__mro__ if getattr(transformers, base.__name__, None) is base)
    return model_class


# What the Hub accepts as a repository id: "name" or "namespace/name".
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")


def _check_local_path(path: str | os.PathLike, subfolder: str = "") -> None:
    """Refuse a path that names no local checkpoint folder and cannot be a Hub id either.

    Left to transformers, such a path fails with "Repo id must be in the form ...", which does not say the
    folder is missing.

    Raises:
        InputError: If `path` (or `subfolder`) is not a str or os.PathLike, is a file, a folder without
            config.json, or a missing folder that cannot be a Hub id.
    """
    for name, value in (("path", path), ("subfolder", subfolder)):
        if not isinstance(value, (str, os.PathLike)):  # a loaded model, None: os.stat's TypeError says nothing
            hint = " (it is loaded already)" if isinstance(value, nn.Module) else ""
            raise InputError(
                f"load_slim: {name} must be a folder (str or os.PathLike) that save_pretrained wrote, or a Hub id, "
                f"got {type(value).__name__}{hint}."
            )
    if os.path.isdir(path) and subfolder:
        path = os.path.join(path, subfolder)
    text = os.fspath(path)
    if os.path.isdir(text):
        if not os.path.isfile(os.path.join(text, "config.json")):
            raise InputError(f"{text} holds no config.json, so it is not a checkpoint folder.")
        return
    if os.path.exists(text):
        raise InputError(f"{text} is a file; give the checkpoint folder that save_pretrained wrote.")
    if not _HUB_ID.match(text):
        raise InputError(f"There is no folder {text!r}; give the folder that save_pretrained wrote (or a Hub id).")


def load_slim(path: str | os.PathLike, model_class: type | None = None, **kwargs) -> nn.Module:
    """Load a slim checkpoint with nn_prune_ext's slim classes, without running its remote code.

    Args:
        path: A folder written by a slim model's `save_pretrained` (or a Hub id).
        model_class: The stock class to load as (e.g. `BertForSequenceClassification`); by default
            the class the checkpoint was saved from.
        **kwargs: Passed to `from_pretrained` (`torch_dtype`, `device_map`, ...).

    Returns:
        The slim model.

    Raises:
        InputError: If `path` names no checkpoint folder (not a path, missing, a file, no config.json) and
            cannot be a Hub id, the checkpoint is not slim, or `model_class` is not a transformers model class.
    """
    if model_class is not None and not (
        isinstance(model_class, type) and issubclass(model_class, transformers.PreTrainedModel)
    ):
        raise InputError(
            f"load_slim: model_class must be a transformers model class such as BertForSequenceClassification, "
            f"got {model_class!r}; or leave it out to load the class the checkpoint was saved from."
        )
    _check_local_path(path, kwargs.get("subfolder") or "")
    config = transformers.AutoConfig.from_pretrained(path, **hub_kwargs(kwargs))
    if not modeling_slim.is_slim_config(config):
        raise InputError(
            f"{path} is not a slim checkpoint (its config has no '{modeling_slim.SLIM_SPEC_KEY}'); load it "
            "with the usual AutoModel classes, or slim it first with nn_prune_ext.optimize_model."
        )
    if model_class is None:
        saved = (getattr(config, "architectures", None) or [""])[0]
        name = saved[len(modeling_slim.SLIM_CLASS_PREFIX) :] if saved.startswith(modeling_slim.SLIM_CLASS_PREFIX) else saved
        model_class = getattr(transformers, name, None)
        if model_class is None:
            raise InputError(f"Cannot tell which class {path} was saved from ({saved!r}); pass model_class=...")
    kwargs.setdefault("use_safetensors", True)
    return slim_class_for(model_class).from_pretrained(path, config=config, **kwargs)
