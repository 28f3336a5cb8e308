import xml.etree.ElementTree as ElementTree

from nn_prune_ext import optimize_model
from nn_prune_ext.slim.model_card import PICTURE_NAME

from slim_helpers import masked_model


def test_model_card_describes_every_layer(model_type, tmp_path):
    slim = optimize_model(masked_model(model_type))
    slim.save_pretrained(tmp_path)
    card = (tmp_path / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: transformers\n")
    for report in slim.slim_report.layers:
        row = (
            f"| {report.index} | {report.heads[1]} / {report.heads[0]} | {report.kv_heads[1]} / "
            f"{report.kv_heads[0]} | {report.ffn_width[1]} / {report.ffn_width[0]} |"
        )
        assert row in card
    before, after = slim.slim_report.parameters
    assert f"| parameters | {before:,} | {after:,} |" in card
    assert "trust_remote_code=True" in card and "load_slim" in card
    assert "from transformers import AutoModelForSequenceClassification\n" in card  # the saved class
    assert f"]({PICTURE_NAME})" in card
    picture = ElementTree.parse(tmp_path / PICTURE_NAME).getroot()
    bars = [rect for rect in picture.iter("{http://www.w3.org/2000/svg}rect") if rect.get("height") == "9"]
    assert len(bars) == 2 * len(slim.slim_report.layers)
    assert float(bars[-1].get("width")) == 0.0  # the emptied layer keeps no FFN unit
