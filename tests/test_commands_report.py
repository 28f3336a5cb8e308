import argparse
import importlib.util
import json
import re

import pytest
import torch
from transformers import BertTokenizer

from nn_prune_ext import InputError, SparseArgs, densities, get_layout, load_slim, model_flops, optimize_model
from nn_prune_ext import plots
from nn_prune_ext.commands import report
from nn_prune_ext.commands.data import examples_batches
from nn_prune_ext.importance import collect_mask_gradients, fisher_importance
from nn_prune_ext.slim import kept_head_indices
from nn_prune_ext.slim.layers import dense_num_layers, dropped_layer_indices, kept_layer_indices
from nn_prune_ext.slim.optimize import count_parameters
from nn_prune_ext.trainer import SPARSE_STATE_NAME

from conftest import HEADS, INTERMEDIATE, KV_HEADS, VOCAB, tiny_model
from slim_helpers import HEAD_AND_UNIT_ARGS, masked_model
from test_plots import (
    Drawn, check_kept_per_layer, check_mask_density, kept_sizes, mask_fractions, rendered
)

LAYER_ROW = re.compile(r"^\s*(\d+)\s+(\d+) -> (\d+)\s+(\d+) -> (\d+)\s+(\d+) -> (\d+)", re.MULTILINE)


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="nn-prune")
    report.add_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["report", *argv])


def run_report(argv: list[str]) -> list:
    args = parse(argv)
    return args.run(args)


def integers(text: str, pattern: str) -> tuple[int, ...]:
    match = re.search(pattern, text)
    assert match, f"{pattern!r} not in:\n{text}"
    return tuple(int(group.replace(",", "")) for group in match.groups())


def kept_rows(model) -> list[tuple[int, ...]]:
    """(layer, dense heads, kept, dense KV heads, kept, dense FFN width, kept), from the model itself.

    There is a row per layer of the dense model; a layer dropped whole keeps nothing.
    """
    rows = [(index, HEADS, 0, KV_HEADS, 0, INTERMEDIATE, 0) for index in range(dense_num_layers(model.config))]
    for layer, index in zip(get_layout(model).iter_layers(model), kept_layer_indices(model.config)):
        rows[index] = (index, HEADS, layer.num_heads, KV_HEADS, layer.num_kv_heads, INTERMEDIATE,
                       layer.ffn_down.in_features)
    return rows


def test_report_of_a_slim_checkpoint(tmp_path, capsys, monkeypatch):
    optimize_model(masked_model("llama")).save_pretrained(tmp_path / "slim")
    drawn = Drawn(monkeypatch)
    written = run_report([str(tmp_path / "slim"), "--output-dir", str(tmp_path / "out"), "--seq-len", "64"])
    text = capsys.readouterr().out
    slim, dense = load_slim(tmp_path / "slim"), tiny_model("llama")
    assert text.startswith("SlimLlamaForSequenceClassification (llama), slim checkpoint\n")
    # The emptied last layer is the identity in this pre-norm model: slimming dropped it, the report still lists it.
    assert dropped_layer_indices(slim.config) == [1] and slim.config.num_hidden_layers == 1
    rows = [tuple(map(int, row)) for row in LAYER_ROW.findall(text)]
    assert rows == kept_rows(slim) and rows[-1] == (1, HEADS, 0, KV_HEADS, 0, INTERMEDIATE, 0)
    layer_lines = [line for line in text.splitlines() if LAYER_ROW.match(line)]
    assert [line.rstrip().endswith("dropped") for line in layer_lines] == [False, True]
    assert integers(text, r"parameters: ([\d,]+) -> ([\d,]+)") == (count_parameters(dense), count_parameters(slim))
    flops = integers(text, r"one sequence of 64 tokens: ([\d,]+) -> ([\d,]+)")
    assert flops == (model_flops(dense, 64), model_flops(slim, 64))
    assert "measured speedup: not recorded in this checkpoint; `nn-prune bench CHECKPOINT` measures it" in text
    assert "mask densities" not in text
    # No mask density: a slim checkpoint has no masks. What it kept, per layer of the dense model.
    assert written == [tmp_path / "out" / name for name in ("summary.txt", "kept_per_layer.png")]
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == ["kept_per_layer.png", "summary.txt"]
    assert (tmp_path / "out" / "summary.txt").read_text() in text
    assert [figure.get_suptitle() for figure in drawn.figures] == ["Kept per layer, as a share of the dense model"]
    check_kept_per_layer(drawn.figures[0], written[1], kept_sizes(slim), dropped=[1])
    assert text.endswith(f"written:\n  {written[0]}\n  {written[1]}\n")


def test_report_names_its_pictures_as_the_plots_do():
    assert (report.KEPT_PICTURE, report.MASK_DENSITY_PICTURE, report.IMPORTANCE_PICTURE) == (
        plots.KEPT_PER_LAYER_PICTURE, plots.MASK_DENSITY_PICTURE, plots.HEAD_IMPORTANCE_PICTURE
    )
    parser = argparse.ArgumentParser(prog="nn-prune")
    report.add_parser(parser.add_subparsers(dest="command", required=True))
    help_text = " ".join(parser._subparsers._group_actions[0].choices["report"].format_help().split())
    assert ("PNG pictures (kept_per_layer.png; mask_density.png of a SparseTrainer checkpoint's masks; "
            "head_importance.png with --importance-data)") in help_text


def test_report_of_a_sparse_trainer_checkpoint(tmp_path, capsys):
    masked = masked_model("bert")
    masked.save_pretrained(tmp_path / "checkpoint-4")  # the scores are saved with the weights
    # What SparseTrainer writes next to them; the SparseArgs are what loading needs.
    state = {"sparse_args": SparseArgs(**HEAD_AND_UNIT_ARGS).to_dict(), "step": 4}
    (tmp_path / "checkpoint-4" / SPARSE_STATE_NAME).write_text(json.dumps(state))
    written = run_report([str(tmp_path / "checkpoint-4"), "--no-plots"])
    text = capsys.readouterr().out
    assert "BertForSequenceClassification (bert), SparseTrainer checkpoint" in text
    expected = densities(masked)
    assert (
        f"mask densities at the final threshold: attention {expected['attention']:.1%}, "
        f"dense {expected['dense']:.1%}, total {expected['total']:.1%}\n" in text
    )
    slim = optimize_model(masked)
    assert [tuple(map(int, row)) for row in LAYER_ROW.findall(text)] == [
        (r.index, *r.heads, *r.kv_heads, *r.ffn_width) for r in slim.slim_report.layers
    ]
    assert integers(text, r"parameters: ([\d,]+) -> ([\d,]+)") == slim.slim_report.parameters
    assert written == [tmp_path / "checkpoint-4-report" / "summary.txt"]  # beside the checkpoint, no pictures


def test_pictures_of_a_sparse_trainer_checkpoint(tmp_path, capsys, monkeypatch):
    masked = masked_model("bert")
    masked.save_pretrained(tmp_path / "checkpoint-4")
    state = {"sparse_args": SparseArgs(**HEAD_AND_UNIT_ARGS).to_dict(), "step": 4}
    (tmp_path / "checkpoint-4" / SPARSE_STATE_NAME).write_text(json.dumps(state))
    drawn = Drawn(monkeypatch)
    written = run_report([str(tmp_path / "checkpoint-4"), "--output-dir", str(tmp_path / "out")])
    assert written == [tmp_path / "out" / name for name in ("summary.txt", "kept_per_layer.png", "mask_density.png")]
    kept, density = drawn.figures
    slim = optimize_model(masked)
    check_kept_per_layer(kept, written[1], kept_sizes(slim), dropped=slim.slim_report.dropped_layers)
    # The masks at the final threshold, read from the raw scores here.
    check_mask_density(density, written[2], mask_fractions(masked))
    assert density.get_suptitle() == "Mask density of each prunable matrix (before slimming)"


def save_tokenizer(path) -> None:
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"word{index}" for index in range(VOCAB - 5)]
    BertTokenizer(vocab={word: index for index, word in enumerate(words)}).save_pretrained(path)


def write_examples(path, count: int) -> None:
    generator = torch.Generator().manual_seed(0)
    with open(path, "w") as handle:
        for index in range(count):
            words = " ".join(f"word{int(i)}" for i in torch.randint(0, VOCAB - 5, (6,), generator=generator))
            handle.write(json.dumps({"sentence": words, "gold": f"LABEL_{index % 3}"}) + "\n")


def test_report_with_head_importance(tmp_path, capsys, monkeypatch):
    checkpoint = tmp_path / "slim"
    optimize_model(masked_model("bert", seed=1)).save_pretrained(checkpoint)
    save_tokenizer(checkpoint)
    write_examples(tmp_path / "data.jsonl", 10)
    argv = [str(checkpoint), "--importance-data", str(tmp_path / "data.jsonl"), "--text-column", "sentence",
            "--label-column", "gold", "--importance", "fisher", "--batch-size", "4", "--max-batches", "2"]
    drawn = Drawn(monkeypatch)
    written = run_report(argv)
    text = capsys.readouterr().out
    assert written[-1] == tmp_path / "slim-report" / "head_importance.png"
    rendered(written[-1])
    slim = load_slim(checkpoint)
    args = parse(argv)
    batches = examples_batches(args, args.importance_data, slim.config)
    assert [len(batch["labels"]) for batch in batches] == [4, 4]  # 2 batches of 4 of the 10 examples
    assert batches[1]["labels"].tolist() == [1, 2, 0, 1]  # LABEL_4 ... LABEL_7 through label2id
    expected = fisher_importance(collect_mask_gradients(slim, batches))
    # Layer 0 keeps dense heads 0 and 2: its second slim head is named 2 in the table, as in the picture.
    assert kept_head_indices(slim)[0] == [0, 2]
    table = text.split("head importance per layer (head:score, heads numbered as in the dense model):\n")[1]
    rows = table.splitlines()[: len(expected.num_heads)]
    assert [cell.split(":")[0] for cell in rows[0].split()[1:]] == ["0", "2"]
    for row, (index, line) in enumerate(zip(kept_layer_indices(slim.config), rows)):
        cells = " ".join(f"{head}:{value:.3g}" for head, value in
                         zip(kept_head_indices(slim)[row], expected.layer_heads(row).tolist()))
        assert line == f"{index:>5}  {cells}".rstrip()
    # The picture places each slim head at the dense head it was cut from; the others are removed.
    axes = drawn.figures[-1].axes[0]
    assert drawn.figures[-1].get_suptitle() == "Head importance (fisher, 2 batches of data.jsonl)"
    grid = torch.full((len(expected.num_heads), HEADS), float("nan"))
    for layer, heads in enumerate(kept_head_indices(slim)):
        grid[layer, heads] = expected.layer_heads(layer)
    assert axes.images[0].get_array().filled(float("nan")) == pytest.approx(
        (grid / grid.nan_to_num(-1.0).max()).numpy(), nan_ok=True, rel=1e-3
    )
    assert (~axes.images[1].get_array().mask).tolist() == grid.isnan().tolist()
    assert axes.get_xlabel() == "head (numbered as in the dense model)"


def test_importance_table_names_heads_as_the_picture_does():
    from nn_prune_ext.commands.checkpoint_summary import importance_table

    heads = torch.tensor([[0.5, 0.25, float("nan")], [1.0, 0.001, 2e-5]])  # NaN: beyond a slim layer's heads
    # Dense heads 1 and 3 kept in layer 0; layer 2 has a zero head slimming added (None): no dense head.
    assert importance_table(heads, [0, 2], [[1, 3], [0, None, 2]]).splitlines()[1:] == [
        "    0  1:0.5 3:0.25",
        "    2  0:1 2:2e-05",
    ]
    # A slim checkpoint saved before heads were recorded: the slim order, and the title says so.
    unrecorded = importance_table(heads, [0, 2], None).splitlines()
    assert "does not record the dense model's head numbers" in unrecorded[0]
    assert unrecorded[1:] == ["    0  0.5 0.25", "    2  1 0.001 2e-05"]


def test_report_input_errors(tmp_path):
    checkpoint = tmp_path / "slim"
    optimize_model(masked_model("bert")).save_pretrained(checkpoint)
    write_examples(tmp_path / "data.jsonl", 4)
    with pytest.raises(ValueError, match="Could not load a tokenizer .* pass --tokenizer"):
        run_report([str(checkpoint), "--importance-data", str(tmp_path / "data.jsonl"), "--no-plots"])
    save_tokenizer(checkpoint)
    with pytest.raises(ValueError, match="Line 1 of .* has no field 'text'.*--text-column"):
        run_report([str(checkpoint), "--importance-data", str(tmp_path / "data.jsonl"), "--no-plots"])
    with open(tmp_path / "data.jsonl", "a") as handle:
        handle.write("\n{'sentence': 'word1', 'gold': 'LABEL_0'}\n")  # line 6: Python, not JSON
    argv = [str(checkpoint), "--importance-data", str(tmp_path / "data.jsonl"), "--text-column", "sentence",
            "--label-column", "gold", "--no-plots"]
    with pytest.raises(ValueError, match=r"Line 6 of .*data\.jsonl is not valid JSON"):
        run_report(argv)
    with pytest.raises(SystemExit):  # argparse: "argument --seq-len: must be a whole number >= 1, got 0"
        run_report([str(checkpoint), "--seq-len", "0"])
    with pytest.raises(InputError, match="--output-dir .* is an existing file"):
        run_report([str(checkpoint), "--output-dir", str(tmp_path / "data.jsonl"), "--no-plots"])
    with pytest.raises(InputError, match="--importance-data .* is not a file"):
        run_report([str(checkpoint), "--importance-data", str(tmp_path / "nothing.jsonl"), "--no-plots"])


def test_report_without_matplotlib_fails_before_loading_unless_no_plots(tmp_path, monkeypatch, capsys):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *args: None if name == "matplotlib" else find_spec(name, *args)
    )
    # Checked up front: the folder is not even read.
    with pytest.raises(ValueError, match=r'need matplotlib: pip install "nn_prune_ext\[plots\]", or pass --no-plots'):
        run_report([str(tmp_path / "missing")])
    optimize_model(masked_model("bert")).save_pretrained(tmp_path / "slim")
    assert run_report([str(tmp_path / "slim"), "--no-plots"]) == [tmp_path / "slim-report" / "summary.txt"]


def test_report_of_a_slim_checkpoint_without_its_dense_parameter_count(tmp_path, capsys):
    optimize_model(masked_model("llama")).save_pretrained(tmp_path / "slim")
    config_path = tmp_path / "slim" / "config.json"
    config = json.loads(config_path.read_text())
    del config["nn_prune_slim"]["dense_num_parameters"]  # as checkpoints saved before it was recorded
    config_path.write_text(json.dumps(config))
    run_report([str(tmp_path / "slim"), "--no-plots"])
    text = capsys.readouterr().out
    slim = load_slim(tmp_path / "slim")
    assert integers(text, r"parameters: ([\d,]+) -> ([\d,]+)") == (count_parameters(tiny_model("llama")),
                                                                    count_parameters(slim))


def test_report_states_the_speedup_a_slim_checkpoint_records(tmp_path, capsys):
    from nn_prune_ext.slim import record_measured_speedup

    slim = optimize_model(masked_model("bert"))
    record_measured_speedup(slim, 2.345, batch_size=32, seq_len=45, device="2-thread cpu, torch 2.13.0")
    slim.save_pretrained(tmp_path / "slim")
    run_report([str(tmp_path / "slim"), "--no-plots", "--output-dir", str(tmp_path / "out")])
    assert ("measured speedup x2.35 (batch 32 x 45 tokens, 2-thread cpu, torch 2.13.0), as recorded in the checkpoint"
            in capsys.readouterr().out)
