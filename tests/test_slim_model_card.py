import xml.etree.ElementTree as ElementTree

from nn_prune_ext import get_layout, model_flops, optimize_model
import pytest

from nn_prune_ext import InputError, load_slim
from nn_prune_ext.slim import record_measured_speedup
from nn_prune_ext.plots import KEPT_PER_LAYER_TITLE
from nn_prune_ext.slim.model_card import FLOPS_SEQ_LEN, PICTURE_NAME

from conftest import CLASSIFIERS, tiny_model
from slim_helpers import masked_model


def test_model_card_describes_every_layer(model_type, tmp_path):
    slim = optimize_model(masked_model(model_type))
    slim.save_pretrained(tmp_path)
    card = (tmp_path / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: transformers\n")
    for report in slim.slim_report.layers:
        row = (
            f"| {report.index}{' (dropped)' if report.dropped else ''} | {report.heads[1]} / {report.heads[0]} | "
            f"{report.kv_heads[1]} / {report.kv_heads[0]} | {report.ffn_width[1]} / {report.ffn_width[0]} |"
        )
        assert row in card
    before, after = slim.slim_report.parameters
    assert f"| parameters | {before:,} | {after:,} |" in card
    # Dense FLOPs are those of the model before slimming, with every layer (a dropped one included).
    dense_flops, slim_flops = model_flops(tiny_model(model_type), FLOPS_SEQ_LEN), model_flops(slim, FLOPS_SEQ_LEN)
    assert f"| {dense_flops:,} | {slim_flops:,} |" in card
    assert "| measured speedup | | not measured | `nn-prune bench <this folder>` measures it" in card
    dropped = "Layer(s) 1 of the 2 layers of the dense model were removed whole" in card
    assert dropped == (slim.slim_report.dropped_layers == [1])
    assert "trust_remote_code=True" in card and "load_slim" in card
    classifier = CLASSIFIERS[get_layout(model_type).input_kind][0].__name__
    assert f"from transformers import {classifier}\n" in card  # the saved class
    assert f"]({PICTURE_NAME})" in card and PICTURE_NAME == "kept_per_layer.svg"
    check_kept_per_layer_svg(tmp_path / PICTURE_NAME, slim.slim_report)


SVG = "{http://www.w3.org/2000/svg}"


def check_kept_per_layer_svg(path, report) -> None:
    """The SVG draws, per layer of the dense model, the share of its heads and FFN units `report` says it kept."""
    picture = ElementTree.parse(path).getroot()
    assert picture.find(f"{SVG}title").text == "Kept per layer, as a share of the dense model" == KEPT_PER_LAYER_TITLE
    rectangles = list(picture.iter(f"{SVG}rect"))
    bars = [rect for rect in rectangles if rect.get("height") == "9"]
    tracks = [rect for rect in rectangles if rect.get("height") == "21"]  # the dense size behind each layer's bars
    assert len(bars) == 2 * len(tracks) == 2 * len(report.layers)  # every layer of the dense model, dropped ones too
    assert {track.get("width") for track in tracks} == {"360"}
    widths = [float(bar.get("width")) for bar in bars]
    expected = [360 * kept / dense for layer in report.layers for dense, kept in (layer.heads, layer.ffn_width)]
    assert widths == pytest.approx(expected, abs=0.05)
    assert [bar.get("fill") for bar in bars] == ["#4c72b0", "#dd8452"] * len(report.layers)
    texts = [text.text for text in picture.iter(f"{SVG}text")]
    for layer in report.layers:
        label = f"layer {layer.index}" + (" (dropped)" if layer.dropped else "")
        shares = ["dropped"] * 2 if layer.dropped else [f"{kept}/{dense}" for dense, kept in (layer.heads, layer.ffn_width)]
        assert texts[texts.index(label) + 1 : texts.index(label) + 3] == shares


def test_a_checkpoint_with_the_old_picture_name_loads_and_saves_the_new_one(tmp_path):
    slim = optimize_model(masked_model("llama"))
    slim.save_pretrained(tmp_path / "old")
    # As earlier versions saved it: the same picture, named density.svg.
    (tmp_path / "old" / PICTURE_NAME).rename(tmp_path / "old" / "density.svg")
    card = tmp_path / "old" / "README.md"
    card.write_text(card.read_text().replace(PICTURE_NAME, "density.svg"))
    loaded = load_slim(tmp_path / "old")
    loaded.save_pretrained(tmp_path / "new")
    assert PICTURE_NAME in (tmp_path / "new" / "README.md").read_text()
    assert sorted(path.name for path in (tmp_path / "new").glob("*.svg")) == [PICTURE_NAME]
    check_kept_per_layer_svg(tmp_path / "new" / PICTURE_NAME, slim.slim_report)


def test_a_recorded_speedup_is_in_the_card_beside_the_flops_and_survives_reloading(tmp_path):
    slim = optimize_model(masked_model("bert"))
    record_measured_speedup(slim, 1.834, batch_size=32, seq_len=19, device="2-core CPU", threads=2)
    slim.save_pretrained(tmp_path / "first")
    card = (tmp_path / "first" / "README.md").read_text()
    assert "| measured speedup, batch 32 x 19 tokens | 1 | x1.83 | 2-core CPU, 2 threads |" in card
    assert card.index("FLOPs of the transformer layers") < card.index("measured speedup")
    reloaded = load_slim(tmp_path / "first")
    reloaded.save_pretrained(tmp_path / "second")
    assert "x1.83 | 2-core CPU" in (tmp_path / "second" / "README.md").read_text()
    with pytest.raises(InputError, match="positive number"):
        record_measured_speedup(slim, 0.0, batch_size=1, seq_len=1, device="cpu")
