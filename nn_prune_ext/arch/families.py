"""The built-in layouts, one per family of models. Supporting a new family is one entry here.

```python
from nn_prune_ext import ArchitectureLayout, register_layout

register_layout(
    ArchitectureLayout(
        model_types=("my_model",),
        layers="decoder.blocks",
        query="attn.q", key="attn.k", value="attn.v", output="attn.o",
        ffn_up="mlp.fc_in", ffn_down="mlp.fc_out",
    )
)
```

Roles given one path are fused in that module (GPT-2's `c_attn`); `Conv1D` storage is recognized by
the module's type.
"""

from __future__ import annotations

from dataclasses import replace

from .layout import ArchitectureLayout
from .registry import refuse_model_type, register_layout

__all__ = [
    "BERT_LAYOUT",
    "DISTILBERT_LAYOUT",
    "LLAMA_LAYOUT",
    "GEMMA2_LAYOUT",
    "GRANITE_LAYOUT",
    "PHI_LAYOUT",
    "STARCODER2_LAYOUT",
    "OPT_LAYOUT",
    "GPT2_LAYOUT",
    "GPT_NEOX_LAYOUT",
    "OLMO2_LAYOUT",
    "MIXTRAL_LAYOUT",
    "BLOOM_LAYOUT",
    "FALCON_LAYOUT",
    "PHI3_LAYOUT",
    "VIT_LAYOUT",
    "BART_LAYOUT",
    "DEBERTA_V2_LAYOUT",
    "MODERNBERT_LAYOUT",
    "MPNET_LAYOUT",
    "T5_LAYOUT",
    "T5_GATED_LAYOUT",
]

BERT_LAYOUT = register_layout(
    ArchitectureLayout(
        model_types=("bert", "roberta", "xlm-roberta", "electra"),
        layers="encoder.layer",
        query="attention.self.query",
        key="attention.self.key",
        value="attention.self.value",
        output="attention.output.dense",
        ffn_up="intermediate.dense",
        ffn_down="output.dense",
        norm_placement="post",
        attention="attention.self",
        attention_attrs=(("num_attention_heads", "heads"), ("all_head_size", "width")),
    )
)

DISTILBERT_LAYOUT = register_layout(
    ArchitectureLayout(
        model_types=("distilbert",),
        layers="transformer.layer",
        query="attention.q_lin",
        key="attention.k_lin",
        value="attention.v_lin",
        output="attention.out_lin",
        ffn_up="ffn.lin1",
        ffn_down="ffn.lin2",
        intermediate_size_attr="hidden_dim",
        norm_placement="post",
        ffn_activation_attr="activation",
        attention="attention",
        attention_attrs=(("n_heads", "heads"),),
    )
)

# Qwen 3's q/k norms work on one head at a time (size head_dim), so they follow any kept heads.
LLAMA_LAYOUT = register_layout(
    ArchitectureLayout(
        model_types=("llama", "mistral", "qwen2", "qwen3", "gemma"),
        layers="layers",
        query="self_attn.q_proj",
        key="self_attn.k_proj",
        value="self_attn.v_proj",
        output="self_attn.o_proj",
        ffn_up="mlp.up_proj",
        ffn_gate="mlp.gate_proj",
        ffn_down="mlp.down_proj",
        num_kv_heads_attr="num_key_value_heads",
        norm_placement="pre",
        attention="self_attn",
        attention_attrs=(("num_key_value_groups", "groups"),),
    )
)

# Conv1D projections (stored (in, out)) and one fused [q | k | v] module.
GPT2_LAYOUT = register_layout(
    ArchitectureLayout(
        model_types=("gpt2",),
        layers="h",
        query="attn.c_attn",
        key="attn.c_attn",
        value="attn.c_attn",
        output="attn.c_proj",
        ffn_up="mlp.c_fc",
        ffn_down="mlp.c_proj",
        intermediate_size_attr="n_inner",
        norm_placement="pre",
        ffn_activation_attr="activation_function",
        attention="attn",
        attention_attrs=(("num_heads", "heads"), ("split_size", "width")),
    )
)

# Norms on the sublayers' inputs and outputs; Gemma 3's q/k norms work per head.
GEMMA2_LAYOUT = register_layout(
    replace(LLAMA_LAYOUT, model_types=("gemma2", "gemma3_text"), ffn_activation_attr="hidden_activation",
            norm_placement="sandwich")
)

GRANITE_LAYOUT = register_layout(
    replace(LLAMA_LAYOUT, model_types=("granite",), residual_scale_attr="residual_multiplier")
)

# Attention and FFN read the same normalised input (a parallel block).
PHI_LAYOUT = register_layout(
    ArchitectureLayout(
        model_types=("phi",),
        layers="layers",
        query="self_attn.q_proj",
        key="self_attn.k_proj",
        value="self_attn.v_proj",
        output="self_attn.dense",
        ffn_up="mlp.fc1",
        ffn_down="mlp.fc2",
        num_kv_heads_attr="num_key_value_heads",
        norm_placement="pre",
        attention="self_attn",
        attention_attrs=(("num_key_value_groups", "groups"),),
    )
)

STARCODER2_LAYOUT = register_layout(
    replace(LLAMA_LAYOUT, model_types=("starcoder2",), ffn_up="mlp.c_fc", ffn_gate=None, ffn_down="mlp.c_proj")
)

# Norm placement is a config choice (do_layer_norm_before); the FFN flattens batch and sequence.
OPT_LAYOUT = register_layout(
    ArchitectureLayout(
        model_types=("opt",),
        layers="decoder.layers",
        query="self_attn.q_proj",
        key="self_attn.k_proj",
        value="self_attn.v_proj",
        output="self_attn.out_proj",
        ffn_up="fc1",
        ffn_down="fc2",
        intermediate_size_attr="ffn_dim",
        pre_norm_attr="do_layer_norm_before",
        ffn_activation_attr="activation_function",
        attention="self_attn",
        attention_attrs=(("num_heads", "heads"),),
    )
)

# One fused projection interleaved per head ([q_h k_h v_h]); parallel residual by default.
GPT_NEOX_LAYOUT = register_layout(
    ArchitectureLayout(
        model_types=("gpt_neox",),
        layers="layers",
        query="attention.query_key_value",
        key="attention.query_key_value",
        value="attention.query_key_value",
        output="attention.dense",
        ffn_up="mlp.dense_h_to_4h",
        ffn_down="mlp.dense_4h_to_h",
        qkv_interleave="heads",
        norm_placement="pre",
        attention="attention",
    )
)

# q and k are normalised over all heads at once: heads stay, FFN units are pruned.
OLMO2_LAYOUT = register_layout(
    replace(
        LLAMA_LAYOUT,
        model_types=("olmo2",),
        norm_placement="sandwich",
        fixed_heads="its q and k norms normalise all heads together, so removing a head changes the others",
    )
)

# ALiBi: the model computes one bias per dense head, flattened to [batch * heads, 1, keys], and passes
# it to every layer; a slim layer takes its kept heads' rows. Its attention adds the residual itself.
# The FFN is 4 x hidden wide by construction (no config attribute): slim configs record each layer's
# width under intermediate_size, which only the slim modeling file reads.
BLOOM_LAYOUT = register_layout(
    ArchitectureLayout(
        model_types=("bloom",),
        layers="h",
        query="self_attention.query_key_value",
        key="self_attention.query_key_value",
        value="self_attention.query_key_value",
        output="self_attention.dense",
        ffn_up="mlp.dense_h_to_4h",
        ffn_down="mlp.dense_4h_to_h",
        qkv_interleave="heads",
        num_heads_attr="n_head",
        norm_placement="pre",
        attention="self_attention",
        attention_attrs=(("num_heads", "heads"),),
        head_arguments=("alibi",),
        head_argument_form="flat",
        attention_residual="residual",
        ffn_activation="gelu_new",  # BloomGelu: the tanh approximation
    )
)

# Falcon: one fused query_key_value in three orders, by config: per key/value group [q_1 .. q_r k v]
# (the new decoder architecture, grouped-query), [q | k | v] with one key/value head (multi-query), or
# [q_h k_h v_h] per head. ALiBi models (falcon-rw) fold the per-head bias into the attention mask,
# which every layer takes: a slim layer reads its kept heads' part (a mask without heads passes as is).
FALCON_LAYOUT = ArchitectureLayout(
    model_types=("falcon",),
    layers="h",
    query="self_attention.query_key_value",
    key="self_attention.query_key_value",
    value="self_attention.query_key_value",
    output="self_attention.dense",
    ffn_up="mlp.dense_h_to_4h",
    ffn_down="mlp.dense_4h_to_h",
    qkv_interleave="heads",
    num_kv_heads_attr="num_kv_heads",
    intermediate_size_attr="ffn_hidden_size",
    ffn_activation_attr="activation",
    norm_placement="pre",
    attention="self_attention",
    attention_attrs=(("num_heads", "heads"), ("num_kv_heads", "kv_heads"), ("num_key_value_groups", "groups")),
    head_arguments=("attention_mask",),
)
register_layout(replace(FALCON_LAYOUT, when=("new_decoder_architecture", True)))
register_layout(replace(FALCON_LAYOUT, qkv_interleave="blocks", when=("multi_query", True)))
register_layout(FALCON_LAYOUT)

# A mixture of experts: attention heads are pruned; the experts stay whole, since they are stored as
# 3-d tensors of one width for all experts (each expert's units would need its own width).
MIXTRAL_LAYOUT = register_layout(
    replace(
        LLAMA_LAYOUT,
        model_types=("mixtral",),
        ffn_up=None,
        ffn_gate=None,
        ffn_down=None,
        fixed_ffn=(
            "its FFN is a mixture of experts stored as one tensor of equal width for all experts, so units "
            "cannot be removed from one expert alone"
        ),
        ffn="mlp",
        experts="mlp.experts",
    )
)

# Fused [q | k | v] (grouped-query) and fused [gate | up] projections; the attention reads the number
# of query heads from its config while it runs.
PHI3_LAYOUT = register_layout(
    ArchitectureLayout(
        model_types=("phi3",),
        layers="layers",
        query="self_attn.qkv_proj",
        key="self_attn.qkv_proj",
        value="self_attn.qkv_proj",
        output="self_attn.o_proj",
        ffn_gate="mlp.gate_up_proj",
        ffn_up="mlp.gate_up_proj",
        ffn_down="mlp.down_proj",
        num_kv_heads_attr="num_key_value_heads",
        norm_placement="pre",
        attention="self_attn",
        attention_attrs=(("num_key_value_groups", "groups"), ("num_key_value_heads", "kv_heads")),
        attention_reads_config=True,
    )
)

# Images in, patches as tokens; pre-norm encoder layers.
VIT_LAYOUT = register_layout(
    ArchitectureLayout(
        model_types=("vit",),
        layers="layers",
        query="attention.q_proj",
        key="attention.k_proj",
        value="attention.v_proj",
        output="attention.o_proj",
        ffn_up="mlp.fc1",
        ffn_down="mlp.fc2",
        norm_placement="pre",
        attention="attention",
        attention_attrs=(("num_attention_heads", "heads"),),
        input_kind="pixels",
    )
)

# Encoder-decoder: the layout's own layers are the encoder's; the decoder's layers add a cross-attention
# block (queries from the decoder, keys and values from the encoder's output). Post-norm, like BERT.
_BART_ENCODER = ArchitectureLayout(
    model_types=("bart",),
    layers="encoder.layers",
    query="self_attn.q_proj",
    key="self_attn.k_proj",
    value="self_attn.v_proj",
    output="self_attn.out_proj",
    ffn_up="fc1",
    ffn_down="fc2",
    num_heads_attr="encoder_attention_heads",
    num_layers_attr="encoder_layers",
    hidden_size_attr="d_model",
    intermediate_size_attr="encoder_ffn_dim",
    head_dim_attr=None,
    norm_placement="post",
    ffn_activation_attr="activation_function",
    attention="self_attn",
    attention_attrs=(("num_heads", "heads"),),
)
BART_LAYOUT = register_layout(
    replace(
        _BART_ENCODER,
        decoder=replace(
            _BART_ENCODER,
            layers="decoder.layers",
            num_heads_attr="decoder_attention_heads",
            num_layers_attr="decoder_layers",
            intermediate_size_attr="decoder_ffn_dim",
            cross_query="encoder_attn.q_proj",
            cross_key="encoder_attn.k_proj",
            cross_value="encoder_attn.v_proj",
            cross_output="encoder_attn.out_proj",
        ),
    )
)

# Disentangled attention: the relative position embeddings are shared by the layers and projected per
# head, by the layer's own query/key projections (share_att_key) or by per-head position projections.
DEBERTA_V2_LAYOUT = register_layout(
    replace(
        BERT_LAYOUT,
        model_types=("deberta-v2",),
        query="attention.self.query_proj",
        key="attention.self.key_proj",
        value="attention.self.value_proj",
        head_rows=("attention.self.pos_key_proj", "attention.self.pos_query_proj"),
    )
)

# Fused [q | k | v] and a fused GLU input ([activated | linear], i.e. [gate | up]); pre-norm.
MODERNBERT_LAYOUT = register_layout(
    ArchitectureLayout(
        model_types=("modernbert",),
        layers="layers",
        query="attn.Wqkv",
        key="attn.Wqkv",
        value="attn.Wqkv",
        output="attn.Wo",
        ffn_gate="mlp.Wi",
        ffn_up="mlp.Wi",
        ffn_down="mlp.Wo",
        norm_placement="pre",
        ffn_activation_attr="hidden_activation",
        attention="attn",
    )
)

# One set of layer weights serves every depth: a head cut from it is cut from all depths at once.
refuse_model_type(
    "albert",
    "ALBERT shares one set of layer weights across all its depths, so a head or FFN unit cannot be removed "
    "from one layer alone, and layer-by-layer methods cannot run one depth at a time; prune a model with a "
    "layer module per depth (BERT, DistilBERT, DeBERTa-v2, ModernBERT)",
)

# A relative position bias computed once by the encoder for all heads and passed to every layer: each
# slim layer reads its kept heads' entries (head_arguments).
MPNET_LAYOUT = register_layout(
    ArchitectureLayout(
        model_types=("mpnet",),
        layers="encoder.layer",
        query="attention.attn.q",
        key="attention.attn.k",
        value="attention.attn.v",
        output="attention.attn.o",
        ffn_up="intermediate.dense",
        ffn_down="output.dense",
        norm_placement="post",
        attention="attention.attn",
        attention_attrs=(("num_attention_heads", "heads"), ("all_head_size", "width")),
        head_arguments=("position_bias",),
    )
)

# T5: pre-norm blocks of sublayers (layer.0 self-attention, layer.1 cross-attention in the decoder, then
# the FFN), no biases, and a relative position bias the first block of each stack computes for all heads
# and passes on: every slim layer gets its own copy of its heads' part (position_bias).
_T5_ENCODER = ArchitectureLayout(
    model_types=("t5",),
    layers="encoder.block",
    query="layer.0.SelfAttention.q",
    key="layer.0.SelfAttention.k",
    value="layer.0.SelfAttention.v",
    output="layer.0.SelfAttention.o",
    ffn_up="layer.1.DenseReluDense.wi",
    ffn_down="layer.1.DenseReluDense.wo",
    num_heads_attr="num_heads",
    num_layers_attr="num_layers",
    hidden_size_attr="d_model",
    intermediate_size_attr="d_ff",
    head_dim_attr="d_kv",
    norm_placement="pre",
    ffn_activation_attr="dense_act_fn",
    attention="layer.0.SelfAttention",
    attention_attrs=(("n_heads", "heads"), ("inner_dim", "width")),
    position_bias=("relative_attention_bias", "has_relative_attention_bias", "position_bias"),
    attention_outputs=("output", "position_bias", "weights"),
)
_T5_DECODER = replace(
    _T5_ENCODER,
    layers="decoder.block",
    num_layers_attr="num_decoder_layers",
    cross_query="layer.1.EncDecAttention.q",
    cross_key="layer.1.EncDecAttention.k",
    cross_value="layer.1.EncDecAttention.v",
    cross_output="layer.1.EncDecAttention.o",
    ffn_up="layer.2.DenseReluDense.wi",
    ffn_down="layer.2.DenseReluDense.wo",
)
T5_LAYOUT = register_layout(replace(_T5_ENCODER, decoder=_T5_DECODER))


def _gated_t5(stack: ArchitectureLayout, ffn: str) -> ArchitectureLayout:
    """T5 v1.1's FFN: `act(wi_0(x)) * wi_1(x)`, i.e. gate `wi_0` and up `wi_1`."""
    return replace(stack, ffn_gate=f"{ffn}.wi_0", ffn_up=f"{ffn}.wi_1", when=("is_gated_act", True))


# T5 v1.1 (and flan-t5): a gated-GELU FFN, chosen by the config.
T5_GATED_LAYOUT = register_layout(
    replace(
        _gated_t5(_T5_ENCODER, "layer.1.DenseReluDense"),
        decoder=_gated_t5(_T5_DECODER, "layer.2.DenseReluDense"),
    )
)
