"""Every reliance of nn_prune_ext on a transformers internal, in one place.

transformers moves its private calling conventions between minor releases (5.24 renamed the cache
keyword that layers pass to their attention from `past_key_values` to `cache`). Code elsewhere in
nn_prune_ext asks this module instead of touching such details itself, and
`tests/test_transformers_internals.py` fails as soon as one of them moves (EmptyAttention's
output format and cache lengths are checked end to end by `tests/test_slim_optimize.py`:
attention weights per layer, cached decoding through a layer without heads).

What is relied on, and where:

- **How a model calls its layers** (`layer_input`, `with_layer_input`, `layer_output`,
  `output_form`, `output_like`): a layer's hidden states are its first positional argument or its
  `hidden_states` keyword, and it returns them either as a tensor or as the first element of a
  tuple; the model calls each layer once per forward, in order. Used by
  `posttrain.layer_runner`, which lets the model's own forward call each layer and only swaps that
  layer's input, so nothing else of the call (masks, caches, position embeddings, per-layer
  attention types) is captured or replayed; it runs without a key/value cache (`no_cache`).
- **Building a model from a config with a dtype and an attention implementation**
  (`build_model`): `PreTrainedModel._from_config`, the classmethod behind `AutoModel.from_config`.
- **The attention implementation a model runs** (`attention_implementation`):
  `config._attn_implementation`.
- **`Trainer` hooks** that `SparseTrainer` overrides by name: `_save` (every save goes through it),
  `call_model_init`, `create_optimizer`, `compute_loss(..., num_items_in_batch)`, `training_step`
  (returns the micro-batch loss), `evaluation_loop` and `log(logs, start_time)`; and how a Trainer
  learns that `compute_loss` returns a per-batch mean (`loss_is_per_batch_mean`).
- **How a Trainer writes a checkpoint** (`training_checkpoints`, `SparseTrainer._save_checkpoint`):
  `_save_checkpoint(model, trial)` writes every file of `checkpoint-<global_step>` under the folder
  `_get_output_dir(trial)` returns, `trainer_state.json` last, then rotates old checkpoints; the
  folder prefix `PREFIX_CHECKPOINT_DIR` and `rotate_checkpoints` of `transformers.trainer_utils`
  (`rotate_checkpoints` here). The callbacks `on_pre_optimizer_step` / `on_optimizer_step` run
  around each optimizer step (`non_finite`).
- **The slim modeling file** (`slim/modeling_slim.py`) ships inside every slim checkpoint and may
  import only torch and transformers, so it keeps its own few: the heterogeneous-config API
  (`per_layer_config`, `is_heterogeneous`, `allow_global_per_layer_attribute_access`, the logger
  of `transformers.integrations.heterogeneity`), the auto classes' `_model_mapping`,
  `PreTrainedModel._init_weights` and `initialize_weights` (run with the dense sizes readable: the
  stock initialisation may read them), `config._attn_implementation`; and for `EmptyAttention`: an
  attention module returns `(output, weights)` and transformers records attention weights by
  attention class; a decoder layer hands its attention a `Cache` (found by type, not by keyword),
  `Cache.update(keys, values, layer_idx)`, an encoder-decoder cache's `self_attention_cache`; the
  model reads the cached length from the first layer's entry, and an entry without elements
  counts as empty.
- **Per-layer model state**: attention modules' `layer_idx` (their KV-cache entry) and the config's
  `layer_types` (`slim/layers.py`, `posttrain/latency.py`); the attention attributes holding head
  counts (`ArchitectureLayout.attention_attrs`, e.g. Llama's `num_key_value_groups`); a config
  keeps its state in its `__dict__` (`slim.layers.layers_removed` restores it from there).
- **Activations by name**: `transformers.activations.ACT2FN` (`slim/optimize.py`).
- **Checkpoint entries a load expects** (`unreported_extra_keys`, `checkpoints.load_for_slimming`):
  `from_pretrained` leaves out of its LOAD REPORT the unexpected entries matching the patterns of
  the model class attribute `_keys_to_ignore_on_load_unexpected`, which `post_init` copies onto
  each new instance from its class.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

import torch
from torch import nn

__all__ = [
    "HIDDEN_STATES_KEYWORD",
    "layer_input",
    "with_layer_input",
    "layer_output",
    "output_form",
    "output_like",
    "no_cache",
    "build_model",
    "attention_implementation",
    "loss_is_per_batch_mean",
    "rotate_checkpoints",
    "IGNORED_UNEXPECTED_KEYS",
    "unreported_extra_keys",
]

# The keyword under which a layer takes its hidden states when they are not passed positionally.
HIDDEN_STATES_KEYWORD = "hidden_states"


def layer_input(args: tuple, kwargs: dict[str, Any]) -> torch.Tensor:
    """The hidden states a layer was called with (as seen by a forward pre-hook with kwargs).

    Raises:
        RuntimeError: If the call has neither a positional argument nor `hidden_states`.
    """
    if args:
        return args[0]
    if HIDDEN_STATES_KEYWORD in kwargs:
        return kwargs[HIDDEN_STATES_KEYWORD]
    raise RuntimeError(
        "A transformer layer was called without hidden states as its first positional argument or as "
        f"`{HIDDEN_STATES_KEYWORD}=`: this version of transformers calls its layers differently than "
        "nn_prune_ext expects (see nn_prune_ext/transformers_internals.py)."
    )


def with_layer_input(args: tuple, kwargs: dict[str, Any], hidden: torch.Tensor) -> tuple[tuple, dict[str, Any]]:
    """The same layer call with `hidden` in place of its hidden states (a forward pre-hook's return value)."""
    layer_input(args, kwargs)  # the clear error when the convention moved
    if args:
        return (hidden, *args[1:]), kwargs
    return args, {**kwargs, HIDDEN_STATES_KEYWORD: hidden}


def layer_output(output: Any) -> torch.Tensor:
    """The hidden states a layer returned: the output itself, or the first element of a tuple."""
    hidden = output[0] if isinstance(output, (tuple, list)) else output
    if not isinstance(hidden, torch.Tensor):
        raise RuntimeError(
            f"A transformer layer returned {type(output).__name__}, not hidden states or a tuple starting with "
            "them: this version of transformers returns layer outputs differently than nn_prune_ext expects "
            "(see nn_prune_ext/transformers_internals.py)."
        )
    return hidden


def output_form(output: Any) -> tuple[type, tuple] | None:
    """What a layer output holds besides its hidden states.

    Returns:
        `None` for a plain tensor; for a tuple or list, its type and its other entries (e.g. a
        position bias that later layers read).
    """
    layer_output(output)  # the clear error when the convention moved
    if isinstance(output, (tuple, list)):
        return type(output), tuple(output[1:])
    return None


def output_like(form: tuple[type, tuple] | None, hidden: torch.Tensor) -> Any:
    """A layer output of `form` (from `output_form`) with `hidden` as its hidden states."""
    if form is None:
        return hidden
    kind, rest = form
    return kind((hidden, *rest))


def no_cache(model: nn.Module) -> dict[str, Any]:
    """Forward keyword arguments that keep a model from building a key/value cache.

    `use_cache=False` for models whose config has `use_cache` (their forward takes it), nothing
    for the others.
    """
    return {"use_cache": False} if getattr(getattr(model, "config", None), "use_cache", None) is not None else {}


def build_model(model_class: type, config: Any, **kwargs: Any) -> nn.Module:
    """A randomly initialised `model_class` from `config`.

    Args:
        model_class: A `PreTrainedModel` subclass.
        config: Its config.
        **kwargs: `dtype`, `attn_implementation` and the other options of `AutoModel.from_config`.
    """
    return model_class._from_config(config, **kwargs)


def attention_implementation(config: Any) -> str | None:
    """The attention implementation a model with `config` runs (`"eager"`, `"sdpa"`, ...)."""
    return getattr(config, "_attn_implementation", None)


def loss_is_per_batch_mean(trainer: Any) -> None:
    """Tell a `Trainer` that its `compute_loss` returns a per-batch mean.

    The Trainer then divides the loss by the gradient-accumulation steps itself. transformers 5.19
    and later read the `loss_is_scaled_for_ga` attribute; earlier releases divide when
    `model_accepts_loss_kwargs` is False.
    """
    if hasattr(type(trainer), "loss_is_scaled_for_ga"):
        trainer.loss_is_scaled_for_ga = False
    else:
        trainer.model_accepts_loss_kwargs = False


def rotate_checkpoints(run_dir: str, save_total_limit: int | None, best_model_checkpoint: str | None) -> None:
    """Delete the oldest `checkpoint-N` folders of `run_dir` beyond `save_total_limit`, as the Trainer does.

    `SparseTrainer` calls it after renaming a staged checkpoint into place (the Trainer rotated the staging
    folder, which holds just that one).
    """
    from transformers.trainer_utils import rotate_checkpoints as rotate

    rotate(
        output_dir=run_dir,
        save_total_limit=save_total_limit,
        best_model_checkpoint=best_model_checkpoint,
        use_mtime=True,
    )


# The model class attribute whose regular expressions name the checkpoint entries that `from_pretrained`
# expects to find without a parameter to load them into (it reports the others as UNEXPECTED).
IGNORED_UNEXPECTED_KEYS = "_keys_to_ignore_on_load_unexpected"


@contextmanager
def unreported_extra_keys(model_class: type, pattern: str) -> Iterator[None]:
    """Inside, `model_class.from_pretrained` does not report checkpoint entries matching `pattern` as UNEXPECTED.

    transformers 5 logs a LOAD REPORT listing every checkpoint entry the model has no parameter for;
    for entries nn_prune_ext reads itself (the mask scores of a patched checkpoint) that reads like a
    failure. Nothing else changes: the entries are not loaded either way, and missing weights, other
    unexpected entries and shape mismatches are reported as before.

    The pattern is added to `model_class`'s own attribute for the duration of the block (a new
    instance copies it in `post_init`, so `model_class` must be the class `from_pretrained` builds,
    not a base class) and the attribute is restored afterwards, also when loading fails.

    Args:
        model_class: The class whose `from_pretrained` runs inside the block.
        pattern: A regular expression, searched in each checkpoint entry's name.
    """
    missing = object()
    own = model_class.__dict__.get(IGNORED_UNEXPECTED_KEYS, missing)
    inherited = getattr(model_class, IGNORED_UNEXPECTED_KEYS, None) or ()
    setattr(model_class, IGNORED_UNEXPECTED_KEYS, [*inherited, pattern])
    try:
        yield
    finally:
        if own is missing:
            delattr(model_class, IGNORED_UNEXPECTED_KEYS)
        else:
            setattr(model_class, IGNORED_UNEXPECTED_KEYS, own)
