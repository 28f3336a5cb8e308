"""`SpeedModel`: predictions from work, and a calibration that recovers known rates (no timing asserted)."""

from types import SimpleNamespace

import pytest

import nn_prune_ext.speed as speed_module
from nn_prune_ext import InputError, LayerWork, SpeedModel, StructureMasks, calibrate_speed_model, model_work
from nn_prune_ext import prune_with_masks
from nn_prune_ext.speed import can_calibrate

from conftest import INTERMEDIATE, tiny_model

RATES = dict(ms_per_gmac=20.0, ms_per_gflop=90.0, ms_per_attention_block=0.3, ms_per_ffn_block=0.2,
             ms_per_layer=0.1, ms_outside_layers=0.5)


def test_prediction_is_the_sum_of_work_times_rates():
    model = SpeedModel(**RATES, batch_size=1, seq_len=8)
    work = LayerWork(matmul_macs=2_000_000_000, vector_flops=100_000_000, attention_blocks=3, ffn_blocks=2, layers=4)
    assert model.predict_ms(work) == pytest.approx(20.0 * 2 + 90.0 * 0.1 + 0.3 * 3 + 0.2 * 2 + 0.1 * 4 + 0.5)
    assert model.predict_ms(LayerWork()) == 0.5  # no layers: what lies outside them


def test_fixed_costs_make_the_speed_limit_lower_than_the_flops_limit(model_type):
    dense = tiny_model(model_type)
    slim = prune_with_masks(dense, StructureMasks.from_kept(dense, heads=[range(1)] * 2, units=[range(8)] * 2))
    speed = SpeedModel(**RATES, batch_size=4, seq_len=16)
    dense_work, slim_work = model_work(dense, 16, 4), model_work(slim, 16, 4)
    assert speed.speedup(dense, slim) == pytest.approx(speed.predict_ms(dense_work) / speed.predict_ms(slim_work))
    assert 1 < speed.speedup(dense, slim) < dense_work.matmul_macs / slim_work.matmul_macs
    assert speed.speedup(dense, dense) == 1.0
    assert 0 < speed.fixed_share(dense) < speed.fixed_share(slim) < 1


def test_calibration_recovers_the_rates_of_a_device_that_follows_the_model(monkeypatch):
    """Time is replaced by the model itself with known rates: the fit must find them again."""
    truth = SpeedModel(**RATES, batch_size=2, seq_len=8)
    timed_variants = []

    def fake_compare_latency(models, inputs, **kwargs):
        assert inputs["input_ids"].shape == (2, 8)
        timed_variants.extend(models)
        results = {name: SimpleNamespace(median_ms=truth.predict_ms(model_work(model, 8, 2)))
                   for name, model in models.items()}
        return SimpleNamespace(results=results)

    monkeypatch.setattr(speed_module, "compare_latency", fake_compare_latency)
    fitted = calibrate_speed_model(tiny_model("bert"), batch_size=2, seq_len=8)
    for name, value in RATES.items():
        assert getattr(fitted, name) == pytest.approx(value, rel=1e-6, abs=1e-9), name
    assert (fitted.batch_size, fitted.seq_len) == (2, 8)
    assert len(timed_variants) == 10
    assert "1 layers, 4 heads, 128 units" in timed_variants and f"2 layers, 2 heads, {INTERMEDIATE // 4} units" in timed_variants


def test_calibration_on_this_machine_gives_non_negative_rates():
    fitted = calibrate_speed_model(tiny_model("llama"), batch_size=1, seq_len=8, warmup=1, repeats=2)
    assert all(getattr(fitted, name) >= 0 for name in RATES)
    assert fitted.model_ms(tiny_model("llama")) > 0


def test_calibration_refuses_bad_sizes():
    with pytest.raises(InputError, match="at least 1"):
        calibrate_speed_model(tiny_model("bert"), batch_size=0)


def test_calibration_needs_one_stack_and_pruned_ffns():
    from test_arch_encoder_decoder import tiny_seq2seq
    from test_arch_experts import mixtral

    assert can_calibrate(tiny_model("bert")) and can_calibrate(tiny_model("qwen3"))
    assert not can_calibrate(tiny_seq2seq("t5")) and not can_calibrate(mixtral())
    with pytest.raises(InputError, match="one stack"):
        calibrate_speed_model(tiny_seq2seq("bart"))


def test_a_latency_budget_counted_with_the_work_model(monkeypatch):
    """post_training_prune with latency_model="work": the search keeps the budget of the fitted speed model."""
    from nn_prune_ext import PostTrainingArgs, post_training_prune

    from conftest import labelled_batches

    known = SpeedModel(**RATES, batch_size=8, seq_len=12)
    monkeypatch.setattr(speed_module, "calibrate_speed_model", lambda model, **kwargs: known)
    dense = tiny_model("bert")
    result = post_training_prune(dense, labelled_batches(4), PostTrainingArgs(latency_budget=0.5, latency_model="work"))
    assert result.search.cost <= result.search.budget == pytest.approx(0.5 * result.search.dense_cost)
    # The search's cost is the blocks' predicted time: the layers' time without what every layer costs whatever
    # it keeps (its fixed cost, and its 2 norms and 2 residual sums over 8 x 12 tokens of 64).
    norms_and_sums_ms = known.ms_per_gflop * 2 * 8 * 12 * 64 * (5 * 2 + 2) / 1e9
    dense_blocks, slim_blocks = (known.block_ms(model_work(model, 12, 8)) - norms_and_sums_ms
                                 for model in (dense, result.model))
    assert result.search.dense_cost == pytest.approx(dense_blocks)
    assert slim_blocks == pytest.approx(result.search.cost, rel=1e-6)


def test_the_work_model_as_a_search_cost_is_zero_for_nothing_and_grows_with_sizes():
    cost = SpeedModel(**RATES, batch_size=2, seq_len=8).layer_cost_model(tiny_model("bert"))
    assert cost.attention(0, [0] * 4) == 0 == cost.ffn(0, 0)
    assert 0.3 < cost.attention(0, [1, 0, 0, 0]) < cost.attention(0, [1, 1, 1, 1])  # the fixed cost, then more
    assert 0.2 < cost.ffn(0, 1) < cost.ffn(0, INTERMEDIATE)


def test_latency_model_must_be_known():
    from nn_prune_ext import PostTrainingArgs

    with pytest.raises(InputError, match="latency_model must be one of table, work"):
        PostTrainingArgs(latency_budget=0.5, latency_model="lut")
