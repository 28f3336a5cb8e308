import argparse
import json

import pytest

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
        ([0, 7, 1], r"Label ids \[7\] are outside the checkpoint's 3 labels \(0 to 2\)"),
        ([0, -1], r"Label ids \[-1\] are outside"),
        ([0.5, 1.0], r"fractional numbers, but the checkpoint classifies into 3 labels"),
        (["LABEL_0", "cat"], r"Labels \['cat'\] are not in the checkpoint's label2id"),
        ([0, "LABEL_1"], "Labels must be all ids, all names or all numbers"),
    ],
    ids=["beyond", "negative", "fractional", "unknown_name", "mixed"],
)
def test_labels_the_classifier_cannot_take_are_an_input_error(tmp_path, classifier, labels, message):
    _write(tmp_path / "data.jsonl", labels)
    with pytest.raises(InputError, match=message):
        examples_batches(_args(tmp_path), str(tmp_path / "data.jsonl"), classifier)


def test_token_ids_beyond_the_models_vocabulary_are_an_input_error(tmp_path, classifier):
    classifier.vocab_size = 6  # the tokenizer knows more words than that
    _write(tmp_path / "data.jsonl", [0, 1])
    with pytest.raises(InputError, match=r"gives token id \d+, outside the model's vocabulary of 6: pass .*--tokenizer"):
        examples_batches(_args(tmp_path), str(tmp_path / "data.jsonl"), classifier)


@pytest.mark.parametrize(
    ("content", "message"),
    [("", "holds no examples"), ("[1, 2]\n", "Line 1 of .* is not a JSON object"), ("{'a': 1}\n", "is not valid JSON")],
    ids=["empty", "not_an_object", "not_json"],
)
def test_unreadable_data_files_name_the_line(tmp_path, classifier, content, message):
    (tmp_path / "data.jsonl").write_text(content)
    with pytest.raises(InputError, match=message):
        examples_batches(_args(tmp_path), str(tmp_path / "data.jsonl"), classifier)
