import gzip
import json
import os
from pathlib import Path

import pytest

from nn_prune_ext.data.wordnet_nouns import (
    CATEGORIES,
    DEFAULT_WORDNET_DIR,
    PER_CATEGORY,
    SAMPLE_DIR,
    SPLITS,
    build_sample,
    load_sample,
    read_synsets,
    write_sample,
)


def test_shipped_sample_is_stratified():
    dataset = load_sample()
    assert dataset["train"].features["label"].names == CATEGORIES
    ids = [set(dataset[name]["id"]) for name in SPLITS]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    for name in SPLITS:
        assert set(dataset[name]["label"]) == set(range(len(CATEGORIES)))  # every category in every split
    counts = [0] * len(CATEGORIES)
    for name in SPLITS:
        for label in dataset[name]["label"]:
            counts[label] += 1
    assert max(counts) == PER_CATEGORY and min(counts) >= 40  # noun.motive has only 42 synsets
    assert all(": " in text for text in dataset["validation"]["text"])
    assert (SAMPLE_DIR / "LICENSE").read_text().count("Princeton University") >= 2


@pytest.mark.skipif(
    not (Path(DEFAULT_WORDNET_DIR) / "data.noun").is_file(),
    reason="WordNet 3.0 is not installed (apt-get install wordnet-base) to rebuild the sample from",
)
def test_builder_reproduces_the_shipped_sample(tmp_path):
    records = read_synsets(DEFAULT_WORDNET_DIR)
    assert len(records) == 82115
    write_sample(build_sample(records), tmp_path)
    for name in SPLITS:
        assert (tmp_path / f"{name}.jsonl.gz").read_bytes() == (SAMPLE_DIR / f"{name}.jsonl.gz").read_bytes()


def test_write_sample_rewrites_the_shipped_files_byte_for_byte_and_nothing_else(tmp_path):
    # Runs without WordNet: the shipped records written again give the shipped bytes (no gzip timestamp),
    # and the temporary files of the atomic writes are gone.
    splits = {}
    for name in SPLITS:
        with gzip.open(SAMPLE_DIR / f"{name}.jsonl.gz", "rt", encoding="utf-8") as handle:
            splits[name] = [json.loads(line) for line in handle]
    (tmp_path / "train.jsonl.gz").write_bytes(b"an older sample")
    write_sample(splits, tmp_path)
    assert sorted(os.listdir(tmp_path)) == sorted(f"{name}.jsonl.gz" for name in SPLITS)
    for name in SPLITS:
        assert (tmp_path / f"{name}.jsonl.gz").read_bytes() == (SAMPLE_DIR / f"{name}.jsonl.gz").read_bytes()


def test_missing_wordnet_says_how_to_install(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install wordnet-base"):
        read_synsets(tmp_path)
