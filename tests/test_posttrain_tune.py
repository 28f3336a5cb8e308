"""Mask tuning by least squares (nn_prune_ext.posttrain.tune) on tiny models of every architecture."""

import copy
from typing import NamedTuple

import pytest
import torch

from nn_prune_ext import (
    SparseArgs,
    StructureMasks,
    get_layout,
    patch_model,
    prune_with_masks,
)
from nn_prune_ext.importance import apply_masks
from nn_prune_ext.posttrain.tune import LayerTaps, TuningResult, _NormalEquations, _solve, tune_masks

from nn_prune_ext.validation import InputError, NonFiniteError
from transformers import AutoModelForCausalLM

from conftest import (
    CLASSIFICATION_TYPES,
    HEADS,
    HIDDEN,
    INTERMEDIATE,
    LAYERS,
    VOCAB,
    decoder_model_types,
    hidden_size,
    tiny_batch,
    tiny_config,
    tiny_model,
)

SUBLAYERS = ("attention", "ffn")


def calibration_batches(padding: int = 0, model_type: str | None = None) -> list[dict[str, torch.Tensor]]:
    """Three batches with some padding; `padding` extra padded positions of random ids at the end."""
    batches = []
    for seed in (1, 2, 3):
        batch = tiny_batch(model_type, seed=seed)
        if padding:
            generator = torch.Generator().manual_seed(100 + seed)
            extra = torch.randint(1, VOCAB, (batch["input_ids"].shape[0], padding), generator=generator)
            batch["input_ids"] = torch.cat([batch["input_ids"], extra], dim=1)
            batch["attention_mask"] = torch.cat([batch["attention_mask"], torch.zeros_like(extra)], dim=1)
        batch["labels"] = torch.tensor([0, 1, 2, 1])  # targets must be ignored
        batches.append(batch)
    return batches


def pruned_masks(model) -> StructureMasks:
    """Layer 0 keeps heads 0 and 2 and the even FFN units; layer 1 keeps three heads and the first 100 units."""
    return StructureMasks.from_kept(
        model, heads=[[0, 2], [1, 2, 3]], units=[range(0, INTERMEDIATE, 2), range(100)]
    )


def layer_records(model, batch, masks: StructureMasks | None = None) -> dict[tuple[int, str], torch.Tensor]:
    """One full forward of the whole model; per layer, its sublayers' pre-normalisation sums and the raw
    (unmasked) inputs of its output and down projections, as `[real tokens, features]`.

    Independent of tune_masks's layer-by-layer propagation: plain hooks on one forward of the model.
    Keys: `(layer, "attention")`, `(layer, "ffn")`, `(layer, "attention_input")`, `(layer, "ffn_input")`.
    """
    layout = get_layout(model)
    layers = list(layout.iter_layers(model))
    seen: dict[tuple[int, str], torch.Tensor] = {}
    handles = []

    def keep(key, which):
        def hook(module, args, *rest):
            # A copy: a layer may add to a returned tensor in place (Falcon: mlp_output += attention_output).
            seen[key] = (rest[-1] if which == "output" else args[0]).detach().clone()

        return hook

    def keep_layer_input(index):
        def hook(module, args, kwargs):
            seen[index, "input"] = (args[0] if args else kwargs["hidden_states"]).detach()

        return hook

    for index, (layer, modules) in enumerate(zip(layout.layer_list(model), layers)):
        handles.append(layer.register_forward_pre_hook(keep_layer_input(index), with_kwargs=True))
        handles.append(modules.output.register_forward_pre_hook(keep((index, "o_in"), "input"), prepend=True))
        handles.append(modules.output.register_forward_hook(keep((index, "o_out"), "output")))
        handles.append(modules.ffn_up.register_forward_pre_hook(keep((index, "up_in"), "input")))
        handles.append(modules.ffn_down.register_forward_pre_hook(keep((index, "down_in"), "input"), prepend=True))
        handles.append(modules.ffn_down.register_forward_hook(keep((index, "down_out"), "output")))
    inputs = {key: value for key, value in batch.items() if key != "labels"}
    try:
        with torch.no_grad():
            if masks is None:
                model(**inputs)
            else:
                with apply_masks(model, masks.heads, masks.units):
                    model(**inputs)
    finally:
        for handle in handles:
            handle.remove()
    mask = batch.get("attention_mask")  # images have no padding: every token is real
    real = slice(None) if mask is None else mask.reshape(-1).bool()
    # Rows of [tokens, features]: some layers (OPT) flatten batch and sequence inside the FFN.
    rows = {key: value.reshape(-1, value.shape[-1]) for key, value in seen.items()}
    records = {}
    placement, scale = layout.norm_placement_for(model.config), layout.residual_scale(model.config)
    for index in range(len(layers)):
        if placement == "sandwich":  # the sublayer outputs are normalised before the residual sum: match them
            attention, ffn = rows[index, "o_out"], rows[index, "down_out"]
        else:
            attention = rows[index, "input"] + scale * rows[index, "o_out"]
            residual = rows[index, "up_in"] if placement == "post" else attention
            ffn = residual + scale * rows[index, "down_out"]
        values = {
            "attention": attention,
            "ffn": ffn,
            "attention_input": rows[index, "o_in"],
            "ffn_input": rows[index, "down_in"],
        }
        records.update({(index, name): value[real] for name, value in values.items()})
    return records


def sublayer_sums(model, batch, masks: StructureMasks | None = None) -> dict[tuple[int, str], torch.Tensor]:
    """Pre-normalisation sums of every sublayer from one full forward, over real tokens only."""
    return {key: value for key, value in layer_records(model, batch, masks).items() if key[1] in SUBLAYERS}


def sublayer_errors(model, batches, masks: StructureMasks) -> dict[tuple[int, str], float]:
    """Summed squared error of every sublayer's sum, masked model against the dense one."""
    errors: dict[tuple[int, str], float] = {}
    for batch in batches:
        teacher, student = sublayer_sums(model, batch), sublayer_sums(model, batch, masks)
        for key in teacher:
            errors[key] = errors.get(key, 0.0) + float((student[key] - teacher[key]).double().square().sum())
    return errors


def with_original(tuned: StructureMasks, original: StructureMasks, layer: int, sublayer: str) -> StructureMasks:
    """`tuned` with one sublayer's values put back to `original`'s."""
    masks = tuned.clone()
    target, source = (masks.heads, original.heads) if sublayer == "attention" else (masks.units, original.units)
    target[layer] = source[layer].clone()
    return masks


class Tuning(NamedTuple):
    model: torch.nn.Module
    masks: StructureMasks
    batches: list[dict[str, torch.Tensor]]
    result: TuningResult
    state: dict[str, torch.Tensor]  # the model's weights before tuning


@pytest.fixture(scope="module")
def tuning_cache() -> dict[str, Tuning]:
    return {}


@pytest.fixture
def tuning(tuning_cache, model_type) -> Tuning:
    """`pruned_masks` tuned on `calibration_batches`, once per model type for the whole module."""
    if model_type not in tuning_cache:
        model = tiny_model(model_type)
        masks, batches = pruned_masks(model), calibration_batches(model_type=model_type)
        state = copy.deepcopy(model.state_dict())
        tuning_cache[model_type] = Tuning(model, masks, batches, tune_masks(model, masks, batches), state)
    return tuning_cache[model_type]


# ----- the decomposition the fits rely on ---------------------------------------------------
def test_layer_taps_sums_are_the_normalisation_inputs(model_type):
    """The sums the fits match, by norm placement.

    post-norm: they are what the layer's LayerNorms normalise; pre-norm: the FFN sum is the layer's
    output; sandwich norms: the sublayer outputs, which are what the output norms normalise.
    """
    model = tiny_model(model_type)
    layout = get_layout(model)
    batch = tiny_batch(model_type)
    masks = pruned_masks(model)
    for index, (layer, modules) in enumerate(zip(layout.layer_list(model), layout.iter_layers(model))):
        norm_inputs, seen = [], {}
        norms = [module for module in layer.modules() if "Norm" in type(module).__name__]
        handles = [norm.register_forward_pre_hook(lambda module, args: norm_inputs.append(args[0])) for norm in norms]
        handles.append(
            layer.register_forward_pre_hook(
                lambda module, args, kwargs: seen.update(input=args[0] if args else kwargs["hidden_states"]),
                with_kwargs=True,
            )
        )
        handles.append(
            layer.register_forward_hook(
                lambda module, args, output: seen.update(output=output[0] if isinstance(output, tuple) else output)
            )
        )
        try:
            with torch.no_grad(), apply_masks(model, masks.heads, masks.units), LayerTaps(
                modules, layout.norm_placement_for(model.config), layout.residual_scale(model.config)
            ) as taps:
                model(**batch)
        finally:
            for handle in handles:
                handle.remove()
        x = seen["input"]
        # Sums are [tokens, hidden]; q/k norms (Qwen 3, Gemma 3) work on single heads and are left out.
        hidden = hidden_size(model_type)
        norm_rows = [tensor.reshape(-1, hidden) for tensor in norm_inputs if tensor.shape[-1] == hidden]

        def normalised(rows: torch.Tensor) -> bool:
            return any(other.shape == rows.shape and torch.equal(other, rows) for other in norm_rows)

        if layout.norm_placement_for(model.config) == "pre":
            # Parallel blocks (GPT-NeoX, Phi) add the three terms in another order: equal up to rounding.
            torch.testing.assert_close(taps.ffn_sum(x), seen["output"].reshape(-1, hidden), rtol=0, atol=1e-6)
        else:
            assert normalised(taps.attention_sum(x)) and normalised(taps.ffn_sum(x))
        # The recorded projection inputs are the raw ones: the masks act after the taps read them.
        head_scale = masks.heads[index].repeat_interleave(modules.head_dim)
        expected = modules.output(taps.values["attention_input"] * head_scale)
        torch.testing.assert_close(taps.values["attention_output"], expected)
        assert taps.values["attention_input"].abs().amax(dim=(0, 1)).min() > 0  # removed heads still recorded
        expected = modules.ffn_down(taps.values["ffn_input"] * masks.units[index])
        torch.testing.assert_close(taps.values["ffn_output"], expected)


# ----- tuning ---------------------------------------------------------------------------------
def test_tuning_lowers_every_sublayer_error(tuning):
    model, masks, batches, result, state = tuning
    assert isinstance(result, TuningResult)
    assert [(record.layer, record.sublayer) for record in result.layers] == [
        (layer, sublayer) for layer in range(LAYERS) for sublayer in SUBLAYERS
    ]
    assert [record.num_scales for record in result.layers] == [2, INTERMEDIATE // 2, 3, 100]
    for record in result.layers:
        assert record.tuned and record.reason is None, str(result)
        assert 0 <= record.error_after < record.error_before
    for original, fitted in zip(masks.heads + masks.units, result.masks.heads + result.masks.units):
        assert torch.equal(fitted[original == 0], torch.zeros(int((original == 0).sum())))  # removed stay 0
        assert bool((fitted[original != 0] != 1).any())
    assert masks.kept_heads() == [2, 3] and set(torch.cat(masks.heads).tolist()) == {0.0, 1.0}  # input untouched
    for name, value in model.state_dict().items():  # the model's weights are not changed, its hooks removed
        assert torch.equal(value, state[name]), name
    assert all(not module._forward_pre_hooks and not module._forward_hooks for module in model.modules())
    assert "attention" in str(result) and "tuned (" in str(result)


def test_reported_errors_match_full_forwards(tuning):
    """Every error_after is the error of the final masks; error_before that with the sublayer's old values."""
    model, masks, batches, result, _ = tuning
    after = sublayer_errors(model, batches, result.masks)
    for record in result.layers:
        key = (record.layer, record.sublayer)
        before = sublayer_errors(model, batches, with_original(result.masks, masks, *key))[key]
        assert record.error_after == pytest.approx(after[key], rel=1e-4)
        assert record.error_before == pytest.approx(before, rel=1e-5)


def test_tuned_masks_slim_to_the_same_outputs(tuning):
    model, _, batches, result, _ = tuning
    slim = prune_with_masks(model, result.masks)
    assert [layer.ffn_width[1] for layer in slim.slim_report.layers] == result.masks.kept_units()
    layers = get_layout(model).iter_layers(model)
    for report, kept, modules in zip(slim.slim_report.layers, result.masks.kept_heads(), layers):
        # With grouped-query attention a query head goes only with its whole key/value group.
        assert report.heads[1] == kept if modules.num_kv_heads == modules.num_heads else report.heads[1] >= kept
    inputs = {key: value for key, value in batches[0].items() if key != "labels"}
    with torch.no_grad():
        with apply_masks(model, result.masks.heads, result.masks.units):
            expected = model(**inputs).logits
        torch.testing.assert_close(slim(**inputs).logits, expected, rtol=0, atol=1e-5)


def test_all_ones_masks_are_left_alone(model_type):
    model = tiny_model(model_type)
    ones = StructureMasks.ones(model)
    result = tune_masks(model, ones, calibration_batches(model_type=model_type))
    for record in result.layers:
        assert (record.error_before, record.error_after, record.tuned) == (0.0, 0.0, False)
        assert record.reason == "the sublayer already matches the dense model"
    assert all(torch.equal(mask, torch.ones_like(mask)) for mask in result.masks.heads + result.masks.units)


@pytest.mark.parametrize(
    "options, reason",
    [({"max_scale": 0.5}, "exceeds max_scale=0.5"), ({"max_iterations": 1}, "lsmr did not converge")],
)
def test_guard_rejects_an_unstable_solve(model_type, options, reason):
    model = tiny_model(model_type)
    masks = pruned_masks(model)
    result = tune_masks(model, masks, calibration_batches(model_type=model_type), **options)
    for record in result.layers:
        assert not record.tuned and reason in record.reason
        assert record.error_after == record.error_before > 0
    for original, kept in zip(masks.heads + masks.units, result.masks.heads + result.masks.units):
        assert torch.equal(original, kept)


@pytest.mark.parametrize(
    "inputs, reason", [("orthogonal", "the fit does not lower the error"), ("infinite", "the solution is not finite")]
)
def test_guard_rejects_degenerate_normal_equations(inputs, reason):
    """Two heads of size 2 whose outputs cannot reduce the error, or whose statistics overflowed."""
    weight = torch.eye(4)  # head j writes its two features to hidden dims 2j, 2j + 1
    equations = _NormalEquations(weight, kept=torch.tensor([0, 1]), group_size=2)
    features = torch.randn(6, 4)
    error = torch.zeros(6, 4)
    if inputs == "infinite":
        features[0, 0] = float("inf")
        error[:, 0] = 1.0
    equations.add(features, error)  # "orthogonal": a zero error is already optimal
    current = torch.tensor([1.0, 0.5])
    scales, after, why = _solve(equations, current, 3.0, max_scale=10.0, tol=1e-8, max_iterations=None)
    assert (scales, after, why) == (None, 3.0, reason)


def test_padding_does_not_count(model_type):
    if get_layout(model_type).input_kind != "text":
        pytest.skip("images have no padding")
    model = tiny_model(model_type)
    masks = pruned_masks(model)
    plain = tune_masks(model, masks, calibration_batches(model_type=model_type))
    padded = tune_masks(model, masks, calibration_batches(padding=5, model_type=model_type))
    for a, b in zip(plain.layers, padded.layers):
        assert (a.error_before, a.error_after) == pytest.approx((b.error_before, b.error_after), rel=1e-4)
    for a, b in zip(plain.masks.heads + plain.masks.units, padded.masks.heads + padded.masks.units):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)


def test_empty_sublayers_are_recorded_not_fitted():
    model = tiny_model("bert")
    masks = StructureMasks.from_kept(model, heads=[[], [0, 1]], units=[range(10), []])
    result = tune_masks(model, masks, calibration_batches(), max_batches=2)
    records = {(record.layer, record.sublayer): record for record in result.layers}
    assert records[0, "attention"].reason == "no heads kept" and records[0, "attention"].num_scales == 0
    assert records[1, "ffn"].reason == "no FFN units kept"
    assert records[0, "attention"].error_before == records[0, "attention"].error_after > 0
    assert records[0, "ffn"].tuned and records[1, "attention"].tuned
    assert torch.equal(result.masks.heads[0], torch.zeros(HEADS))


def test_bad_input_is_explained():
    model = tiny_model("bert")
    masks = pruned_masks(model)
    with pytest.raises(ValueError, match="no batches"):
        tune_masks(model, masks, [])
    wrong = StructureMasks(heads=[torch.ones(HEADS + 1), torch.ones(HEADS)], units=masks.units)
    with pytest.raises(ValueError, match="layer 0 has 5 entries"):
        tune_masks(model, wrong, calibration_batches())
    bad_batch = calibration_batches()[0]
    bad_batch["attention_mask"] = bad_batch["attention_mask"][:, :-1]
    with pytest.raises(ValueError, match="attention_mask has shape \\(4, 11\\)"):
        tune_masks(model, masks, [bad_batch])
    patch_model(model, SparseArgs.struct())
    with pytest.raises(ValueError, match="bake_model"):
        tune_masks(model, masks, calibration_batches())


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (dict(max_scale=float("nan")), r"tune_masks\(max_scale=\.\.\.\) must be a finite real number > 0, got nan"),
        (dict(max_scale=0), r"tune_masks\(max_scale=\.\.\.\) must be a finite real number > 0, got 0"),
        (dict(tol=-1e-8), r"tune_masks\(tol=\.\.\.\) must be a finite real number >= 0, got -1e-08"),
        (dict(max_iterations=2.5), r"tune_masks\(max_iterations=\.\.\.\) must be a whole number >= 1 or None, got 2.5"),
        (dict(max_batches="2"), r"tune_masks\(max_batches=\.\.\.\) must be a whole number >= 1 or None, got '2'"),
        (dict(max_batches=0), r"tune_masks\(max_batches=\.\.\.\) must be a whole number >= 1 or None, got 0"),
    ],
)
def test_bad_settings_are_refused_naming_them(options, message):
    """Issue 13: a NaN max_scale accepted every fitted scale (`largest > nan` is false)."""
    model = tiny_model("bert")
    with pytest.raises(InputError, match=message):
        tune_masks(model, pruned_masks(model), calibration_batches(), **options)


def test_bad_masks_batches_and_chunked_ffn_are_refused_before_any_forward():
    model = tiny_model("bert")
    masks = pruned_masks(model)
    with pytest.raises(InputError, match=r"tune_masks: masks must be a StructureMasks, got list; build them with StructureMasks\("):
        tune_masks(model, [masks.heads, masks.units], calibration_batches())
    batch = calibration_batches()[0]
    with pytest.raises(InputError, match=r"got a single batch \(a dict with keys \['attention_mask', 'input_ids', 'labels'"):
        tune_masks(model, masks, batch)
    batch["input_ids"] = batch["input_ids"] + VOCAB
    with pytest.raises(InputError, match="Batch 1 has token ids from .* outside the model's vocabulary"):
        tune_masks(model, masks, [calibration_batches()[0], batch])
    with pytest.raises(InputError, match=r"Batch 0: input_ids have shape \(12,\), not \[batch, sequence\]"):
        tune_masks(model, masks, [{"input_ids": calibration_batches()[0]["input_ids"][0]}])
    unusable_labels = calibration_batches()[0]
    unusable_labels["labels"] = torch.tensor([0.5, 7.0, -3.0, 1.0])  # ignored: tuning needs no loss
    tune_masks(model, masks, [unusable_labels], max_iterations=1)
    model.config.chunk_size_feed_forward = 4  # was a RuntimeError after the first layer's teacher pass
    with pytest.raises(InputError, match="config.chunk_size_feed_forward=4: set model.config.chunk_size_feed_forward = 0"):
        tune_masks(model, masks, calibration_batches())


def test_non_finite_hidden_states_are_refused_naming_layer_sublayer_and_batch():
    """Issue 13: a NaN error rejected every fit silently ("does not lower the error"), layer after layer."""
    model = tiny_model("bert")
    batches = calibration_batches()
    with torch.no_grad():
        get_layout(model).layer_list(model)[1].output.dense.bias[0] = float("inf")
    with pytest.raises(NonFiniteError, match="the ffn of layer 1 computes NaN or infinite values on batch 0"):
        tune_masks(model, pruned_masks(model), batches)


# ----- the same fit as fresh forwards of the whole model -------------------------------------
# Decoder configurations beyond the defaults: windows shorter than the batches' 12 tokens, and
# configs that mix sliding-window and full-attention layers.
DECODER_VARIANTS = {
    "mistral-sliding": ("mistral", dict(sliding_window=4)),
    "qwen2-sliding": ("qwen2", dict(use_sliding_window=True, sliding_window=4, max_window_layers=0)),
    "qwen2-mixed": ("qwen2", dict(use_sliding_window=True, sliding_window=4, max_window_layers=1)),
}
# Norm placements and residual forms beyond each family's default: OPT with post-norm layers (its
# FFN also flattens batch and sequence), GPT-NeoX with sequential rather than parallel sublayers, and
# Granite's residual multiplier (a causal LM: the family has no classification head).
DECODER_VARIANTS.update({
    "opt-post": ("opt", dict(do_layer_norm_before=False)),
    "gpt_neox-sequential": ("gpt_neox", dict(use_parallel_residual=False)),
    "granite": ("granite", dict(residual_multiplier=0.5)),
})
TUNING_CASES = [*CLASSIFICATION_TYPES, *DECODER_VARIANTS]


def case_model(case: str, **extra):
    model_type, overrides = DECODER_VARIANTS.get(case, (case, {}))
    overrides = {**overrides, **extra}
    if model_type not in CLASSIFICATION_TYPES:
        torch.manual_seed(0)
        return AutoModelForCausalLM.from_config(tiny_config(model_type, **overrides)).eval()
    return tiny_model(model_type, **overrides)


def unpadded_batches(model_type: str | None = None) -> list[dict[str, torch.Tensor]]:
    """`calibration_batches` with every token real: fixed-length chunks, as causal-LM calibration uses."""
    batches = calibration_batches(model_type=model_type)
    for batch in batches:
        if "attention_mask" in batch:
            batch["attention_mask"] = torch.ones_like(batch["attention_mask"])
    return batches


@torch.no_grad()
def reference_tuning(model, masks: StructureMasks, batches) -> StructureMasks:
    """Mask tuning as the method defines it, with nothing carried from one forward to the next.

    Every sublayer's fit comes from full forwards of the whole model (the dense teacher, and the
    student under the scales fitted so far) and an explicit least-squares solve over its real tokens.
    """
    tuned = masks.clone()
    layout = get_layout(model)
    # The sums grow by m x each projection output (m: the residual scale), except where the fit
    # matches the (sandwich-normalised) output itself.
    scale = 1.0 if layout.norm_placement_for(model.config) == "sandwich" else layout.residual_scale(model.config)
    for index, modules in enumerate(layout.iter_layers(model)):
        for sublayer in SUBLAYERS:
            attention = sublayer == "attention"
            values = (tuned.heads if attention else tuned.units)[index]
            kept = values.nonzero().flatten().tolist()
            weight = scale * (modules.output if attention else modules.ffn_down).weight.double()
            size = modules.head_dim if attention else 1
            design, errors = [], []
            for batch in batches:
                teacher = layer_records(model, batch)[index, sublayer]
                student = layer_records(model, batch, tuned)
                inputs = student[index, f"{sublayer}_input"].double()
                # Column j: kept group j's contribution to the projection output at every token and feature.
                design.append(torch.stack([
                    (inputs[:, j * size:(j + 1) * size] @ weight[:, j * size:(j + 1) * size].T).flatten() for j in kept
                ], dim=1))
                errors.append((student[index, sublayer] - teacher).double().flatten())
            step = torch.linalg.lstsq(torch.cat(design), -torch.cat(errors)[:, None]).solution[:, 0]
            values[kept] = (values[kept].double() + step).float()
    return tuned


@pytest.mark.parametrize("padded", [False, True], ids=["unpadded", "padded"])
@pytest.mark.parametrize("case", TUNING_CASES)
def test_tuning_equals_fits_on_fresh_forwards(case, padded):
    """Layer-by-layer propagation gives the scales that fresh forwards of the whole model give.

    This is what a key/value cache carried from one layer call to the next (transformers 5.24)
    silently broke on unpadded decoder batches.
    """
    model = case_model(case)
    masks = pruned_masks(model)
    model_type = model.config.model_type
    batches = calibration_batches(model_type=model_type) if padded else unpadded_batches(model_type)
    result = tune_masks(model, masks, batches)
    assert all(record.tuned for record in result.layers), str(result)
    expected = reference_tuning(model, masks, batches)
    for fitted, reference in zip(result.masks.heads + result.masks.units, expected.heads + expected.units):
        torch.testing.assert_close(fitted, reference, rtol=1e-5, atol=2e-5)  # measured: within 2e-6; scales move by ~2


def test_every_decoder_has_its_window_variants_covered():
    """Every registered decoder is tuned in TUNING_CASES; the window variants really change the attention."""
    decoders = decoder_model_types()
    assert set(decoders) >= {"llama", "mistral", "qwen2"} and set(decoders) <= set(TUNING_CASES)
    batch = unpadded_batches()[0]
    batch.pop("labels")
    for case, (model_type, overrides) in DECODER_VARIANTS.items():
        defaults = {key: getattr(tiny_config(model_type), key) for key in overrides}
        with torch.no_grad():
            variant = case_model(case)(**batch).logits
            default = case_model(case, **defaults)(**batch).logits  # same seed, same weights, default config
        assert (variant - default).abs().max() > 1e-4, case
    assert case_model("qwen2-mixed").config.layer_types == ["full_attention", "sliding_attention"]


def test_opt_flattens_its_ffn_input():
    """The case the OPT entry covers: its FFN sees `[tokens, hidden]`, not `[batch, seq, hidden]`."""
    model = case_model("opt")
    modules = next(get_layout(model).iter_layers(model))
    shapes = []
    handle = modules.ffn_up.register_forward_pre_hook(lambda module, args: shapes.append(tuple(args[0].shape)))
    with torch.no_grad():
        model(**tiny_batch())
    handle.remove()
    assert shapes == [(4 * 12, HIDDEN)]
