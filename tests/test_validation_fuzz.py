"""Property-based tests: any value a user may pass is accepted and works, or is refused with `InputError`.

Never another exception type: an AttributeError, TypeError or a torch error from deep inside means a bad
input reached code that trusted it.
"""

import dataclasses
import math

import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from nn_prune_ext import (
    ImportancePruningArgs,
    InputError,
    SparseArgs,
    SparsitySchedule,
    StructureMasks,
    apply_masks,
    prune_with_masks,
)
from nn_prune_ext.posttrain import PostTrainingArgs

from conftest import tiny_batch, tiny_model

WORDS = ["topK", "threshold", "sigmoied_threshold", "magnitude", "l0", "l1", "disabled", "block", "row", "col",
         "head", "unit", "even", "global", "group", "sigmoied_threshold:1d_alt", "topK:2d", ""]
VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-10, max_value=10),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=0, max_value=1),
    st.sampled_from(WORDS),
    st.text(max_size=6),
    st.lists(st.integers(0, 3), max_size=2),
)
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _overrides(settings_class, draw_values):
    names = [field.name for field in dataclasses.fields(settings_class)]
    return st.dictionaries(st.sampled_from(names), draw_values, min_size=1, max_size=4)


def _construct(settings_class, base: dict, overrides: dict):
    """The settings, or None when refused with InputError; any other exception fails the test."""
    try:
        return settings_class(**{**base, **overrides})
    except InputError as error:
        assert str(error)  # a message, naming what is wrong
        return None


@FUZZ
@given(overrides=_overrides(SparseArgs, VALUES))
def test_sparse_args_accept_and_work_or_refuse_with_input_error(overrides):
    args = _construct(SparseArgs, {}, overrides)
    if args is None:
        return
    assert SparseArgs(**args.to_dict()) == args  # what a checkpoint records reads back
    attention, dense = args.final_thresholds()
    assert math.isfinite(attention) and math.isfinite(dense)
    try:
        schedule = SparsitySchedule.from_args(args, 100)
    except InputError:  # warmups that leave no step of a 100-step run
        return
    for step in (0, 37, 100):
        assert all(math.isfinite(value) for value in schedule.thresholds(step))
        assert math.isfinite(schedule.regularization_lambda(step))


@FUZZ
@given(overrides=_overrides(PostTrainingArgs, VALUES))
def test_post_training_args_accept_or_refuse_with_input_error(overrides):
    args = _construct(PostTrainingArgs, {"flops_budget": 0.5}, overrides)
    if args is None:
        return
    budget = args.flops_budget if args.flops_budget is not None else args.latency_budget
    assert 0 < budget <= 1 and args.max_tune_scale > 0
    assert PostTrainingArgs(**dataclasses.asdict(args)) == args


@FUZZ
@given(overrides=_overrides(ImportancePruningArgs, VALUES))
def test_importance_pruning_args_accept_or_refuse_with_input_error(overrides):
    args = _construct(ImportancePruningArgs, {"target_num_heads": 2}, overrides)
    if args is None:
        return
    assert args.rounds >= 1 and args.multiple_of >= 1
    assert ImportancePruningArgs(**dataclasses.asdict(args)) == args


# ----- masks --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def model():
    return tiny_model("bert").eval()


MASK_VALUES = st.one_of(st.sampled_from([0.0, 1.0]), st.floats(-3, 3))


BROKEN = {
    "length": lambda draw, size: draw(st.lists(MASK_VALUES, max_size=size + 2).filter(lambda values: len(values) != size)),
    "nested": lambda draw, size: [[1.0] * size],
    "text": lambda draw, size: draw(st.sampled_from(["1101", ["1", "0"] * size, [b"x"] * size])),
    "none": lambda draw, size: None,
    "ragged": lambda draw, size: [[1.0, 0.0], [1.0]],
    "non_finite": lambda draw, size: [draw(st.sampled_from([math.nan, math.inf, -math.inf]))] + [1.0] * (size - 1),
}


@st.composite
def structure_masks(draw, heads: list[int], widths: list[int]):
    """Masks of the right shapes (half the time), or with one layer's mask or the layer count broken."""
    head_masks = [draw(st.lists(MASK_VALUES, min_size=size, max_size=size)) for size in heads]
    unit_masks = [draw(st.lists(MASK_VALUES, min_size=size, max_size=size)) for size in widths]
    damage = draw(st.sampled_from(["none"] * 5 + ["layer count"] + sorted(BROKEN)))
    if damage == "layer count":
        head_masks, unit_masks = head_masks[:-1], unit_masks[:-1]
    elif damage != "none":
        masks, sizes = draw(st.sampled_from([(head_masks, heads), (unit_masks, widths)]))
        layer = draw(st.integers(0, len(sizes) - 1))
        masks[layer] = BROKEN[damage](draw, sizes[layer])
    return head_masks, unit_masks


@FUZZ
@given(data=st.data())
def test_masks_slim_to_the_masked_model_or_are_refused_with_input_error(model, data):
    from nn_prune_ext.masks import model_sizes

    heads, widths = model_sizes(model)
    head_masks, unit_masks = data.draw(structure_masks(heads, widths))
    try:
        masks = StructureMasks(heads=head_masks, units=unit_masks)
        slim = prune_with_masks(model, masks)  # checks the slim model against the masked one itself
    except InputError as error:
        assert str(error)
        event("refused")
        return
    event("slimmed")
    batch = tiny_batch("bert")
    with torch.no_grad(), apply_masks(model, masks.heads, masks.units):
        expected = model(**batch).logits
    with torch.no_grad():
        torch.testing.assert_close(slim(**batch).logits, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("masks", ["heads", 3, None, {"heads": []}, [[1.0]]])
def test_prune_with_masks_refuses_what_is_not_structure_masks(model, masks):
    with pytest.raises(InputError, match="masks must be a StructureMasks"):
        prune_with_masks(model, masks)
