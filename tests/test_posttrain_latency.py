"""Latency lookup tables: measurement on a one-layer slim copy and the hinge fit."""

from __future__ import annotations

import pytest

from nn_prune_ext.posttrain.latency import LatencyTable, _grid, fit_monotone, measure_latency_table

from nn_prune_ext.validation import InputError, NonFiniteError

from conftest import HEADS, INTERMEDIATE, tiny_model


def test_fit_monotone_keeps_the_measured_shape():
    flat_then_linear = [2.0 if n <= 8 else 2.0 + 0.5 * (n - 8) for n in range(1, 21)]
    curve = fit_monotone(list(range(1, 21)), flat_then_linear)
    assert [curve(n) for n in range(1, 21)] == pytest.approx(flat_then_linear)
    assert curve(0) == 0.0 and curve(30) == pytest.approx(2.0 + 0.5 * 22)  # extended with the last slope
    convex = [0.4, 0.8, 1.6, 3.4, 9.0, 30.0]
    counts = [1, 26, 75, 137, 700, 1536]
    curve = fit_monotone(counts, convex)
    assert [curve(n) for n in counts] == pytest.approx(convex)
    assert curve(400) == pytest.approx(3.4 + (9.0 - 3.4) * (400 - 137) / (700 - 137))


def test_fit_monotone_pools_decreasing_noise_and_is_never_negative():
    curve = fit_monotone([1, 2, 3, 4], [1.0, 0.8, 1.1, 0.9])
    # 1.0 > 0.8 pool to 0.9; then 1.1 > 0.9 pool to 1.0: non-decreasing, means preserved.
    assert [curve(n) for n in (1, 2, 3, 4)] == pytest.approx([0.9, 0.9, 1.0, 1.0])
    assert fit_monotone([1, 2], [-1.0, -2.0])(2) == 0.0
    with pytest.raises(ValueError, match="one latency per count"):
        fit_monotone([1, 2], [1.0])


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_fit_monotone_refuses_a_failed_timing(bad):
    """Issue 13: max(nan, 0.0) is nan, which pooling spread and the search took as a free size."""
    with pytest.raises(NonFiniteError, match=f"latency at count 2 is {bad}: measure the latency table again"):
        fit_monotone([1, 2, 3], [1.0, bad, 2.0])
    with pytest.raises(InputError, match="latency at count 3 must be a number of milliseconds, got None"):
        fit_monotone([1, 2, 3], [1.0, 2.0, None])


def test_grid_is_dense_at_the_small_end():
    grid = _grid(1536, 16)
    assert grid[0] == 1 and grid[-1] == 1536 and grid == sorted(set(grid))
    assert len(grid) <= 16 and grid[1] - grid[0] < grid[-1] - grid[-2]
    assert _grid(5, 16) == [1, 2, 3, 4, 5]


@pytest.mark.parametrize("model_type", ["bert", "llama"])
def test_measure_latency_table(model_type):
    model = tiny_model(model_type)
    # Inputs large enough that a layer's time stands above the timer's noise on a busy machine (at 2 x 8
    # tokens every difference to the empty layer was once measured as 0).
    table = measure_latency_table(model, batch_size=4, seq_len=64, ffn_points=5, warmup=1, repeats=3)
    # Under GQA (2 query heads per key/value head) keeping 3 heads gives a padded slim layer of 4.
    assert table.head_counts == ((1, 2, 4) if model_type == "llama" else tuple(range(1, HEADS + 1)))
    assert table.ffn_widths[0] == 1 and table.ffn_widths[-1] == INTERMEDIATE and len(table.ffn_widths) <= 5
    assert len(table.attention_ms) == len(table.head_counts) and len(table.ffn_ms) == len(table.ffn_widths)
    assert min(table.attention_ms + table.ffn_ms) >= 0.0
    cost = table.cost_model()
    assert cost.attention(0, [0] * HEADS) == 0.0 and cost.ffn(0, 0) == 0.0
    assert "latency of one layer, batch 4 x 64 tokens" in str(table)


@pytest.mark.parametrize(("name", "bad"), [("batch_size", 0), ("seq_len", 12.5), ("ffn_points", None)])
def test_measure_latency_table_checks_its_sizes_first(name, bad):
    with pytest.raises(InputError, match=rf"measure_latency_table\({name}=\.\.\.\) must be a whole number >= 1, got {bad!r}"):
        measure_latency_table(tiny_model("bert"), **{name: bad})


def test_a_table_without_latency_is_refused():
    table = LatencyTable(head_counts=(1, 2), attention_ms=(0.0, 0.0), ffn_widths=(1, 8), ffn_ms=(0.0, 0.0),
                         batch_size=1, seq_len=1)
    with pytest.raises(ValueError, match="no positive latency"):
        table.cost_model()
