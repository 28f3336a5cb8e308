"""nn_prune_ext.atomic_files: a file is replaced whole or left as it was."""

import os

import pytest

from nn_prune_ext.atomic_files import atomic_path, open_atomically, write_bytes_atomically, write_text_atomically


def test_text_and_bytes_land_whole(tmp_path):
    target = tmp_path / "record.json"
    write_text_atomically(target, "première\n")
    assert target.read_bytes() == "première\n".encode("utf-8")
    write_bytes_atomically(target, b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01"
    assert os.listdir(tmp_path) == ["record.json"]


def test_an_error_mid_write_leaves_the_old_file_and_no_temporary_file(tmp_path):
    target = tmp_path / "results.jsonl"
    target.write_bytes(b"old content\n")
    with pytest.raises(RuntimeError, match="killed"):
        with open_atomically(target, "w", encoding="utf-8") as handle:
            handle.write("half of the new content")
            handle.flush()
            raise RuntimeError("killed")
    assert target.read_bytes() == b"old content\n"
    assert os.listdir(tmp_path) == ["results.jsonl"]


def test_an_error_of_a_path_writer_removes_its_temporary_file(tmp_path):
    target = tmp_path / "scores.safetensors"
    with pytest.raises(OSError):
        with atomic_path(target) as temporary:
            with open(temporary, "wb") as handle:
                handle.write(b"partial")
            raise OSError("disk full")
    assert os.listdir(tmp_path) == []


def test_the_temporary_file_is_fresh_and_in_the_targets_folder(tmp_path):
    target = tmp_path / "sub" / "state.json"
    target.parent.mkdir()
    with atomic_path(target) as first, atomic_path(target) as second:
        # beside the target (a rename is atomic only within one file system), one per writer
        assert os.path.dirname(first) == os.path.dirname(second) == str(target.parent)
        assert first != second and os.path.exists(first) and os.path.exists(second)
        assert not target.exists()
        with open(first, "w") as handle:
            handle.write("first")
        with open(second, "w") as handle:
            handle.write("second")
    # the inner writer finished first, the outer one last: the last rename wins
    assert target.read_text() == "first"
    assert os.listdir(target.parent) == ["state.json"]


def test_the_replaced_file_gets_opens_permissions_not_owner_only(tmp_path):
    target = tmp_path / "README.md"
    write_text_atomically(target, "# card\n")
    plain = tmp_path / "plain.md"
    plain.write_text("# card\n")
    assert os.stat(target).st_mode & 0o777 == os.stat(plain).st_mode & 0o777
