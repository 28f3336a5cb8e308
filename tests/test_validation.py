"""InputError for every numeric setting that is not a finite number of its type, naming the field."""

from __future__ import annotations

import dataclasses
import re
import typing

import numpy as np
import pytest

from nn_prune_ext import ImportancePruningArgs, InputError, PostTrainingArgs, SparseArgs
from nn_prune_ext.validation import check_flag, check_known_fields, check_model, check_real, check_whole

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


# ----- the shared checks of the public entry points ------------------------------------------------
def test_a_number_beyond_a_float_is_refused_as_not_finite_naming_the_field():
    # 10**400 is a valid Python int, but float() of it overflows (an OverflowError deep in the schedule).
    with pytest.raises(InputError, match=r"SparseArgs\.initial_threshold must be finite, got 1000.*characters"):
        build(SparseArgs, initial_threshold=10**400)


@pytest.mark.parametrize("bad", ["no", 1, None, np.float64(1.0)], ids=["text", "int", "none", "numpy_float"])
def test_check_flag_refuses_what_is_not_true_or_false(bad):
    with pytest.raises(InputError, match=rf"f\(inplace=\.\.\.\) must be True or False, got {re.escape(repr(bad))}"):
        check_flag(bad, "f(inplace=...)")


def test_check_flag_takes_bools_and_numpy_bools():
    assert check_flag(np.bool_(True), "flag") is True
    assert check_flag(False, "flag") is False


@pytest.mark.parametrize("bad", [1.5, 2.0, "3", True, float("nan"), 0], ids=["fraction", "float", "text", "bool", "nan", "below"])
def test_check_whole_refuses_what_is_not_a_whole_number_in_range(bad):
    with pytest.raises(InputError, match=r"steps must be a whole number >= 1, got"):
        check_whole(bad, "steps", 1)


def test_check_whole_takes_numpy_integers_and_optional_none():
    assert check_whole(np.int32(3), "steps", 1) == 3 and type(check_whole(np.int32(3), "steps", 1)) is int
    assert check_whole(None, "steps", 1, optional=True) is None
    with pytest.raises(InputError, match="steps must be a whole number >= 1, got None"):
        check_whole(None, "steps", 1)


@pytest.mark.parametrize(
    "bad, message",
    [(float("nan"), "got nan"), (10**400, "got 1000"), ("0.5", r"got '0\.5' \(str\)"), (True, r"got True \(bool\)"),
     (-0.5, r"got -0\.5"), (1.5, r"got 1\.5")],
    ids=["nan", "huge", "text", "bool", "below", "above"],
)
def test_check_real_refuses_non_finite_non_numbers_and_values_out_of_range(bad, message):
    with pytest.raises(InputError, match=rf"rate must be a finite real number >= 0 and <= 1, {message}"):
        check_real(bad, "rate", minimum=0, maximum=1)


def test_check_real_returns_a_float():
    assert check_real(np.float32(0.25), "rate", minimum=0, maximum=1) == 0.25
    assert check_real(None, "rate", optional=True) is None


@pytest.mark.parametrize("bad", ["bert", None, {"weight": 1}], ids=["name", "none", "dict"])
def test_check_model_refuses_what_is_not_a_module_naming_the_function(bad):
    with pytest.raises(InputError, match=rf"summary: model must be a torch\.nn\.Module .*\({type(bad).__name__}\)"):
        check_model(bad, "summary")


def test_check_model_takes_a_module():
    import torch

    check_model(torch.nn.Linear(2, 2), "summary")  # no error


def test_settings_refuse_a_misspelled_keyword_listing_their_fields():
    # Before: Python's bare TypeError "__init__() got an unexpected keyword argument".
    with pytest.raises(InputError, match=r"SparseArgs\(\.\.\.\) got unknown keyword 'final_treshold' \(did you mean "
                                         r"'final_threshold'\?\): the fields of SparseArgs are prune, .*final_threshold"):
        SparseArgs(final_treshold=0.1)
    with pytest.raises(InputError, match=r"unknown keyword 'target_heads' .*the fields of ImportancePruningArgs are "):
        ImportancePruningArgs(target_heads=2)
    with pytest.raises(InputError, match=r"PostTrainingArgs\(\.\.\.\) got unknown keyword 'flops_budjet' \(did you mean "
                                         r"'flops_budget'\?\): the fields of PostTrainingArgs are flops_budget, "):
        PostTrainingArgs(flops_budjet=0.5)


def test_settings_keep_their_signature_and_positional_arguments():
    import inspect

    assert "final_threshold" in inspect.signature(SparseArgs).parameters  # HfArgumentParser reads it
    assert SparseArgs(False).prune is False
    assert isinstance(SparseArgs(final_threshold=0.4), SparseArgs)


def test_check_known_fields_names_every_unknown_keyword():
    with pytest.raises(InputError, match=r"f got unknown keywords 'a', 'b': the fields of SparseArgs"):
        check_known_fields(SparseArgs, ["b", "a", "prune"], "f")


def test_check_real_above_minimum_refuses_the_minimum_itself_naming_the_argument():
    from nn_prune_ext.validation import check_real

    with pytest.raises(InputError, match=r"f\(x=\.\.\.\) must be a finite real number > 0, got 0\.0"):
        check_real(0.0, "f(x=...)", minimum=0, above_minimum=True)
    with pytest.raises(InputError, match=r"must be a finite real number > 0, got nan"):
        check_real(float("nan"), "f(x=...)", minimum=0, above_minimum=True)
    assert check_real(1e-9, "f(x=...)", minimum=0, above_minimum=True) == 1e-9
    assert check_real(0, "f(x=...)", minimum=0) == 0.0


def test_describe_names_the_type_and_shortens_a_long_value():
    from nn_prune_ext.validation import describe

    assert describe("2") == "'2' (str)"
    text = describe(list(range(1000)))
    assert text.endswith("(list)") and "(4890 characters)" in text and len(text) < 120


def test_check_instance_returns_the_value_and_names_the_class_the_type_and_the_hint():
    from nn_prune_ext.validation import check_instance

    args = SparseArgs()
    assert check_instance(args, SparseArgs, "f: sparse_args") is args
    assert check_instance(None, SparseArgs, "f: sparse_args", optional=True) is None
    with pytest.raises(InputError, match=r"^f: sparse_args must be a SparseArgs, got dict; build one\.$"):
        check_instance({}, SparseArgs, "f: sparse_args", hint="build one")
    with pytest.raises(InputError, match=r"^f: args must be an ImportancePruningArgs or None, got str\.$"):
        check_instance("x", ImportancePruningArgs, "f: args", optional=True)
    with pytest.raises(InputError, match="got NoneType"):
        check_instance(None, SparseArgs, "f: sparse_args")
