"""`load_for_slimming`: what loading a patched SparseTrainer checkpoint prints.

transformers 5 logs a LOAD REPORT for checkpoint entries the model has no parameter for. The mask
scores of a patched checkpoint are such entries, read by `load_for_slimming` itself: they must not
be reported (issue 15), while a genuinely missing weight or a stray entry still is.
"""

from __future__ import annotations

import logging

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import BertForSequenceClassification
from transformers.utils import logging as hf_logging

from nn_prune_ext import SparseArgs, SparseTrainer, is_patched, iter_mask_scores, optimize_model
from nn_prune_ext.checkpoints import load_for_slimming
from nn_prune_ext.slim.classes import slim_class_for
from nn_prune_ext.trainer import MASK_SCORES_NAME, SCORES_MARKER
from nn_prune_ext.transformers_internals import IGNORED_UNEXPECTED_KEYS

from conftest import tiny_model
from slim_helpers import masked_model
from test_trainer import training_args


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def printed(capfd):
    """What loading prints: transformers' log records (at its default verbosity, warnings) and stdout/stderr."""
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_warning()  # the default, whatever the environment set
    records = _Records()
    logging.getLogger("transformers").addHandler(records)
    capfd.readouterr()

    def read() -> str:
        out, err = capfd.readouterr()
        return "\n".join([*records.messages, out, err])

    yield read
    logging.getLogger("transformers").removeHandler(records)
    hf_logging.set_verbosity(verbosity)


def _patched_checkpoint(model, folder) -> dict[str, torch.Tensor]:
    """Save `model` patched as a SparseTrainer checkpoint; returns the weight file's score entries."""
    trainer = SparseTrainer(model=model, args=training_args(folder / "run"), sparse_args=SparseArgs.struct())
    with torch.no_grad():  # scores that differ from their initial values, to see that they are loaded
        for index, scores in enumerate(iter_mask_scores(trainer.model)):
            scores.scores.copy_(torch.linspace(-1.0, 1.0, scores.scores.numel()).view_as(scores.scores) + index)
    trainer.save_model(str(folder / "checkpoint"))
    weights = load_file(str(folder / "checkpoint" / "model.safetensors"))
    return {name: tensor for name, tensor in weights.items() if SCORES_MARKER in name}


@pytest.mark.parametrize("kind", ["dense", "slim"])
def test_a_patched_checkpoint_loads_without_a_load_report(kind, tmp_path, printed):
    model = tiny_model("bert") if kind == "dense" else optimize_model(masked_model("bert", empty_last_layer=False))
    saved = _patched_checkpoint(model, tmp_path)
    assert len(saved) == 4  # heads and FFN units of 2 layers: the entries transformers reported as UNEXPECTED
    loaded_class = BertForSequenceClassification if kind == "dense" else slim_class_for(BertForSequenceClassification)
    before = loaded_class.__dict__.get(IGNORED_UNEXPECTED_KEYS, "absent")
    printed()
    loaded = load_for_slimming(tmp_path / "checkpoint")
    text = printed()
    assert "LOAD REPORT" not in text and "UNEXPECTED" not in text and "mask_scores" not in text
    assert type(loaded) is loaded_class and is_patched(loaded)
    state = loaded.state_dict()
    for name, tensor in saved.items():
        torch.testing.assert_close(state[name], tensor, rtol=0, atol=0)
    assert loaded_class.__dict__.get(IGNORED_UNEXPECTED_KEYS, "absent") == before  # the class is as it was


def test_a_missing_weight_or_a_stray_entry_of_a_patched_checkpoint_is_still_reported(tmp_path, printed):
    saved = _patched_checkpoint(tiny_model("bert"), tmp_path)
    weights_file = tmp_path / "checkpoint" / "model.safetensors"
    weights = load_file(str(weights_file))
    del weights["classifier.weight"]
    weights["bert.stray_entry"] = torch.zeros(3)
    save_file(weights, str(weights_file), metadata={"format": "pt"})
    printed()
    load_for_slimming(tmp_path / "checkpoint")
    text = printed()
    assert "LOAD REPORT" in text
    report = text[text.index("LOAD REPORT"):]
    assert "classifier.weight" in report and "MISSING" in report
    assert "bert.stray_entry" in report and "UNEXPECTED" in report
    assert "mask_scores" not in report and all(name in weights for name in saved)


def test_mask_scores_without_a_sparse_state_are_still_reported(tmp_path, printed):
    """Only a patched checkpoint (with sparse_state.json) expects its scores; anything else gets the report
    (and then the error saying the SparseArgs are unknown)."""
    _patched_checkpoint(tiny_model("bert"), tmp_path)
    (tmp_path / "checkpoint" / "sparse_state.json").unlink()
    (tmp_path / "checkpoint" / MASK_SCORES_NAME).unlink()
    printed()
    with pytest.raises(ValueError, match="holds mask scores but no sparse_state.json"):
        load_for_slimming(tmp_path / "checkpoint")
    text = printed()
    assert "LOAD REPORT" in text and "mask_scores" in text and "UNEXPECTED" in text
