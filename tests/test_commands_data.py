import argparse
import json

import pytest
import torch

from nn_prune_ext import InputError
from nn_prune_ext.commands.data import add_data_arguments, examples_batches

from conftest import tiny_config
from test_commands_report import save_tokenizer


def _args(tmp_path, **overrides) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_data_arguments(parser.add_argument_group("data"), batch_size=4, max_batches=2)
    args = parser.parse_args([])
    args.checkpoint, args.text_column, args.label_column = str(tmp_path), "sentence", "gold"
    vars(args).update(overrides)
    return args


def _write(path, labels) -> None:
    with open(path, "w") as handle:
        for index, label in enumerate(labels):
            handle.write(json.dumps({"sentence": f"word{index} word{index + 1}", "gold": label}) + "\n")


@pytest.fixture()
def classifier(tmp_path):
    save_tokenizer(tmp_path)
    config = tiny_config("bert")
    config.num_labels = 3
    return config


def test_label_ids_names_and_regression_targets_are_read(tmp_path, classifier):
    _write(tmp_path / "ids.jsonl", [0, 2, 1])
    assert examples_batches(_args(tmp_path), str(tmp_path / "ids.jsonl"), classifier)[0]["labels"].tolist() == [0, 2, 1]
    _write(tmp_path / "names.jsonl", ["LABEL_2", "LABEL_0"])
    assert examples_batches(_args(tmp_path), str(tmp_path / "names.jsonl"), classifier)[0]["labels"].tolist() == [2, 0]
    classifier.num_labels, classifier.problem_type = 1, "regression"
    _write(tmp_path / "targets.jsonl", [0.5, -1.25])
    assert examples_batches(_args(tmp_path), str(tmp_path / "targets.jsonl"), classifier)[0]["labels"].tolist() == [0.5, -1.25]


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ([0, 7, 1], r"Line 2 of .*data.jsonl, field 'gold': the label id 7 is outside the checkpoint's 3 labels "
                    r"\(0 to 2\); write class ids from 0 to 2"),
        ([0, -1], r"Line 2 of .*, field 'gold': the label id -1 is outside"),
        ([0.5, 1.0], r"Line 1 of .*, field 'gold': the label 0.5 is a float, but the checkpoint classifies into 3 labels"),
        ([0, 1.0], r"Line 2 of .*: the label 1.0 is a float.*whole numbers such as 1, not 1.0"),
        (["LABEL_0", "cat"], r"Line 2 of .*: the label 'cat' is not in the checkpoint's label2id"),
        ([0, "LABEL_1"], r"Line 2 of .*: the label 'LABEL_1' is a name, but line 1 has a label id"),
        ([0, None], r"Line 2 of .*: the label None \(NoneType\) is not a class id or name"),
        ([True, 0], r"Line 1 of .*: the label True \(bool\) is not a class id or name"),
        ([[0, 1]], r"Line 1 of .*: the label \[0, 1\] \(list\) is not a class id or name"),
    ],
    ids=["beyond", "negative", "fractional", "whole_float", "unknown_name", "mixed", "null", "bool", "list"],
)
def test_labels_the_classifier_cannot_take_are_an_input_error(tmp_path, classifier, labels, message):
    _write(tmp_path / "data.jsonl", labels)
    with pytest.raises(InputError, match=message):
        examples_batches(_args(tmp_path), str(tmp_path / "data.jsonl"), classifier)


@pytest.mark.parametrize("labels", [["a", 1.0], [0.5, float("nan")], [1.0, None]], ids=["name", "nan", "null"])
def test_a_regression_model_takes_finite_numbers_only(tmp_path, classifier, labels):
    classifier.num_labels = 1  # one output and no problem_type: transformers computes a regression loss
    _write(tmp_path / "data.jsonl", labels)
    with pytest.raises(InputError, match=r"Line \d of .*, field 'gold': the label .* (is not a finite number|is not a "
                       r"number; the checkpoint is a regression model)"):
        examples_batches(_args(tmp_path), str(tmp_path / "data.jsonl"), classifier)


def test_whole_number_regression_targets_are_floats(tmp_path, classifier):
    classifier.num_labels = 1  # MSELoss refuses integer targets
    _write(tmp_path / "data.jsonl", [1, 2])
    labels = examples_batches(_args(tmp_path), str(tmp_path / "data.jsonl"), classifier)[0]["labels"]
    assert labels.dtype == torch.float32 and labels.tolist() == [1.0, 2.0]


def test_labels_beyond_the_first_batch_are_checked_before_any_batch_is_made(tmp_path, classifier):
    _write(tmp_path / "data.jsonl", [0, 1, 2, 0, 1, 2, 9])  # batches of 4: the bad id is in the second
    with pytest.raises(InputError, match="Line 7 of .*the label id 9 is outside"):
        examples_batches(_args(tmp_path), str(tmp_path / "data.jsonl"), classifier)


def test_token_ids_beyond_the_models_vocabulary_are_an_input_error(tmp_path, classifier):
    classifier.vocab_size = 6  # the tokenizer knows more words than that
    _write(tmp_path / "data.jsonl", [0, 1])
    with pytest.raises(InputError, match=r"Line 1 of .*: the tokenizer gives input_ids \d+, outside the model's "
                       r"vocab_size of 6; pass this checkpoint's own tokenizer with --tokenizer"):
        examples_batches(_args(tmp_path), str(tmp_path / "data.jsonl"), classifier)


def test_a_second_text_for_a_model_without_token_types_is_an_input_error(tmp_path, classifier):
    classifier.type_vocab_size = 1
    (tmp_path / "data.jsonl").write_text(json.dumps({"sentence": "word1", "other": "word2", "gold": 0}) + "\n")
    with pytest.raises(InputError, match="Line 1 of .*: the tokenizer gives token_type_ids 1, outside the model's "
                       "type_vocab_size of 1; the model takes no second text"):
        examples_batches(_args(tmp_path, text_pair_column="other"), str(tmp_path / "data.jsonl"), classifier)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "holds no examples"),
        (b"\n  \n", "holds no examples"),
        (b'{"sentence": "word1", "gold": 0}\n[1, 2]\n', "Line 2 of .* is a JSON list, not an object"),
        (b"{'a': 1}\n", r"Line 1 of .* is not valid JSON \(Expecting property name .*, column 2\)"),
        (b'{"sentence": "word1", "gold": 0}\n{"sentence": "word1"\n', "Line 2 of .* is not valid JSON"),
        (b'{"sentence": "word1", "gold": 0}\n{"sentence": "\xff"}\n', r"Line 2 of .* is not UTF-8 text \(byte 0xff"),
        (b'{"text": "word1", "gold": 0}\n', r"Line 1 of .* has no field 'sentence' \(it has \['gold', 'text'\]\)"),
        (b'{"sentence": "word1"}\n', "Line 1 of .* has no field 'gold'"),
        (b'{"sentence": 5, "gold": 0}\n', r"Line 1 of .*: field 'sentence' is 5 \(int\), not text"),
        (b'{"sentence": null, "gold": 0}\n', r"field 'sentence' is None \(NoneType\), not text"),
    ],
    ids=["empty", "blank", "not_an_object", "not_json", "cut_short", "not_utf8", "no_text", "no_label", "number_text",
         "null_text"],
)
def test_unreadable_data_files_name_the_line(tmp_path, classifier, content, message):
    (tmp_path / "data.jsonl").write_bytes(content)
    with pytest.raises(InputError, match=message):
        examples_batches(_args(tmp_path), str(tmp_path / "data.jsonl"), classifier)
