import pytest
import torch
from torch import nn

from nn_prune_ext.scores.masked_linear import apply_grid_mask, masked_linear


def _reference(x, weight, bias, grid, mask_bias):
    rows, cols = grid.shape
    full = grid.repeat_interleave(weight.shape[0] // rows, 0).repeat_interleave(weight.shape[1] // cols, 1)
    b = bias
    if bias is not None and mask_bias:
        b = bias * full[:, 0]
    return torch.nn.functional.linear(x, weight * full, b)


GRIDS = [(4, 2), (12, 1), (1, 8), (3, 4)]


@pytest.mark.parametrize("grid_shape", GRIDS)
@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("mask_bias", [True, False])
@pytest.mark.parametrize("strided_upstream", [False, True], ids=["contiguous_grad", "strided_grad"])
def test_forward_and_gradients_match_the_dense_reference(grid_shape, with_bias, mask_bias, strided_upstream):
    torch.manual_seed(0)
    mask_bias = mask_bias and grid_shape[1] == 1
    x = torch.randn(3, 5, 16, dtype=torch.float64)
    weight = torch.randn(12, 16, dtype=torch.float64)
    bias = torch.randn(12, dtype=torch.float64) if with_bias else None
    # A fractional grid (as hard-concrete gates are) checks the gradient of the mask itself.
    grid = torch.rand(grid_shape, dtype=torch.float64)
    grid[0, 0] = 0.0

    leaves = [t.clone().requires_grad_() for t in (x, weight, grid)] + ([bias.clone().requires_grad_()] if with_bias else [])
    out = masked_linear(leaves[0], leaves[1], leaves[3] if with_bias else None, leaves[2], mask_bias)
    ref_leaves = [t.clone().requires_grad_() for t in (x, weight, grid)] + ([bias.clone().requires_grad_()] if with_bias else [])
    ref = _reference(ref_leaves[0], ref_leaves[1], ref_leaves[3] if with_bias else None, ref_leaves[2], mask_bias)
    torch.testing.assert_close(out, ref)
    upstream = torch.randn_like(out)
    if strided_upstream:  # as the gradient of a projection whose output was transposed into heads arrives
        upstream = upstream.transpose(1, 2).contiguous().transpose(1, 2)
        assert not upstream.is_contiguous()
    out.backward(upstream)
    ref.backward(upstream)
    for mine, theirs in zip(leaves, ref_leaves):
        torch.testing.assert_close(mine.grad, theirs.grad)


def test_gradcheck():
    torch.manual_seed(0)
    x = torch.randn(2, 6, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(4, dtype=torch.float64, requires_grad=True)
    grid = torch.rand(2, 1, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *a: masked_linear(*a, True), (x, weight, bias, grid))


def test_bfloat16_autocast_matches_autocast_reference():
    torch.manual_seed(0)
    linear = nn.Linear(32, 16)
    grid = (torch.rand(4, 2) > 0.4).float()
    x = torch.randn(8, 32, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = masked_linear(x, linear.weight, linear.bias, grid)
        ref = torch.nn.functional.linear(x, apply_grid_mask(linear.weight, grid), linear.bias)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out, ref)
    out.float().sum().backward()
    assert x.grad.dtype == torch.float32 and linear.weight.grad.dtype == torch.float32


def test_saves_no_weight_sized_tensor_beyond_the_input():
    x = torch.randn(64, 256, requires_grad=True)
    weight = torch.randn(512, 256, requires_grad=True)
    grid = torch.ones(16, 8, requires_grad=True)
    saved: list[torch.Tensor] = []

    def pack(tensor):
        saved.append(tensor)
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        masked_linear(x, weight, None, grid)
    # Only the input, the weight parameter itself and the small grid: no masked weight copy.
    assert {t.data_ptr() for t in saved if t.numel() == weight.numel()} == {weight.data_ptr()}
    assert sum(t.numel() for t in saved if t.data_ptr() not in (x.data_ptr(), weight.data_ptr())) <= grid.numel()


def test_a_patched_model_compiles_without_graph_breaks_and_equals_eager():
    """torch.compile traces the masks, the masked linears and their backward in one graph (fullgraph=True raises
    at any graph break); `aot_eager` needs no C compiler and still runs the traced forward and backward.

    The thresholds are graph inputs: a schedule moving them every step must not recompile (each threshold read
    as a Python float would be a guarded constant), and the compiled masks must follow them.
    """
    from torch._dynamo.testing import CompileCounterWithBackend

    from nn_prune_ext import SparseArgs, patch_model, set_thresholds
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(num_hidden_layers=2, hidden_size=64, num_attention_heads=4, intermediate_size=128,
                        vocab_size=100, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = patch_model(BertForSequenceClassification(config),
                        SparseArgs.hybrid(attention_block_rows=16, attention_block_cols=16)).train()
    set_thresholds(model, 0.5, 0.5)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("scores"):
                parameter.normal_()  # about half of every mask pruned
    batch = dict(input_ids=torch.randint(0, 100, (2, 8)), labels=torch.tensor([0, 1]))
    eager = model(**batch).loss
    eager.backward()
    expected = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    counter = CompileCounterWithBackend("aot_eager")
    compiled_model = torch.compile(model, fullgraph=True, backend=counter)
    compiled = compiled_model(**batch).loss
    compiled.backward()
    torch.testing.assert_close(compiled, eager)
    assert any(name.endswith("scores") for name in expected)
    for name, parameter in model.named_parameters():
        if name in expected:
            torch.testing.assert_close(parameter.grad, expected[name], msg=name)

    densities_seen = set()
    for attention, dense in ((0.3, 0.7), (0.6, 0.4), (0.75, 0.75)):
        set_thresholds(model, attention, dense)
        model.zero_grad()
        eager = model(**batch).loss
        eager.backward()
        expected = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
        densities_seen.add(round(float(model.bert.encoder.layer[0].intermediate.dense.grid().detach().mean()), 4))
        model.zero_grad()
        compiled = compiled_model(**batch).loss
        compiled.backward()
        torch.testing.assert_close(compiled, eager)
        for name, parameter in model.named_parameters():
            if name in expected:
                torch.testing.assert_close(parameter.grad, expected[name], msg=f"{name} at {attention}, {dense}")
    assert len(densities_seen) == 3  # the thresholds did change the masks
    assert counter.frame_count == 1  # and never recompiled
