"""Load any checkpoint nn_prune_ext meets, ready for `optimize_model`.

Three kinds of folders are handled:
- a slim checkpoint (its config carries `nn_prune_slim`): loaded with `load_slim`;
- a `SparseTrainer` checkpoint of a model still patched (it holds `sparse_state.json` and the
  `mask_scores` of every group): the stock model is loaded, patched with the saved `SparseArgs`,
  given its scores and set to the final threshold, so that baking uses the masks evaluation used;
- any other checkpoint of a registered architecture (baked, or zero-filled like nn_pruning's
  hybrid-filled models): loaded with its stock class.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path

import transformers
from safetensors import SafetensorError, safe_open
from torch import nn

from .patch import patch_model, set_thresholds
from .slim import load_slim
from .slim.classes import hub_kwargs, slim_class_for
from .slim.modeling_slim import SLIM_CLASS_PREFIX, is_slim_config
from .sparse_state import SPARSE_STATE_NAME, read_sparse_state, saved_sparse_args
from .trainer import MASK_SCORES_NAME, SCORES_MARKER
from .transformers_internals import unreported_extra_keys
from .validation import InputError, NonFiniteError, first_non_finite

__all__ = ["load_for_slimming"]


def _model_class(config, path: Path) -> type:
    """The stock class the checkpoint was saved from (a slim checkpoint names its slim class: `Slim<stock>`)."""
    name = (getattr(config, "architectures", None) or [None])[0]
    if name and is_slim_config(config) and name.startswith(SLIM_CLASS_PREFIX):
        name = name[len(SLIM_CLASS_PREFIX) :]
    model_class = getattr(transformers, name, None) if name else None
    if model_class is None:
        raise InputError(
            f"{path}/config.json names no transformers class in 'architectures' ({name!r}); load the model "
            "yourself and call nn_prune_ext.optimize_model on it."
        )
    return model_class


def _saved_scores(path: Path) -> dict:
    """The mask scores of a checkpoint: from `mask_scores.safetensors` (under the model's own parameter
    names) when `SparseTrainer` wrote one, else from the weight files (checkpoints of older versions)."""
    own = path / MASK_SCORES_NAME
    files = [own] if own.is_file() else sorted(path.glob("*.safetensors"))
    if not files:
        raise InputError(f"{path} holds no .safetensors weights (nn_prune_ext loads no pickled weights).")
    scores = {}
    for file in files:
        try:
            with safe_open(str(file), "pt") as handle:
                scores.update({key: handle.get_tensor(key) for key in handle.keys() if SCORES_MARKER in key})
        except SafetensorError as error:
            raise InputError(f"{file} is not a readable safetensors file ({error}): the checkpoint is damaged.") from None
    return scores


def _check_saved_scores(path: Path, model: nn.Module, scores: dict) -> None:
    """Refuse saved scores that do not fit the model patched with the checkpoint's own `SparseArgs`.

    Checked before `load_state_dict`, whose size-mismatch error would not say which file disagrees.
    """
    expected = {key: tensor.shape for key, tensor in model.state_dict().items() if SCORES_MARKER in key}
    unexpected, missing = sorted(set(scores) - set(expected)), sorted(set(expected) - set(scores))
    if unexpected or missing:
        raise InputError(
            f"The mask scores in {path} do not match the model patched with its {SPARSE_STATE_NAME}: "
            f"unexpected {unexpected[:3]}, missing {missing[:3]}. The checkpoint's files come from different runs."
        )
    mismatched = [
        f"{key}: saved {tuple(scores[key].shape)}, expected {tuple(shape)}"
        for key, shape in expected.items()
        if tuple(scores[key].shape) != tuple(shape)
    ]
    if mismatched:
        raise InputError(
            f"The mask scores in {path} have other shapes than the block sizes of its {SPARSE_STATE_NAME} give "
            f"({'; '.join(mismatched[:3])}). The checkpoint's files come from different runs or were edited."
        )
    bad = first_non_finite(scores.items())
    if bad is not None:
        raise NonFiniteError(f"The mask score {bad} in {path} holds NaN or infinite values; its masks would be arbitrary.")


def load_for_slimming(path: str | os.PathLike, **from_pretrained_kwargs) -> nn.Module:
    """Load the checkpoint folder at `path` so that `optimize_model` can slim it.

    Args:
        path: A local checkpoint folder: slim, a patched `SparseTrainer` checkpoint (of a dense or
            of a slim model), baked or zero-filled.
        **from_pretrained_kwargs: Passed to `from_pretrained`.

    Returns:
        The model, in eval mode; patched (with its final thresholds) for a patched checkpoint.
    """
    path = Path(path)
    if not (path / "config.json").is_file():
        raise InputError(
            f"{path} is not a checkpoint folder (no config.json there). Give the folder that save_pretrained or "
            "SparseTrainer wrote; download a Hub model first (e.g. `hf download NAME --local-dir DIR`)."
        )
    config = transformers.AutoConfig.from_pretrained(path, **hub_kwargs(from_pretrained_kwargs))
    from_pretrained_kwargs.setdefault("use_safetensors", True)
    model_class = _model_class(config, path)
    state_file = path / SPARSE_STATE_NAME
    # A patched checkpoint's weight files hold its mask scores too; the stock model has no parameter for them
    # and transformers would report them as UNEXPECTED, though they are read below. Other entries still are.
    expected_scores = (
        unreported_extra_keys(slim_class_for(model_class) if is_slim_config(config) else model_class,
                              re.escape(SCORES_MARKER))
        if state_file.is_file() else contextlib.nullcontext()
    )
    with expected_scores:
        if is_slim_config(config):
            model = load_slim(path, model_class=model_class, **from_pretrained_kwargs)
        else:
            model = model_class.from_pretrained(path, **from_pretrained_kwargs)
    scores = _saved_scores(path)
    if not state_file.is_file():
        if not scores:
            return model.eval()
        raise InputError(
            f"{path} holds mask scores but no {SPARSE_STATE_NAME}, so the SparseArgs they were trained with are "
            "unknown. Patch the model with those SparseArgs, load the state dict, then call optimize_model."
        )
    sparse_args = saved_sparse_args(read_sparse_state(state_file), state_file)
    patch_model(model, sparse_args)
    _check_saved_scores(path, model, scores)
    model.load_state_dict(scores, strict=False)
    set_thresholds(model, *sparse_args.final_thresholds())
    return model.eval()
