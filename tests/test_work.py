"""The work count of `nn_prune_ext.work` against hand counts, for every registered architecture."""

import pytest
import torch
from transformers import AutoModel

from nn_prune_ext import StructureMasks, get_layout, model_flops, prune_with_masks, supported_model_types
from nn_prune_ext.flops import LayerShape
from nn_prune_ext.validation import InputError
from nn_prune_ext.work import LayerWork, layer_work, model_work

from conftest import HEADS, INTERMEDIATE, KV_HEADS, LAYERS, hidden_size, tiny_config, tiny_model
from test_arch_encoder_decoder import seq2seq_config

SEQ, BATCH = 12, 2

# What each family computes, written down from its modeling code rather than read from our layouts.
GATED = {"gemma", "gemma2", "gemma3_text", "granite", "llama", "mistral", "modernbert", "olmo2", "phi3", "qwen2", "qwen3"}
WITH_KV_HEADS = {"falcon", "gemma", "gemma2", "gemma3_text", "granite", "llama", "mistral", "mixtral", "olmo2", "phi",
                 "phi3", "qwen2", "qwen3", "starcoder2"}
# Norms over the hidden size per layer: two (one per sublayer) unless noted. Gemma 2/3 norm before and after
# each sublayer; Phi has one norm for its parallel attention and FFN; OLMo 2 norms after each sublayer and over
# the whole query; ModernBERT's first layer has an identity in place of its attention norm.
NORMS = {"gemma2": 4, "gemma3_text": 4, "phi": 1, "olmo2": 3}
# Mixtral: the experts are not pruned; a token runs its top 2 experts (3 matrices each) and the router.
EXPERTS_TOP_K, EXPERTS = 2, 8


def test_layer_work_by_hand():
    shape = LayerShape(hidden=8, num_heads=2, num_kv_heads=1, head_dim=4, ffn_width=16, gated=True)
    work = layer_work(shape, seq_len=10, batch_size=3, sublayers=2, norms=2)
    tokens = 30
    attention = tokens * 8 * 4 * (2 * 2 + 2 * 1) + 2 * 3 * 2 * 10 * 10 * 4  # projections, then scores and values
    assert work.matmul_macs == attention + tokens * 8 * 16 * 3
    softmax, activation, norms_and_sums = 5 * 3 * 2 * 100, tokens * 16 * (8 + 1), tokens * 8 * (5 * 2 + 2)
    assert work.vector_flops == softmax + activation + norms_and_sums
    assert (work.attention_blocks, work.ffn_blocks, work.layers) == (1, 1, 1)
    assert work.flops == 2 * work.matmul_macs + work.vector_flops


def test_a_layer_without_heads_or_units_keeps_only_its_norms_and_sums():
    shape = LayerShape(hidden=8, num_heads=0, num_kv_heads=0, head_dim=4, ffn_width=0)
    assert layer_work(shape, 5, 2) == LayerWork(0, 10 * 8 * (5 * 2 + 2), 0, 0, 1)


def test_bert_work_in_numbers():
    # 64 wide, 4 heads of 16, FFN 128, 2 layers; 2 sequences of 12 tokens: 24 tokens.
    # MACs per layer: 24*64*16*16 (q, k, v, o) + 2*2*4*144*16 (scores, values) + 24*64*128*2 (FFN) = 823,296.
    # Vector FLOPs per layer: 5*2*4*144 (softmax) + 24*128*8 (GELU) + 24*64*(5*2 + 2) (2 norms, 2 sums) = 48,768.
    assert model_work(tiny_model("bert"), SEQ, BATCH) == LayerWork(2 * 823_296, 2 * 48_768, 2, 2, 2)


def _base_model(model_type: str):
    torch.manual_seed(0)
    layout = get_layout(model_type)
    config = seq2seq_config(model_type) if layout.decoder is not None else tiny_config(model_type)
    return AutoModel.from_config(config).eval()


def _by_hand(model_type: str) -> LayerWork:
    """The work of the tiny model of `model_type` (all layers), from the sizes the tests gave its config."""
    hidden, tokens = hidden_size(model_type), BATCH * SEQ
    head_dim, kv_heads = hidden // HEADS, KV_HEADS if model_type in WITH_KV_HEADS else HEADS
    gated = model_type in GATED
    attention_macs = tokens * hidden * head_dim * (2 * HEADS + 2 * kv_heads) + 2 * BATCH * HEADS * SEQ * SEQ * head_dim
    softmax = 5 * BATCH * HEADS * SEQ * SEQ
    if model_type == "mixtral":
        ffn_macs, activation = tokens * (EXPERTS_TOP_K * 3 * hidden * INTERMEDIATE + hidden * EXPERTS), 0
    else:
        ffn_macs = tokens * hidden * INTERMEDIATE * (3 if gated else 2)
        activation = tokens * INTERMEDIATE * (8 + gated)
    total = LayerWork()
    stacks = [("encoder", 1), ("decoder", 2)] if get_layout(model_type).decoder is not None else [("", 1)]
    for _, blocks in stacks:
        for position in range(LAYERS):
            norms = NORMS.get(model_type, blocks + 1)
            if model_type == "modernbert" and position == 0:
                norms = 1
            vector = blocks * softmax + activation + tokens * hidden * (5 * norms + blocks + 1)
            total += LayerWork(blocks * attention_macs + ffn_macs, vector, blocks, 1, 1)
    return total


@pytest.mark.parametrize("any_type", supported_model_types())
def test_model_work_equals_the_hand_count_for_every_registered_architecture(any_type):
    model = _base_model(any_type)
    assert model_work(model, SEQ, BATCH) == _by_hand(any_type)


def test_matrix_products_are_the_flops_count(model_type):
    model = tiny_model(model_type)
    assert model_work(model, SEQ, BATCH).matmul_macs == BATCH * model_flops(model, SEQ) // 2


def test_slim_work_counts_what_the_slim_model_keeps(model_type):
    model = tiny_model(model_type)
    masks = StructureMasks.from_kept(model, heads=[range(1), []], units=[range(INTERMEDIATE // 2), range(1)])
    slim = prune_with_masks(model, masks)
    work = model_work(slim, SEQ, BATCH)
    assert work.attention_blocks == 1  # the second layer lost its heads
    assert work.ffn_blocks == 2 and work.layers == LAYERS
    dense = model_work(model, SEQ, BATCH)
    assert work.matmul_macs < dense.matmul_macs and 0 < work.vector_flops < dense.vector_flops
    # What a layer computes whatever its sizes (norms and sums) is still there: the vector work
    # shrinks by less than the matrix products.
    assert work.vector_flops / dense.vector_flops > work.matmul_macs / dense.matmul_macs


@pytest.mark.parametrize("seq_len, batch_size", [(0, 1), (4, 0)])
def test_bad_sizes_are_input_errors(seq_len, batch_size):
    with pytest.raises(InputError, match="at least 1"):
        layer_work(LayerShape(8, 2, 2, 4, 16), seq_len, batch_size)
