import json

import pytest
from transformers import AutoModelForCausalLM

from nn_prune_ext import InputError, densities, get_layout, model_flops, optimize_model
from nn_prune_ext.slim.layers import drop_layers
from nn_prune_ext.slim.optimize import count_parameters
from nn_prune_ext.summary import summary

from conftest import HIDDEN, INTERMEDIATE, LAYERS, VOCAB, tiny_config, tiny_model
from slim_helpers import masked_model

# Hand counts for the tiny configs (hidden 64, FFN 128, 4 heads of 16, 2 key/value heads under GQA).
BERT_ATTENTION = 4 * (HIDDEN * HIDDEN + HIDDEN)  # q, k, v, o with biases
BERT_FFN = (HIDDEN * INTERMEDIATE + INTERMEDIATE) + (INTERMEDIATE * HIDDEN + HIDDEN)
BERT_OTHER = 2 * 2 * HIDDEN  # two LayerNorms
LLAMA_ATTENTION = 2 * HIDDEN * HIDDEN + 2 * HIDDEN * 32  # q, o: 64 x 64; k, v: 2 heads of 16; no biases
LLAMA_FFN = 3 * HIDDEN * INTERMEDIATE
LLAMA_OTHER = 2 * HIDDEN  # two RMSNorms


def test_dense_bert_counts_by_hand():
    model = tiny_model("bert")
    result = summary(model, seq_len=32)
    assert result.modules == {
        "embeddings": VOCAB * HIDDEN + 64 * HIDDEN + 2 * HIDDEN + 2 * HIDDEN,  # words, positions, types, LayerNorm
        "layers": LAYERS * (BERT_ATTENTION + BERT_FFN + BERT_OTHER),
        "pooler": HIDDEN * HIDDEN + HIDDEN,
        "classifier": HIDDEN * 3 + 3,
    }
    assert result.parameters == sum(p.numel() for p in model.parameters()) == 83_843
    layer = result.layers[1]
    assert (layer.index, layer.attention_parameters, layer.ffn_parameters, layer.other_parameters) == (
        1, BERT_ATTENTION, BERT_FFN, BERT_OTHER
    )
    assert (layer.heads, layer.kv_heads, layer.ffn_width) == (layer.dense_heads, layer.dense_kv_heads,
                                                              layer.dense_ffn_width) == (4, 4, 128)
    # Per token: projections 64 x 16 x (2 x 4 + 2 x 4), attention 2 x 4 x 16 x 32, FFN 2 x 64 x 128; FLOPs = 2 MACs.
    assert layer.flops == layer.dense_flops == 2 * 32 * (64 * 16 * 16 + 2 * 4 * 16 * 32 + 2 * 64 * 128)
    assert result.flops == result.dense_flops == model_flops(model, 32)
    assert (result.state, result.dense_parameters, result.mask_densities) == ("dense", None, None)
    text = str(result).splitlines()
    assert text[:3] == ["BertForSequenceClassification (bert), dense", "parameters: 83,843",
                        "  embeddings          12,544"]
    assert text[6:8] == ["layer  heads  kv heads  FFN width  attention     FFN  other      FLOPs",
                         "    0    4/4       4/4    128/128     16,640  16,576    256  2,359,296"]
    assert text[-1] == "FLOPs of the transformer layers, one sequence of 32 tokens: 4,718,592"


def test_tied_embeddings_count_once_and_gqa_sizes():
    model = AutoModelForCausalLM.from_config(tiny_config("llama", tie_word_embeddings=True))
    assert model.lm_head.weight is model.model.embed_tokens.weight
    result = summary(model)
    assert result.modules == {"embed_tokens": VOCAB * HIDDEN, "layers": LAYERS * (LLAMA_ATTENTION + LLAMA_FFN
                                                                                  + LLAMA_OTHER), "norm": HIDDEN}
    assert result.parameters == sum(p.numel() for p in model.parameters())
    assert [(layer.heads, layer.kv_heads, layer.ffn_width, layer.attention_parameters, layer.other_parameters)
            for layer in result.layers] == [(4, 2, 128, LLAMA_ATTENTION, LLAMA_OTHER)] * LAYERS


def test_every_architecture_adds_up(model_type):
    model = tiny_model(model_type)
    result = summary(model, seq_len=16)
    assert result.parameters == count_parameters(model)
    layers = get_layout(model).layer_list(model)
    assert [layer.parameters for layer in result.layers] == [count_parameters(layer) for layer in layers]
    assert result.modules["layers"] == sum(count_parameters(layer) for layer in layers)
    assert result.flops == model_flops(model, 16)


def test_slim_model_against_its_dense_model():
    dense = tiny_model("bert")
    slim = optimize_model(masked_model("bert"))
    result = summary(slim, seq_len=64)
    assert result.state == "slim"
    assert [((r.heads[1], r.kv_heads[1], r.ffn_width[1]), (r.heads[0], r.kv_heads[0], r.ffn_width[0]))
            for r in slim.slim_report.layers] == [
        ((layer.heads, layer.kv_heads, layer.ffn_width), (layer.dense_heads, layer.dense_kv_heads,
                                                          layer.dense_ffn_width))
        for layer in result.layers
    ]
    assert result.layers[-1].heads == result.layers[-1].ffn_width == 0  # the emptied last layer
    assert (result.parameters, result.dense_parameters) == (count_parameters(slim), count_parameters(dense))
    assert (result.flops, result.dense_flops) == (model_flops(slim, 64), model_flops(dense, 64))
    text = str(result)
    assert f"parameters: {result.parameters:,} (dense {count_parameters(dense):,}: " in text
    assert f"one sequence of 64 tokens: {result.flops:,} (dense {result.dense_flops:,}: " in text


def test_patched_model_lists_its_mask_densities():
    model = masked_model("bert")
    result = summary(model)
    assert result.state == "patched" and result.mask_densities == densities(model)
    assert result.parameters == count_parameters(model)  # mask scores included, with their linears
    assert [(layer.heads, layer.ffn_width) for layer in result.layers] == [(4, 128)] * LAYERS
    # One score per head (shared by q, k, v, o) and one per FFN unit.
    assert [(layer.attention_parameters, layer.ffn_parameters) for layer in result.layers] == [
        (BERT_ATTENTION + 4, BERT_FFN + INTERMEDIATE)
    ] * LAYERS
    assert "mask densities (patched, current thresholds): attention 25.0%" in str(result)


def test_to_dict_is_json_ready():
    result = summary(optimize_model(masked_model("llama")), seq_len=8)
    data = json.loads(json.dumps(result.to_dict()))
    assert data["parameters"] == result.parameters and data["flops"] == result.flops
    assert data["dense_flops"] == result.dense_flops and data["modules"] == result.modules
    assert [layer["parameters"] for layer in data["layers"]] == [layer.parameters for layer in result.layers]
    assert data["layers"][0]["kv_heads"] == result.layers[0].kv_heads and data["state"] == "slim"


@pytest.mark.parametrize("seq_len", [0, 1.5, "128"], ids=["zero", "fraction", "text"])
def test_bad_sequence_length(seq_len):
    # Before: 1.5 gave a summary with fractional FLOPs and "128" a TypeError on `<`.
    with pytest.raises(InputError, match=rf"summary\(seq_len=\.\.\.\) .* must be a whole number >= 1, got {seq_len!r}"):
        summary(tiny_model("bert"), seq_len=seq_len)


def test_a_model_that_is_not_a_module_is_refused():
    with pytest.raises(InputError, match=r"summary: model must be a torch\.nn\.Module .*'bert' \(str\)"):
        summary("bert")


def test_layers_dropped_whole_keep_their_dense_rows():
    dense = tiny_model("llama")
    slim = optimize_model(masked_model("llama"))  # its emptied last (pre-norm) layer is dropped
    assert len(get_layout(slim).layer_list(slim)) == LAYERS - 1
    result = summary(slim, seq_len=8)
    last = result.layers[-1]
    assert [layer.dropped for layer in result.layers] == [False, True]
    assert (last.index, last.parameters, last.heads, last.kv_heads, last.ffn_width, last.flops) == (1, 0, 0, 0, 0, 0)
    assert (last.dense_heads, last.dense_kv_heads, last.dense_ffn_width) == (4, 2, 128)
    assert result.layers[0].parameters == count_parameters(get_layout(slim).layer_list(slim)[0])
    assert (result.parameters, result.dense_parameters) == (count_parameters(slim), count_parameters(dense))
    assert (result.flops, result.dense_flops) == (model_flops(slim, 8), model_flops(dense, 8))
    assert str(result).splitlines()[-2] == "1 (dropped)    0/4       0/2      0/128          0       0      0        0"
    shallow = drop_layers(dense, [0])  # a stock model that lost a layer
    result = summary(shallow)
    assert (result.state, result.dense_parameters, [layer.dropped for layer in result.layers]) == (
        "dense", count_parameters(dense), [True, False]
    )
