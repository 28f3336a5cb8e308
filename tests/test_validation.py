"""InputError for every numeric setting that is not a finite number of its type, naming the field."""

from __future__ import annotations

import dataclasses
import typing

import numpy as np
import pytest

from nn_prune_ext import ImportancePruningArgs, InputError, PostTrainingArgs, SparseArgs

# Each settings class with the smallest valid arguments.
SETTINGS = {
    SparseArgs: {},
    PostTrainingArgs: {"flops_budget": 0.5},
    ImportancePruningArgs: {"target_num_heads": 2},
}


def build(cls, **values):
    settings = cls(**{**SETTINGS[cls], **values})
    if hasattr(settings, "validate"):
        settings.validate()
    return settings


def numeric_fields():
    for cls in SETTINGS:
        hints = typing.get_type_hints(cls)
        for field in dataclasses.fields(cls):
            kinds = set(typing.get_args(hints[field.name]) or (hints[field.name],))
            if kinds & {int, float}:
                yield pytest.param(cls, field.name, id=f"{cls.__name__}.{field.name}")


@pytest.mark.parametrize("cls, name", list(numeric_fields()))
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf"), "0.5", True], ids=["nan", "inf", "-inf", "str", "bool"])
def test_a_non_finite_or_non_numeric_value_is_refused_naming_the_field(cls, name, bad):
    with pytest.raises(InputError, match=rf"{cls.__name__}\.{name} must be"):
        build(cls, **{name: bad})


def test_whole_number_fields_refuse_fractions_and_take_numpy_integers():
    with pytest.raises(InputError, match=r"SparseArgs\.dense_block_rows must be a whole number, got 2\.5"):
        build(SparseArgs, dense_block_rows=2.5)
    assert build(SparseArgs, dense_block_rows=np.int64(2)).dense_block_rows == 2
    assert build(PostTrainingArgs, flops_budget=np.float32(0.5)).flops_budget == pytest.approx(0.5)
    assert build(PostTrainingArgs, max_batches=None).max_batches is None  # None where the field allows it


def test_input_error_is_a_value_error():
    """Code that catches ValueError (the package's earlier errors) keeps catching these."""
    assert issubclass(InputError, ValueError)


def fields_of(kind: type):
    for cls in SETTINGS:
        hints = typing.get_type_hints(cls)
        for field in dataclasses.fields(cls):
            kinds = set(typing.get_args(hints[field.name]) or (hints[field.name],)) - {type(None)}
            if kinds == {kind}:
                yield pytest.param(cls, field.name, id=f"{cls.__name__}.{field.name}")


@pytest.mark.parametrize("cls, name", list(fields_of(str)))
@pytest.mark.parametrize("bad", [None, 3, ["topK"]], ids=["none", "number", "list"])
def test_a_text_field_refuses_what_is_not_text_naming_the_field(cls, name, bad):
    hints = typing.get_type_hints(cls)
    if bad is None and type(None) in typing.get_args(hints[name]):
        return  # None is that field's "not set"
    with pytest.raises(InputError, match=rf"{cls.__name__}\.{name} must be text"):
        build(cls, **{name: bad})


@pytest.mark.parametrize("cls, name", list(fields_of(bool)))
@pytest.mark.parametrize("bad", ["yes", 2, None], ids=["text", "number", "none"])
def test_a_flag_field_refuses_what_is_not_true_or_false(cls, name, bad):
    with pytest.raises(InputError, match=rf"{cls.__name__}\.{name} must be True or False"):
        build(cls, **{name: bad})


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"initial_warmup": float("nan")}, r"SparseArgs\.initial_warmup must be finite"),
        ({"final_warmup": "10"}, r"SparseArgs\.final_warmup must be a real number"),
        ({"dense_pruning_method": None}, r"SparseArgs\.dense_pruning_method must be text"),
        ({"attention_pruning_method": "top_k"}, r"Unknown pruning method 'top_k'\. Choose one of: topK"),
        ({"regularization": "l2"}, r"regularization='l2' is not one of disabled, l1, l0"),
        ({"final_threshold": 1.5}, r"final_threshold.* out of range for pruning method 'topK': it must lie in"),
        ({"distil_temperature": 0.0}, r"distil_temperature must be > 0, got 0\.0"),
        ({"mask_scores_learning_rate": -1e-3}, r"mask_scores_learning_rate must be >= 0"),
    ],
    ids=["warmup_nan", "warmup_text", "method_none", "method_unknown", "regularization_unknown", "threshold_range",
         "temperature", "learning_rate"],
)
def test_sparse_args_refuse_each_bad_value_naming_the_field(values, message):
    with pytest.raises(InputError, match=message):
        SparseArgs(**values)


@pytest.mark.parametrize(
    ("options", "bad", "message"),
    [
        ({}, float("nan"), "f\\(x=\\.\\.\\.\\) must be a finite number, got nan"),
        ({"minimum": 0}, -1.0, "must be a finite number >= 0, got -1.0"),
        ({"positive": True}, 0.0, "must be a finite number > 0, got 0.0"),
        ({"whole": True, "minimum": 1}, 2.5, "must be a whole number >= 1, got 2.5 \\(float\\)"),
        ({"whole": True, "allow_none": True}, True, "must be a whole number or None, got True \\(bool\\)"),
        ({}, "3", "must be a finite number, got '3' \\(str\\)"),
    ],
)
def test_check_number_names_the_argument_and_what_is_valid(options, bad, message):
    from nn_prune_ext.validation import check_number

    with pytest.raises(InputError, match=message):
        check_number("f(x=...)", bad, **options)


def test_check_number_takes_valid_values():
    from nn_prune_ext.validation import check_number

    check_number("f(x=...)", None, whole=True, allow_none=True)
    check_number("f(x=...)", np.int64(3), whole=True, minimum=1)
    check_number("f(x=...)", 1e-9, positive=True)
