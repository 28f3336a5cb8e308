"""Shared fixtures: tiny models of every registered architecture, built from configs (no Hub)."""

from __future__ import annotations

import functools

import pytest
import torch
from transformers import AutoConfig, AutoModel, AutoModelForImageClassification, AutoModelForSequenceClassification
from transformers.models.auto.modeling_auto import (
    MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES,
    MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES,
)

from nn_prune_ext import get_layout, supported_model_types

HIDDEN, HEADS, KV_HEADS, INTERMEDIATE, LAYERS, VOCAB = 64, 4, 2, 128, 2, 128
IMAGE_SIZE, PATCH_SIZE, CHANNELS = 16, 4, 3  # vision families: 16 patches and a class token
# Per input kind: the classifier class the shared table uses, and the names it is mapped under.
CLASSIFIERS = {
    "text": (AutoModelForSequenceClassification, MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES),
    "pixels": (AutoModelForImageClassification, MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES),
    "seq2seq": (AutoModelForSequenceClassification, MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES),
}
# The shared test table (`model_type`) runs over the registered types with a sequence-classification
# class and removable heads, with one stack of layers. The others are tested where noted: granite
# (causal-LM heads only) in test_posttrain_tune and test_slim_optimize's decoder tests, olmo2 (heads
# fixed) in test_arch_fixed_heads, mixtral (experts left whole) in test_arch_experts, the
# encoder-decoders in test_arch_encoder_decoder.
CLASSIFICATION_TYPES = tuple(
    t for t in supported_model_types()
    if t in CLASSIFIERS[get_layout(t).input_kind][1] and get_layout(t).fixed_heads is None
    and get_layout(t).fixed_ffn is None and get_layout(t).decoder is None
)
ENCODER_DECODER_TYPES = tuple(t for t in supported_model_types() if get_layout(t).decoder is not None)
# The registered types with grouped-query attention (their tiny models get KV_HEADS key/value heads).
GQA_TYPES = frozenset(t for t in CLASSIFICATION_TYPES if get_layout(t).num_kv_heads_attr)


# Settings that make a family's tiny model exercise what its real checkpoints use (DeBERTa-v2's
# disentangled relative attention with per-head position projections), or keep its special token ids
# inside the tiny vocabulary.
FAMILY_SETTINGS = {
    "deberta-v2": dict(
        relative_attention=True, pos_att_type=["p2c", "c2p"], position_buckets=8, max_relative_positions=16,
        share_att_key=False,
    ),
    "modernbert": dict(bos_token_id=1, eos_token_id=2, cls_token_id=1, sep_token_id=2),
    # Bloom's FFN is 4 x hidden by construction: half the width gives INTERMEDIATE units (heads of 8).
    "bloom": dict(hidden_size=INTERMEDIATE // 4),
    # Falcon's grouped-query variant (per group [q_1 .. q_r k v]); test_arch_projections covers the others.
    "falcon": dict(new_decoder_architecture=True),
}


def hidden_size(model_type: str) -> int:
    """The width of `model_type`'s tiny model: HIDDEN, unless its FAMILY_SETTINGS change it (Bloom)."""
    return FAMILY_SETTINGS.get(model_type, {}).get(get_layout(model_type).hidden_size_attr, HIDDEN)


def tiny_config(model_type: str, **overrides):
    """A 2-layer, 64-wide config of `model_type` (4 heads of 16; 2 KV heads where GQA applies).

    The sizes are set through the attribute names the type's layout declares, so a newly registered
    type gets its tiny model without a change here.
    """
    layout = get_layout(model_type)
    settings = {
        layout.hidden_size_attr: HIDDEN,
        layout.num_heads_attr: HEADS,
        layout.intermediate_size_attr: INTERMEDIATE,
        "num_hidden_layers": LAYERS,
    }
    if layout.num_kv_heads_attr:
        settings[layout.num_kv_heads_attr] = KV_HEADS
    stock = AutoConfig.for_model(model_type)
    derived = isinstance(getattr(type(stock), layout.head_dim_attr or "", None), property)  # Falcon: hidden // heads
    if layout.head_dim_attr and not derived and getattr(stock, layout.head_dim_attr, None) is not None:
        settings[layout.head_dim_attr] = HIDDEN // HEADS  # families with an explicit head size (Gemma: 256)
    if layout.input_kind == "pixels":
        settings.update(image_size=IMAGE_SIZE, patch_size=PATCH_SIZE, num_channels=CHANNELS)
    settings.update(vocab_size=VOCAB, max_position_embeddings=64, num_labels=3, pad_token_id=0)
    settings.update(FAMILY_SETTINGS.get(model_type, {}))
    settings.update(overrides)
    return AutoConfig.for_model(model_type, **settings)


def empty_layers_are_dropped(model_or_type) -> bool:
    """Whether slimming drops a layer left without heads and FFN units (and biases): its norms are
    not applied to the residual sum (pre-norm or sandwich), so the layer is the identity, and the
    transformers release can load the config without it (not a ModernBERT left with full-attention
    layers only, before transformers 5.19)."""
    config = tiny_config(model_or_type) if isinstance(model_or_type, str) else model_or_type.config
    return get_layout(config).norm_placement_for(config) != "post" and _last_layer_can_go(config.model_type)


@functools.cache
def _last_layer_can_go(model_type: str) -> bool:
    from nn_prune_ext.slim.layers import config_loads_without

    return config_loads_without(tiny_model(model_type), [LAYERS - 1])


def tiny_model(model_type: str, seed: int = 0, **overrides):
    """A tiny classifier of `model_type` (sequence or image classification, by the family's input kind)."""
    torch.manual_seed(seed)
    classifier = CLASSIFIERS[get_layout(model_type).input_kind][0]
    return classifier.from_config(tiny_config(model_type, **overrides)).eval()


def tiny_batch(model_type=None, batch: int = 4, seq: int = 12, seed: int = 1) -> dict[str, torch.Tensor]:
    """Deterministic inputs of the input kind of `model_type` (a type name or a model): token ids with
    some padding (the default), or images."""
    generator = torch.Generator().manual_seed(seed)
    if model_type is not None and get_layout(model_type).input_kind == "pixels":
        shape = (batch, CHANNELS, IMAGE_SIZE, IMAGE_SIZE)
        return {"pixel_values": torch.randn(shape, generator=generator)}
    input_ids = torch.randint(1, VOCAB, (batch, seq), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[0, -3:] = 0  # some padding, so masking paths are exercised
    return {"input_ids": input_ids, "attention_mask": attention_mask}


@pytest.fixture(params=CLASSIFICATION_TYPES)
def model_type(request) -> str:
    return request.param


def labelled_batches(
    count: int = 4, batch: int = 4, seq: int = 12, num_labels: int = 3, model_type: str | None = None
) -> list[dict[str, torch.Tensor]]:
    """`count` batches of `tiny_batch` inputs with class labels (deterministic)."""
    batches = []
    for index in range(count):
        inputs = tiny_batch(model_type, batch=batch, seq=seq, seed=100 + index)
        generator = torch.Generator().manual_seed(200 + index)
        inputs["labels"] = torch.randint(0, num_labels, (batch,), generator=generator)
        batches.append(inputs)
    return batches


@functools.cache
def decoder_model_types() -> tuple[str, ...]:
    """The registered model types whose layers run causal self-attention (the decoders), heads removable."""
    decoders = []
    for model_type in supported_model_types():
        layout = get_layout(model_type)
        if layout.fixed_heads is not None or layout.fixed_ffn is not None or layout.decoder is not None:
            continue
        if layout.input_kind != "text":
            continue
        # Causal: changing the last token leaves the earlier positions' outputs as they were.
        model = AutoModel.from_config(tiny_config(model_type)).eval()
        ids = tiny_batch(model_type, batch=1)["input_ids"]
        changed = ids.clone()
        changed[0, -1] = (changed[0, -1] + 1) % VOCAB
        with torch.no_grad():
            before, after = (model(input_ids=inputs).last_hidden_state[:, :-1] for inputs in (ids, changed))
        if torch.equal(before, after):
            decoders.append(model_type)
    return tuple(decoders)


def enable_checkpointing(model, use_reentrant: bool) -> bool:
    """Turn on activation checkpointing; whether the model says it is on.

    transformers 5.23 renamed `gradient_checkpointing_enable` to `activation_checkpointing_enable`
    (the old name is a deprecated alias); the floor environment has only the old one.
    """
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": use_reentrant})
        return model.is_activation_checkpointing
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": use_reentrant})
    return model.is_gradient_checkpointing


@pytest.fixture(scope="module")
def quiet_transformers():
    """transformers' logging at errors only for one test module (Trainer runs log per step), then as it was.

    Use it with `pytestmark = pytest.mark.usefixtures("quiet_transformers")`; setting the verbosity at
    import would lower it for every module collected after.
    """
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    yield
    hf_logging.set_verbosity(verbosity)
