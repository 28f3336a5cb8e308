import json
import statistics

import pytest
import torch
from torch import nn

from nn_prune_ext import InputError
from nn_prune_ext.timing import LatencyComparison, LatencyStats, compare_latency, inference_time

from conftest import tiny_batch, tiny_model


class Recorder(nn.Module):
    """Records, per forward, its name, whether inference mode was on and whether it was training."""

    def __init__(self, name: str, log: list):
        super().__init__()
        self.name, self.log = name, log
        self.linear = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        self.log.append((self.name, torch.is_inference_mode_enabled(), self.training, scale))
        return self.linear(x) * scale


def test_latency_stats_summaries_are_exact():
    stats = LatencyStats((5.0, 1.0, 4.0, 2.0, 3.0), (1.0, 1.0, 2.0, 2.0, 2.0))
    assert stats.repeats == 5
    assert (stats.median_ms, stats.min_ms, stats.max_ms) == (3.0, 1.0, 5.0)
    assert stats.quartiles_ms == (2.0, 4.0)
    assert stats.iqr_ms == 2.0
    assert stats.std_ms == pytest.approx(statistics.stdev([1, 2, 3, 4, 5]))
    assert stats.cpu_median_ms == 2.0
    assert stats.to_dict()["samples_ms"] == [5.0, 1.0, 4.0, 2.0, 3.0]
    single = LatencyStats((7.0,))
    assert (single.iqr_ms, single.std_ms, single.cpu_median_ms) == (0.0, 0.0, None)
    with pytest.raises(ValueError, match="at least one sample"):
        LatencyStats(())


def test_inference_time_of_a_tiny_model():
    model = tiny_model("bert").train()
    threads = torch.get_num_threads()
    stats = inference_time(model, tiny_batch(), warmup=1, repeats=5, threads=1)
    assert stats.repeats == 5 and len(stats.cpu_samples_ms) == 5
    assert all(sample > 0 for sample in stats.samples_ms)
    first, third = stats.quartiles_ms
    assert stats.min_ms <= first <= stats.median_ms <= third <= stats.max_ms
    assert stats.median_ms in stats.samples_ms  # odd count: the median is a sample
    assert json.loads(json.dumps(stats.to_dict()))["repeats"] == 5
    assert model.training  # timed in eval mode, mode restored
    assert torch.get_num_threads() == threads  # thread setting restored


def test_compare_latency_alternates_and_counts_every_forward():
    log: list = []
    models = {"a": Recorder("a", log).eval(), "b": Recorder("b", log).train()}
    comparison = compare_latency(models, (torch.ones(2, 4), 2.0), warmup=1, repeats=4)
    # Round 0 (warm-up) runs a then b; every later round flips the order.
    assert [name for name, *_ in log] == ["a", "b", "b", "a", "a", "b", "b", "a", "a", "b"]
    assert comparison.orders == (("b", "a"), ("a", "b"), ("b", "a"), ("a", "b"))
    assert all(inference and not training and scale == 2.0 for _, inference, training, scale in log)
    assert models["b"].training and not models["a"].training
    assert {name: stats.repeats for name, stats in comparison.results.items()} == {"a": 4, "b": 4}
    medians = {name: stats.median_ms for name, stats in comparison.results.items()}
    assert comparison.speedups == {"a": 1.0, "b": medians["a"] / medians["b"]}
    assert comparison.speedup("a", reference="b") == medians["b"] / medians["a"]
    payload = json.loads(json.dumps(comparison.to_dict()))
    assert payload["baseline"] == "a" and payload["orders"][0] == ["b", "a"]


def test_keyword_and_tensor_inputs():
    log: list = []
    model = Recorder("m", log)
    inference_time(model, {"x": torch.ones(1, 4), "scale": 3.0}, warmup=0, repeats=2)
    inference_time(model, torch.ones(1, 4), warmup=2, repeats=1)
    assert [scale for *_, scale in log] == [3.0, 3.0, 1.0, 1.0, 1.0]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(repeats=0), "repeats must be a whole number >= 1"),
        (dict(warmup=-1), "warmup must be a whole number >= 0"),
        (dict(threads=0), "threads must be a whole number >= 1"),
        (dict(baseline="c"), "baseline='c' is not one of the models"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        compare_latency({"a": nn.Identity(), "b": nn.Identity()}, torch.ones(1), **kwargs)


def test_empty_models_and_unknown_names():
    with pytest.raises(ValueError, match="at least one model"):
        compare_latency({}, torch.ones(1))
    comparison = LatencyComparison({"a": LatencyStats((1.0,))}, orders=(("a",),), baseline="a")
    with pytest.raises(InputError, match="No model named 'z'"):
        comparison.speedup("z")


@pytest.mark.parametrize(
    "models, inputs, kwargs, message",
    [
        ([nn.Identity()], torch.ones(1), {}, r"compare_latency takes the models as a mapping of names to models.*got list"),
        ({"dense": "bert"}, torch.ones(1), {}, r"compare_latency: models\['dense'\] must be a torch\.nn\.Module.*'bert' \(str\)"),
        ({"a": nn.Identity()}, torch.ones(1), {"repeats": True}, r"repeats must be a whole number >= 1, got True \(bool\)"),
        ({"a": nn.Identity()}, torch.ones(1), {"warmup": 1.5}, r"warmup must be a whole number >= 0, got 1\.5"),
        ({"a": nn.Identity()}, "a sentence", {}, r"inputs must be a mapping .*got str: tokenize text first"),
        ({"a": nn.Identity()}, 3, {}, r"inputs must be a mapping .*got int"),
    ],
    ids=["models_list", "model_name", "repeats_bool", "warmup_fraction", "text_inputs", "number_inputs"],
)
def test_arguments_of_the_wrong_kind_are_refused_naming_them(models, inputs, kwargs, message):
    # Before: AttributeErrors ('list' object has no attribute 'values'), repeats=True timed once, and
    # text was unpacked into one positional argument per letter.
    with pytest.raises(InputError, match=message):
        compare_latency(models, inputs, **kwargs)


def test_inference_time_refuses_a_model_that_is_not_a_module():
    with pytest.raises(InputError, match=r"inference_time: model must be a torch\.nn\.Module"):
        inference_time("bert", torch.ones(1))


def test_a_model_that_fails_on_the_inputs_is_named():
    # With several models the bare error does not say which one the inputs do not fit.
    models = {"dense": nn.Linear(4, 2), "slim": nn.Linear(3, 2)}
    with pytest.raises(InputError, match=r"The model 'slim' fails on the inputs: RuntimeError: .*shapes cannot be multiplied") as error:
        compare_latency(models, torch.ones(1, 4), warmup=0, repeats=2)
    assert isinstance(error.value.__cause__, RuntimeError)
    keyword = {"model": nn.Identity()}
    with pytest.raises(InputError, match=r"The model 'model' fails on the inputs \(keys \['input_ids'\]\): TypeError"):
        compare_latency(keyword, {"input_ids": torch.ones(1)}, warmup=0, repeats=1)
