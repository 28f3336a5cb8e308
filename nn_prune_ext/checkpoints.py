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

import json
import os
from pathlib import Path

import transformers
from safetensors import safe_open
from torch import nn

from .args import SparseArgs
from .patch import patch_model, set_thresholds
from .slim import load_slim
from .slim.classes import hub_kwargs
from .slim.modeling_slim import is_slim_config
from .trainer import MASK_SCORES_NAME, SCORES_MARKER, SPARSE_STATE_NAME

__all__ = ["load_for_slimming"]



def _model_class(config, path: Path) -> type:
    name = (getattr(config, "architectures", None) or [None])[0]
    model_class = getattr(transformers, name, None) if name else None
    if model_class is None:
        raise ValueError(
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
        raise FileNotFoundError(f"{path} holds no .safetensors weights (nn_prune_ext loads no pickled weights).")
    scores = {}
    for file in files:
        with safe_open(str(file), "pt") as handle:
            scores.update({key: handle.get_tensor(key) for key in handle.keys() if SCORES_MARKER in key})
    return scores


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
        raise FileNotFoundError(
            f"{path} is not a checkpoint folder (no config.json there). Give the folder that save_pretrained or "
            "SparseTrainer wrote; download a Hub model first (e.g. `hf download NAME --local-dir DIR`)."
        )
    config = transformers.AutoConfig.from_pretrained(path, **hub_kwargs(from_pretrained_kwargs))
    from_pretrained_kwargs.setdefault("use_safetensors", True)
    if is_slim_config(config):
        model = load_slim(path, **from_pretrained_kwargs)
    else:
        model = _model_class(config, path).from_pretrained(path, **from_pretrained_kwargs)
    scores = _saved_scores(path)
    state_file = path / SPARSE_STATE_NAME
    if not state_file.is_file():
        if not scores:
            return model.eval()
        raise ValueError(
            f"{path} holds mask scores but no {SPARSE_STATE_NAME}, so the SparseArgs they were trained with are "
            "unknown. Patch the model with those SparseArgs, load the state dict, then call optimize_model."
        )
    sparse_args = SparseArgs(**json.loads(state_file.read_text())["sparse_args"])
    patch_model(model, sparse_args)
    missing, unexpected = model.load_state_dict(scores, strict=False)
    expected = {key for key in model.state_dict() if SCORES_MARKER in key}
    if unexpected or expected - set(scores):
        raise ValueError(
            f"The mask scores in {path} do not match the model patched with its {SPARSE_STATE_NAME}: "
            f"unexpected {sorted(unexpected)[:3]}, missing {sorted(expected - set(scores))[:3]}."
        )
    set_thresholds(model, *sparse_args.final_thresholds())
    return model.eval()
