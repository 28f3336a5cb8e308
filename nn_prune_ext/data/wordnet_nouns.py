"""WordNet noun glosses labelled with their lexicographer category: a real text classification task.

Every noun synset of WordNet 3.0 belongs to one of 26 lexicographer files (`noun.animal`,
`noun.artifact`, `noun.food`, ...). The task: from the synset's first lemma and its gloss
("dog: a member of the genus Canis ..."), predict that category.

nn_prune_ext ships a stratified sample (at most `PER_CATEGORY` synsets per category, split
80/10/10 within each category) as gzipped JSON lines under `nn_prune_ext/data/wordnet_nouns/`,
with WordNet's license. `build_sample` rebuilds it, byte for byte, from Debian's `wordnet-base`
files (`apt-get install wordnet-base`):

    python -m nn_prune_ext.data.wordnet_nouns --wordnet-dir /usr/share/wordnet
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
from collections import defaultdict
from pathlib import Path

from ..atomic_files import open_atomically

__all__ = ["CATEGORIES", "SPLITS", "SAMPLE_DIR", "read_synsets", "build_sample", "write_sample", "load_sample"]

# lexnames(5WN): lexicographer file numbers 3..28 are the noun files.
CATEGORIES = [
    "noun.Tops", "noun.act", "noun.animal", "noun.artifact", "noun.attribute", "noun.body", "noun.cognition",
    "noun.communication", "noun.event", "noun.feeling", "noun.food", "noun.group", "noun.location",
    "noun.motive", "noun.object", "noun.person", "noun.phenomenon", "noun.plant", "noun.possession",
    "noun.process", "noun.quantity", "noun.relation", "noun.shape", "noun.state", "noun.substance", "noun.time",
]
FIRST_NOUN_FILE = 3
SPLITS = ("train", "validation", "test")
PER_CATEGORY = 480
SEED = 0
SAMPLE_DIR = Path(__file__).resolve().parent / "wordnet_nouns"
DEFAULT_WORDNET_DIR = "/usr/share/wordnet"


def read_synsets(wordnet_dir: str | os.PathLike = DEFAULT_WORDNET_DIR) -> list[dict]:
    """Every noun synset of `data.noun` as `{"id", "text", "label"}`.

    Args:
        wordnet_dir: Folder holding WordNet 3.0's `data.noun`.

    Returns:
        One record per synset, in file order: `id` is the synset offset, `text` is
        "first lemma: definition" (the gloss without its quoted examples), `label` the index of
        the category in `CATEGORIES`.
    """
    path = Path(wordnet_dir) / "data.noun"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found. Install WordNet 3.0 (Debian/Ubuntu: apt-get install wordnet-base) or pass "
            "the folder holding data.noun."
        )
    records = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if line.startswith("  "):  # the license header
                continue
            fields, _, gloss = line.partition(" | ")
            parts = fields.split(" ")
            offset, file_number = parts[0], int(parts[1])
            lemma = parts[4].replace("_", " ")
            definition = gloss.strip().split('; "')[0].strip().rstrip(";")
            records.append({"id": offset, "text": f"{lemma}: {definition}", "label": file_number - FIRST_NOUN_FILE})
    return records


def build_sample(records: list[dict], per_category: int = PER_CATEGORY, seed: int = SEED) -> dict[str, list[dict]]:
    """A stratified sample: at most `per_category` synsets per category, split 80/10/10 in each."""
    by_label: dict[int, list[dict]] = defaultdict(list)
    for record in records:
        by_label[record["label"]].append(record)
    rng = random.Random(seed)
    splits: dict[str, list[dict]] = {name: [] for name in SPLITS}
    for label in sorted(by_label):
        chosen = rng.sample(by_label[label], min(per_category, len(by_label[label])))
        validation = test = max(1, len(chosen) // 10)
        splits["validation"] += chosen[:validation]
        splits["test"] += chosen[validation : validation + test]
        splits["train"] += chosen[validation + test :]
    for name in SPLITS:
        rng.shuffle(splits[name])
    return splits


def write_sample(splits: dict[str, list[dict]], directory: str | os.PathLike = SAMPLE_DIR) -> None:
    """Write `<split>.jsonl.gz` files (reproducible bytes: no timestamp in the gzip header)."""
    os.makedirs(directory, exist_ok=True)
    for name, records in splits.items():
        payload = "".join(json.dumps(record, sort_keys=True) + "\n" for record in records).encode("utf-8")
        path = Path(directory) / f"{name}.jsonl.gz"
        with open_atomically(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as handle:
            handle.write(payload)


def load_sample(directory: str | os.PathLike = SAMPLE_DIR):
    """The shipped sample as a `datasets.DatasetDict` with a `ClassLabel` label column."""
    from datasets import ClassLabel, DatasetDict, load_dataset

    files = {name: str(Path(directory) / f"{name}.jsonl.gz") for name in SPLITS}
    dataset = load_dataset("json", data_files=files)
    return DatasetDict({name: split.cast_column("label", ClassLabel(names=CATEGORIES)) for name, split in dataset.items()})


def main() -> None:
    parser = argparse.ArgumentParser(description="Rebuild the shipped WordNet noun-gloss sample.")
    parser.add_argument("--wordnet-dir", default=DEFAULT_WORDNET_DIR, help="Folder holding WordNet 3.0 data.noun.")
    parser.add_argument("--output-dir", default=str(SAMPLE_DIR), help="Where to write the .jsonl.gz files.")
    args = parser.parse_args()
    splits = build_sample(read_synsets(args.wordnet_dir))
    write_sample(splits, args.output_dir)
    print(", ".join(f"{name}: {len(records)}" for name, records in splits.items()), "->", args.output_dir)


if __name__ == "__main__":
    main()
