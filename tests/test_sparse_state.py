import json

import pytest
import torch
from safetensors.torch import load_file, save_file

import nn_prune_ext
from nn_prune_ext import InputError, NonFiniteError, SparseArgs, SparseTrainer
from nn_prune_ext.checkpoints import load_for_slimming
from nn_prune_ext.sparse_state import (
    FORMAT_VERSION,
    SPARSE_STATE_NAME,
    read_sparse_state,
    saved_sparse_args,
    write_sparse_state,
)
from nn_prune_ext.trainer import MASK_SCORES_NAME

from conftest import tiny_model
from test_trainer import tiny_dataset, training_args

pytestmark = pytest.mark.usefixtures("quiet_transformers")


def _state(**sparse_args) -> dict:
    return {"sparse_args": SparseArgs(**sparse_args).to_dict(), "step": 3, "threshold": 0.5, "total_steps": 6}


def _rewrite(path, edit) -> None:
    payload = json.loads(path.read_text())
    edit(payload)
    path.write_text(json.dumps(payload))


def test_the_written_state_names_its_format_and_release_and_reads_back(tmp_path):
    write_sparse_state(tmp_path, _state(final_threshold=0.3))
    raw = json.loads((tmp_path / SPARSE_STATE_NAME).read_text())
    assert raw["format_version"] == FORMAT_VERSION and raw["nn_prune_ext_version"] == nn_prune_ext.__version__
    state = read_sparse_state(tmp_path)
    assert saved_sparse_args(state, tmp_path) == SparseArgs(final_threshold=0.3)
    assert state["step"] == 3
    assert [path.name for path in tmp_path.iterdir()] == [SPARSE_STATE_NAME]  # no temporary file left


def test_a_state_of_an_older_release_takes_defaults_for_the_fields_it_lacks(tmp_path):
    state = _state(final_threshold=0.3)
    del state["sparse_args"]["skip_non_finite_steps"]  # added after the first release
    (tmp_path / SPARSE_STATE_NAME).write_text(json.dumps(state))  # no format_version, no release
    read = read_sparse_state(tmp_path / SPARSE_STATE_NAME)
    assert read["sparse_args"]["skip_non_finite_steps"] is False
    assert saved_sparse_args(read, tmp_path).final_threshold == 0.3


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda p: p.update(format_version=FORMAT_VERSION + 1, nn_prune_ext_version="9.0"),
         r"written by nn_prune_ext 9\.0 in format 2; nn_prune_ext .* reads formats up to 1\. Upgrade"),
        (lambda p: p["sparse_args"].update(future_knob=1) or p.update(nn_prune_ext_version="9.0"),
         r"SparseArgs fields that nn_prune_ext .* does not know: \['future_knob'\] \(written by nn_prune_ext 9\.0\)"),
        (lambda p: p.pop("sparse_args"), "holds no 'sparse_args' object"),
    ],
    ids=["newer_format", "unknown_field", "no_sparse_args"],
)
def test_a_state_this_release_cannot_read_is_refused_with_the_releases_named(tmp_path, edit, message):
    write_sparse_state(tmp_path, _state())
    _rewrite(tmp_path / SPARSE_STATE_NAME, edit)
    with pytest.raises(InputError, match=message):
        read_sparse_state(tmp_path)


def test_a_damaged_state_names_its_file(tmp_path):
    (tmp_path / SPARSE_STATE_NAME).write_text('{"sparse_args": {"final_thr')
    with pytest.raises(InputError, match=rf"{SPARSE_STATE_NAME} cannot be read .*damaged"):
        read_sparse_state(tmp_path)
    with pytest.raises(InputError, match="is not a SparseTrainer checkpoint"):
        read_sparse_state(tmp_path / "missing" / SPARSE_STATE_NAME)


def test_an_invalid_recorded_value_names_the_file_and_the_field(tmp_path):
    write_sparse_state(tmp_path, _state())
    _rewrite(tmp_path / SPARSE_STATE_NAME, lambda p: p["sparse_args"].update(final_threshold="half"))
    with pytest.raises(InputError, match=rf"{SPARSE_STATE_NAME}: SparseArgs.final_threshold must be a real number"):
        saved_sparse_args(read_sparse_state(tmp_path), tmp_path / SPARSE_STATE_NAME)


# ----- checkpoints of other releases, end to end -------------------------------------------------------
@pytest.fixture()
def checkpoint(tmp_path):
    sparse_args = SparseArgs.hybrid(2.0, attention_block_rows=16, attention_block_cols=16, final_threshold=0.5,
                                    initial_warmup=1, final_warmup=1)
    trainer = SparseTrainer(model=tiny_model("bert"), args=training_args(tmp_path, max_steps=4, save_strategy="steps",
                                                                         save_steps=2),
                            train_dataset=tiny_dataset(), sparse_args=sparse_args)
    trainer.train()
    return tmp_path / "checkpoint-2", sparse_args


def test_a_checkpoint_of_an_older_release_resumes_and_loads(checkpoint, tmp_path):
    folder, sparse_args = checkpoint
    _rewrite(folder / SPARSE_STATE_NAME, lambda p: [p.pop("format_version"), p.pop("nn_prune_ext_version"),
                                                     p["sparse_args"].pop("skip_non_finite_steps")])
    # Resumed with skipping switched on: a field the old release did not write, and one a resume may change.
    resumed = SparseTrainer(model=tiny_model("bert"), args=training_args(tmp_path, max_steps=4),
                            train_dataset=tiny_dataset(),
                            sparse_args=SparseArgs(**{**sparse_args.to_dict(), "skip_non_finite_steps": True}))
    resumed.train(resume_from_checkpoint=str(folder))
    assert resumed.state.global_step == 4
    assert load_for_slimming(folder).training is False


def test_scores_that_disagree_with_the_recorded_block_sizes_are_an_input_error(checkpoint):
    folder, _ = checkpoint
    _rewrite(folder / SPARSE_STATE_NAME, lambda p: p["sparse_args"].update(attention_block_rows=8))
    with pytest.raises(InputError, match=r"other shapes than the block sizes of its sparse_state\.json give .*saved \(4, 4\), expected \(8, 4\)"):
        load_for_slimming(folder)


def test_non_finite_saved_scores_are_refused(checkpoint):
    folder, _ = checkpoint
    scores = load_file(str(folder / MASK_SCORES_NAME))
    name = sorted(scores)[0]
    scores[name] = torch.full_like(scores[name], float("nan"))
    save_file(scores, str(folder / MASK_SCORES_NAME))
    with pytest.raises(NonFiniteError, match=rf"{name.replace('.', '[.]')} in .* holds NaN"):
        load_for_slimming(folder)


def test_an_unreadable_scores_file_is_an_input_error(checkpoint):
    folder, _ = checkpoint
    (folder / MASK_SCORES_NAME).write_bytes(b"not safetensors")
    with pytest.raises(InputError, match=rf"{MASK_SCORES_NAME} is not a readable safetensors file"):
        load_for_slimming(folder)
