"""Projection adapters: every storage and fusion read as (out, in) roles, split and joined exactly."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from nn_prune_ext.arch import ProjectionSite, SplitProjection, UnsupportedProjectionError
from nn_prune_ext.arch.projections import Projection, combine_rows, role_rows, stock_module

HIDDEN, HEAD_DIM = 12, 2
QKV = ("query", "key", "value")


def fused_module(storage: str, rows: int, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    module = nn.Linear(HIDDEN, rows) if storage == "linear" else Conv1D(rows, HIDDEN)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.normal_()
    return module


@pytest.mark.parametrize("interleave", ["blocks", "heads"])
def test_role_rows_and_combine_rows_are_inverse(interleave):
    sizes = [6, 6, 6]
    matrix = torch.arange(18 * 3).reshape(18, 3)
    parts = [role_rows(matrix, sizes, index, interleave, HEAD_DIM) for index in range(3)]
    assert torch.equal(combine_rows(parts, interleave, HEAD_DIM), matrix)
    if interleave == "blocks":
        assert torch.equal(parts[1], matrix[6:12])
    else:  # head h of role r sits at rows [h * 3 * d + r * d, ... + d)
        assert torch.equal(parts[1][:HEAD_DIM], matrix[HEAD_DIM : 2 * HEAD_DIM])
        assert torch.equal(parts[1][HEAD_DIM : 2 * HEAD_DIM], matrix[4 * HEAD_DIM : 5 * HEAD_DIM])


@pytest.mark.parametrize("storage", ["linear", "conv1d"])
@pytest.mark.parametrize("interleave", ["blocks", "heads"])
def test_projection_views_read_each_role_as_out_in(storage, interleave):
    module = fused_module(storage, 18)
    site = ProjectionSite("qkv", QKV, interleave)
    x = torch.randn(3, HIDDEN)
    fused_output = module(x)
    for index, role in enumerate(QKV):
        view = Projection(module, "qkv", role, site, [6, 6, 6], HEAD_DIM)
        assert (view.out_features, view.in_features) == (6, HIDDEN)
        expected = role_rows(fused_output.t(), [6, 6, 6], index, interleave, HEAD_DIM).t()
        torch.testing.assert_close(x @ view.weight.t() + view.bias, expected)


def test_group_interleaved_rows_are_each_groups_queries_then_its_key_and_value():
    """Falcon's new decoder architecture: per key/value group [q_1 .. q_r k v] (2 groups of 2 query heads)."""
    head = lambda group, slot: torch.full((HEAD_DIM, HIDDEN), 10.0 * group + slot)  # noqa: E731
    fused = torch.cat([head(group, slot) for group in range(2) for slot in range(4)])  # q, q, k, v per group
    sizes = [4 * HEAD_DIM, 2 * HEAD_DIM, 2 * HEAD_DIM]
    parts = [role_rows(fused, sizes, index, "heads", HEAD_DIM) for index in range(3)]
    assert [part[::HEAD_DIM, 0].tolist() for part in parts] == [[0, 1, 10, 11], [2, 12], [3, 13]]
    torch.testing.assert_close(combine_rows(parts, "heads", HEAD_DIM), fused, rtol=0, atol=0)


@pytest.mark.parametrize("storage", ["linear", "conv1d"])
@pytest.mark.parametrize("interleave", ["blocks", "heads", "groups"])
def test_split_projection_computes_and_saves_like_the_stock_module(storage, interleave):
    # Grouped-query sizes for blocks (8 query rows, 4 + 4 key/value rows) and groups (per key/value group
    # [q q k v]); equal sizes per head.
    sizes = {"blocks": [8, 4, 4], "heads": [6, 6, 6], "groups": [8, 4, 4]}[interleave]
    interleave = "heads" if interleave == "groups" else interleave
    module = fused_module(storage, sum(sizes))
    site = ProjectionSite("qkv", QKV, interleave)
    split = SplitProjection.from_stock(module, site, sizes, HEAD_DIM, "layer 0 qkv")
    assert all(type(part) is nn.Linear for part in split.parts())
    x = torch.randn(2, 5, HIDDEN)
    torch.testing.assert_close(split(x), module(x))
    # The state dict is the stock one: same keys, shapes and values.
    stock_state, split_state = module.state_dict(), split.state_dict()
    assert set(split_state) == set(stock_state)
    for key, value in stock_state.items():
        assert torch.equal(split_state[key], value)
    # Loading a stock state dict fills the parts.
    other = fused_module(storage, sum(sizes), seed=1)
    split.load_state_dict(other.state_dict())
    torch.testing.assert_close(split(x), other(x))
    # And joining gives the stock module back.
    joined = split.to_stock()
    assert type(joined) is type(module) and joined.weight.shape == module.weight.shape
    torch.testing.assert_close(joined(x), other(x))


def test_a_single_conv1d_role_is_split_into_a_transposed_linear():
    module = fused_module("conv1d", 7)
    split = SplitProjection.from_stock(module, ProjectionSite("c_proj", ("output",)), [7], HEAD_DIM, "c_proj")
    x = torch.randn(4, HIDDEN)
    torch.testing.assert_close(split(x), module(x))
    assert split.output.weight.shape == (7, HIDDEN)
    assert set(split.state_dict()) == {"weight", "bias"} and split.state_dict()["weight"].shape == (HIDDEN, 7)


def test_stock_module_stores_an_empty_conv1d_as_linear():
    empty = stock_module("conv1d", [torch.zeros(5, 0)], [torch.ones(5)])
    assert type(empty) is nn.Linear
    assert torch.equal(empty(torch.zeros(2, 3, 0)), torch.ones(2, 3, 5))
    full = stock_module("conv1d", [torch.randn(5, 3)], [torch.zeros(5)])
    assert type(full) is Conv1D and full.weight.shape == (3, 5)


def test_an_unknown_projection_module_is_named():
    site = ProjectionSite("attn.proj", ("output",))
    with pytest.raises(UnsupportedProjectionError, match=r"attn\.proj is a Conv2d"):
        Projection(nn.Conv2d(2, 2, 1), "attn.proj", "output", site, [2], HEAD_DIM)
