import xml.etree.ElementTree as ElementTree

from nn_prune_ext import get_layout, model_flops, optimize_model
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
    dropped = "Layer(s) 1 of the 2 layers of the dense model were removed whole" in card
    assert dropped == (slim.slim_report.dropped_layers == [1])
    assert "trust_remote_code=True" in card and "load_slim" in card
    classifier = CLASSIFIERS[get_layout(model_type).input_kind][0].__name__
    assert f"from transformers import {classifier}\n" in card  # the saved class
    assert f"]({PICTURE_NAME})" in card
    picture = ElementTree.parse(tmp_path / PICTURE_NAME).getroot()
    bars = [rect for rect in picture.iter("{http://www.w3.org/2000/svg}rect") if rect.get("height") == "9"]
    assert len(bars) == 2 * len(slim.slim_report.layers)  # every layer of the dense model, dropped ones too
    assert float(bars[-1].get("width")) == 0.0  # the emptied layer keeps no FFN unit
    labels = [text.text for text in picture.iter("{http://www.w3.org/2000/svg}text")]
    assert ("layer 1 (dropped)" in labels) == bool(slim.slim_report.dropped_layers)
