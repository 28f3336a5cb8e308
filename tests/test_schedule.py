import pytest

from nn_prune_ext import InputError, SparseArgs, SparsitySchedule


def test_cubic_schedule_with_warmups():
    schedule = SparsitySchedule(initial_threshold=1.0, final_threshold=0.1, total_steps=100,
                                initial_warmup_steps=10, final_warmup_steps=20, final_lambda=4.0)
    assert schedule.threshold(0) == schedule.threshold(10) == 1.0
    assert schedule.threshold(80) == schedule.threshold(100) == pytest.approx(0.1)
    # Halfway through the ramp: progress = 1 - 0.5**3.
    assert schedule.progress(45) == pytest.approx(0.875)
    assert schedule.threshold(45) == pytest.approx(1.0 - 0.9 * 0.875)
    assert schedule.regularization_lambda(45) == pytest.approx(4.0 * 0.875)
    assert schedule.regularization_lambda(0) == 0.0 and schedule.regularization_lambda(100) == 4.0
    values = [schedule.threshold(step) for step in range(101)]
    assert all(a >= b for a, b in zip(values, values[1:]))  # monotone


def test_warmups_in_steps_or_fractions_do_not_depend_on_lr_warmup():
    as_fraction = SparsitySchedule.from_args(SparseArgs(initial_warmup=0.1, final_warmup=0.25), total_steps=200)
    assert (as_fraction.initial_warmup_steps, as_fraction.final_warmup_steps) == (20, 50)
    as_steps = SparsitySchedule.from_args(SparseArgs(initial_warmup=3, final_warmup=7), total_steps=200)
    assert (as_steps.initial_warmup_steps, as_steps.final_warmup_steps) == (3, 7)


def test_warmups_longer_than_training_are_rejected():
    with pytest.raises(ValueError, match="leave no step"):
        SparsitySchedule.from_args(SparseArgs(initial_warmup=50, final_warmup=50), total_steps=100)


def test_attention_threshold_moves_with_the_same_progress_to_its_own_final_value():
    schedule = SparsitySchedule(
        initial_threshold=1.0, final_threshold=0.7, total_steps=10, attention_final_threshold=0.5
    )
    for step in range(11):
        attention, dense = schedule.thresholds(step)
        progress = schedule.progress(step)
        assert attention == pytest.approx(1.0 - 0.5 * progress)
        assert dense == pytest.approx(1.0 - 0.3 * progress) == schedule.threshold(step)
    same = SparsitySchedule(initial_threshold=1.0, final_threshold=0.7, total_steps=10)
    assert same.thresholds(5)[0] == same.thresholds(5)[1]


@pytest.mark.parametrize(
    "values, message",
    [
        ({"total_steps": 0}, r"SparsitySchedule\.total_steps \(optimizer steps of the run\) must be a whole number >= 1, got 0"),
        ({"total_steps": float("nan")}, r"SparsitySchedule\.total_steps .* must be a whole number >= 1, got nan"),
        ({"total_steps": 10.5}, r"SparsitySchedule\.total_steps .* must be a whole number >= 1, got 10\.5"),
        ({"initial_warmup_steps": -3}, r"SparsitySchedule\.initial_warmup_steps must be a whole number >= 0, got -3"),
        ({"final_warmup_steps": 1.5}, r"SparsitySchedule\.final_warmup_steps must be a whole number >= 0, got 1\.5"),
        ({"final_threshold": float("nan")}, r"SparsitySchedule\.final_threshold must be a finite real number, got nan"),
        ({"attention_final_threshold": "0.5"}, r"SparsitySchedule\.attention_final_threshold must be a finite real number or None, got '0\.5'"),
        ({"final_lambda": -1.0}, r"SparsitySchedule\.final_lambda must be a finite real number >= 0, got -1\.0"),
    ],
    ids=["zero_steps", "nan_steps", "fractional_steps", "negative_warmup", "fractional_warmup", "nan_threshold",
         "text_threshold", "negative_lambda"],
)
def test_schedule_values_out_of_range_are_refused_naming_the_field(values, message):
    # Before: each was accepted, and NaN or bent thresholds came out of threshold(step) without a word.
    settings = dict(initial_threshold=1.0, final_threshold=0.1, total_steps=10)
    with pytest.raises(InputError, match=message):
        SparsitySchedule(**{**settings, **values})


def test_from_args_refuses_settings_that_are_not_sparse_args():
    with pytest.raises(InputError, match=r"SparsitySchedule\.from_args: sparse_args must be a SparseArgs, got dict; build one with SparseArgs\(\.\.\.\)"):
        SparsitySchedule.from_args({"initial_warmup": 0.1}, total_steps=100)
