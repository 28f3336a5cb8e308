"""Slim checkpoints: what `save_pretrained` writes and how it loads, with and without nn_prune_ext."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from transformers import AutoConfig

from nn_prune_ext import InputError, bake_model, get_layout, load_slim, optimize_model, supported_model_types
from nn_prune_ext.slim import modeling_slim
from nn_prune_ext.slim.layers import LAYERS_KEY

from conftest import CLASSIFIERS, CLASSIFICATION_TYPES, empty_layers_are_dropped, tiny_batch, tiny_model
from slim_helpers import masked_model

# Runs in a fresh interpreter whose import system cannot find nn_prune_ext: the repository root is
# off sys.path and the editable-install finder is removed. It loads each checkpoint with
# trust_remote_code (must equal the reference logits), saves that model again and reloads it, and
# loads it without trust_remote_code (must fail).
REMOTE_LOADER = textwrap.dedent(
    """
    import importlib.util, json, sys
    sys.path = [p for p in sys.path if p not in ("", {root!r})]
    sys.meta_path = [f for f in sys.meta_path if "editable" not in repr(f) and "editable" not in getattr(f, "__module__", "")]
    assert importlib.util.find_spec("nn_prune_ext") is None, "nn_prune_ext is importable"
    import torch
    from safetensors.torch import load_file
    import transformers
    from transformers import AutoModel
    results = {{}}
    for model_type, folder in json.loads(sys.argv[1]).items():
        reference = load_file(folder + "/reference.safetensors")
        batch = {{k: v for k, v in reference.items() if k != "logits"}}
        images = "pixel_values" in batch
        classifier = transformers.AutoModelForImageClassification if images else transformers.AutoModelForSequenceClassification
        model = classifier.from_pretrained(folder, trust_remote_code=True).eval()
        with torch.no_grad():
            difference = (model(**batch).logits - reference["logits"]).abs().max().item()
        model.save_pretrained(folder + "-resaved")  # the remote copy saves itself again
        again = classifier.from_pretrained(folder + "-resaved", trust_remote_code=True)
        with torch.no_grad():
            resaved_difference = (again(**batch).logits - reference["logits"]).abs().max().item()
        base = AutoModel.from_pretrained(folder, trust_remote_code=True)
        try:
            classifier.from_pretrained(folder)
            stock_error = None
        except Exception as error:
            stock_error = type(error).__name__ + ": " + str(error)
        results[model_type] = {{
            "difference": difference,
            "resaved_difference": resaved_difference,
            "class": type(model).__name__,
            "base_class": type(base).__name__,
            "stock_error": stock_error,
        }}
    print("RESULTS" + json.dumps(results))
    """
)


@pytest.fixture(scope="module")
def slim_checkpoints(tmp_path_factory):
    """For every registered architecture: a saved slim checkpoint and the masked model's logits."""
    from safetensors.torch import save_file

    folders = {}
    for model_type in CLASSIFICATION_TYPES:
        batch = tiny_batch(model_type)
        masked = masked_model(model_type)
        with torch.no_grad():
            logits = masked(**batch).logits
        folder = str(tmp_path_factory.mktemp(model_type))
        optimize_model(masked).save_pretrained(folder)
        save_file({**batch, "logits": logits.contiguous()}, os.path.join(folder, "reference.safetensors"))
        folders[model_type] = folder
    return folders


def load_without_nn_prune_ext(folders: dict[str, str]) -> dict[str, dict]:
    """Run REMOTE_LOADER in a fresh process on `{model_type: checkpoint folder}`; its results per type."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    done = subprocess.run(
        [sys.executable, "-c", REMOTE_LOADER.format(root=root), json.dumps(folders)],
        capture_output=True, text=True, cwd=os.path.dirname(root), env=env, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(line for line in done.stdout.splitlines() if line.startswith("RESULTS"))
    return json.loads(line[len("RESULTS") :])


@pytest.fixture(scope="module")
def remote_results(slim_checkpoints):
    return load_without_nn_prune_ext(slim_checkpoints)


def test_checkpoint_files(model_type, slim_checkpoints):
    folder = slim_checkpoints[model_type]
    names = set(os.listdir(folder))
    assert {"config.json", "model.safetensors", modeling_slim.MODELING_FILE_NAME, "README.md", "kept_per_layer.svg"} <= names
    assert not any(name.endswith((".bin", ".pt", ".pth")) for name in names)
    config = json.load(open(os.path.join(folder, "config.json")))
    assert config["model_type"] == model_type
    classifier = CLASSIFIERS[get_layout(model_type).input_kind][0].__name__
    assert config["auto_map"][classifier].startswith("modeling_nn_prune_slim.Slim")
    assert config["auto_map"]["AutoModel"].startswith("modeling_nn_prune_slim.Slim")
    per_layer = config["per_layer_config"]
    if empty_layers_are_dropped(model_type):  # the emptied layer is the identity: dropped
        num_layers = AutoConfig.for_model(model_type).attribute_map.get("num_hidden_layers", "num_hidden_layers")
        assert list(per_layer) == ["0"] and config[num_layers] == 1
        assert config[LAYERS_KEY]["kept"] == [0] and config[LAYERS_KEY]["dense_num_layers"] == 2
    else:
        assert 0 in per_layer[max(per_layer)].values()  # the emptied layer: no heads and no FFN units
    source = open(os.path.join(folder, modeling_slim.MODELING_FILE_NAME)).read()
    imports = {line.split()[1].split(".")[0] for line in source.splitlines() if line.startswith(("import ", "from "))}
    assert imports <= {"__future__", "contextlib", "errno", "functools", "inspect", "json", "logging", "os", "re",
                       "shutil", "socket", "tempfile", "warnings", "typing", "torch", "transformers"}


def test_per_layer_sizes_match_the_weights(model_type, slim_checkpoints):
    folder = slim_checkpoints[model_type]
    config = json.load(open(os.path.join(folder, "config.json")))
    spec = config[modeling_slim.SLIM_SPEC_KEY]
    with safe_open(os.path.join(folder, "model.safetensors"), "pt") as weights:
        shapes = {key: weights.get_slice(key).get_shape() for key in weights.keys()}
    if not any(f".{spec['output']}.weight" in key for key in shapes):
        # This family's save_pretrained writes older key names, which from_pretrained maps back: the
        # loaded model's own names and shapes.
        shapes = {key: list(value.shape) for key, value in load_slim(folder).state_dict().items()}
    # The input dimension of a stored weight: the second of nn.Linear's (out, in), the first of Conv1D's.
    inputs_at = {site["path"]: 0 if site["storage"] == "conv1d" else 1 for site in spec["sites"]}
    for index, sizes in config["per_layer_config"].items():
        heads = sizes[spec.get("layer_num_heads_attr") or spec["num_heads_attr"]]
        width = sizes[spec["intermediate_size_attr"]]
        head_dim = sizes.get(spec["head_dim_attr"], spec["head_dim"])  # a derived head_dim is not set per layer
        output = next(s for k, s in shapes.items() if f".{int(index)}.{spec['output']}.weight" in k)
        down = next(s for k, s in shapes.items() if f".{int(index)}.{spec['ffn_down']}.weight" in k)
        assert heads * head_dim in output and width in down  # an empty Conv1D is stored as nn.Linear
        if heads:
            assert output[inputs_at[spec["output"]]] == heads * head_dim
        if width:
            assert down[inputs_at[spec["ffn_down"]]] == width


def test_reloads_without_nn_prune_ext(model_type, remote_results):
    result = remote_results[model_type]
    assert result["difference"] <= 1e-5 and result["resaved_difference"] <= 1e-5
    assert result["class"].startswith("Slim") and result["base_class"].startswith("Slim")


def test_loading_without_remote_code_fails_loudly(model_type, remote_results):
    # Stock code either refuses to read a per-layer size globally, or (Llama, whose config validator
    # needs the global sizes) refuses the weight shapes.
    error = remote_results[model_type]["stock_error"] or ""
    assert error.startswith("AmbiguousGlobalPerLayerAttributeError") or (
        error.startswith("RuntimeError") and "ignore_mismatched_sizes" in error
    ), error


def test_load_slim_needs_no_remote_code(model_type, slim_checkpoints):
    folder = slim_checkpoints[model_type]
    from safetensors.torch import load_file

    reference = load_file(os.path.join(folder, "reference.safetensors"))
    model = load_slim(folder).eval()
    assert type(model).__module__ == modeling_slim.__name__
    with torch.no_grad():
        logits = model(**{key: value for key, value in reference.items() if key != "logits"}).logits
    assert (logits - reference["logits"]).abs().max().item() <= 1e-5


def test_a_slim_model_builds_from_its_config():
    slim = optimize_model(masked_model("bert"))
    fresh = type(slim)(slim.config)
    assert {k: v.shape for k, v in fresh.state_dict().items()} == {k: v.shape for k, v in slim.state_dict().items()}
    assert all(torch.isfinite(p).all() for p in fresh.parameters())


def test_a_config_that_is_not_slim_is_an_input_error():
    with pytest.raises(InputError, match="does not describe a slim model"):
        modeling_slim.slim_spec(AutoConfig.for_model("bert"))


def test_a_hand_edited_config_whose_heads_do_not_group_is_an_input_error():
    slim = optimize_model(masked_model("llama"))
    settings = slim.config.to_dict()
    layer = next(iter(settings["per_layer_config"].values()))
    layer["num_key_value_heads"] = 2
    layer["num_attention_heads"] = 3  # 3 query heads cannot share 2 key/value heads evenly
    settings["allow_global_per_layer_attribute_access"] = True  # as a saved Llama config.json has it
    with pytest.raises(InputError, match="cannot be grouped"):
        type(slim)(type(slim.config).from_dict(settings))


def test_save_is_atomic(tmp_path):
    slim = optimize_model(masked_model("bert"))
    target = tmp_path / "slim"
    slim.save_pretrained(target)
    before = {name: (target / name).read_bytes() for name in os.listdir(target)}

    def failing_hook(model, directory):
        raise OSError("disk full")

    modeling_slim.SAVE_HOOKS.append(failing_hook)
    try:
        with torch.no_grad():
            slim.classifier.weight.add_(1.0)
        with pytest.raises(OSError, match="disk full"):
            slim.save_pretrained(target)
    finally:
        modeling_slim.SAVE_HOOKS.remove(failing_hook)
    assert {name: (target / name).read_bytes() for name in os.listdir(target)} == before
    assert os.listdir(tmp_path) == ["slim"], "no staging folder is left behind"


def test_a_failure_while_moving_into_place_keeps_the_old_checkpoint(tmp_path, monkeypatch):
    slim = optimize_model(masked_model("bert"))
    target = tmp_path / "slim"
    slim.save_pretrained(target)
    (target / "tokenizer.json").write_text("{}")  # a file of the folder this save does not write
    before = {name: (target / name).read_bytes() for name in os.listdir(target)}
    real_rename = os.rename

    def rename(source, destination):
        staged = os.path.basename(str(source)).startswith(".slim-staging-")
        if staged and str(destination) == str(target):
            raise OSError("interrupted")  # the staged folder cannot take the old one's place
        real_rename(source, destination)

    monkeypatch.setattr(os, "rename", rename)
    monkeypatch.setattr(modeling_slim, "_exchange", lambda first, second: False)  # the two-rename way
    with torch.no_grad():
        slim.classifier.weight.add_(1.0)
    with pytest.raises(OSError, match="interrupted"):
        slim.save_pretrained(target)
    monkeypatch.undo()
    assert {name: (target / name).read_bytes() for name in os.listdir(target)} == before
    assert os.listdir(tmp_path) == ["slim"]
    slim.save_pretrained(target)  # now it goes through, and keeps the tokenizer
    assert (target / "tokenizer.json").read_text() == "{}"
    assert torch.equal(load_slim(target).classifier.weight, slim.classifier.weight)


def test_a_save_without_a_one_step_exchange_keeps_the_tokenizer_and_drops_old_shards(tmp_path, monkeypatch):
    slim = optimize_model(masked_model("bert"))
    target = tmp_path / "slim"
    slim.save_pretrained(target)
    (target / "tokenizer.json").write_text("{}")
    (target / "model-00002-of-00002.safetensors").write_bytes(b"an older save's shard")
    monkeypatch.setattr(modeling_slim, "_exchange", lambda first, second: False)
    with torch.no_grad():
        slim.classifier.weight.add_(1.0)
    slim.save_pretrained(target)
    assert (target / "tokenizer.json").read_text() == "{}"
    assert not (target / "model-00002-of-00002.safetensors").exists()
    assert torch.equal(load_slim(target).classifier.weight, slim.classifier.weight)
    assert os.listdir(tmp_path) == ["slim"]


def _snapshot(folder) -> dict[str, bytes]:
    return {name: (folder / name).read_bytes() for name in sorted(os.listdir(folder))}


@pytest.mark.parametrize("case", ["file", "below_a_file", "link_to_a_file", "link_to_nothing"])
def test_a_save_path_that_is_a_file_is_refused_and_left_as_it_is(tmp_path, case):
    precious = tmp_path / "notes.txt"
    precious.write_bytes(b"the user's own file")
    path = {"file": precious, "below_a_file": precious / "slim"}.get(case, tmp_path / "link")
    if case == "link_to_a_file":
        os.symlink(precious, path)
    if case == "link_to_nothing":
        os.symlink(tmp_path / "nowhere", path)
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(InputError, match=r"Pick a folder path") as refused:
        optimize_model(masked_model("bert")).save_pretrained(path)
    assert str(path) in str(refused.value)
    assert precious.read_bytes() == b"the user's own file"
    assert sorted(os.listdir(tmp_path)) == before  # nothing renamed, nothing written, no .slim-* folder
    if case.startswith("link"):
        assert os.path.islink(path)


def test_a_link_to_a_checkpoint_folder_is_followed_and_stays_a_link(tmp_path):
    slim = optimize_model(masked_model("bert"))
    (tmp_path / "real").mkdir()
    os.symlink("real", tmp_path / "link")
    slim.save_pretrained(tmp_path / "link")
    (tmp_path / "real" / "tokenizer.json").write_text("{}")
    with torch.no_grad():
        slim.classifier.weight.add_(1.0)
    slim.save_pretrained(tmp_path / "link")
    assert os.path.islink(tmp_path / "link") and os.readlink(tmp_path / "link") == "real"
    assert torch.equal(load_slim(tmp_path / "real").classifier.weight, slim.classifier.weight)
    assert (tmp_path / "real" / "tokenizer.json").read_text() == "{}"
    assert sorted(os.listdir(tmp_path)) == ["link", "real"]


def test_replacing_a_checkpoint_keeps_its_other_files_and_drops_old_shards(tmp_path):
    slim = optimize_model(masked_model("bert"))
    target = tmp_path / "slim"
    slim.save_pretrained(target)
    (target / "tokenizer.json").write_text("{}")
    (target / "model-00002-of-00002.safetensors").write_bytes(b"an older save's shard")
    (target / "runs").mkdir()
    (target / "runs" / "events").write_text("training log")
    target.chmod(0o750)  # the folder's permissions are the user's
    with torch.no_grad():
        slim.classifier.weight.add_(1.0)
    slim.save_pretrained(target)
    assert (target / "tokenizer.json").read_text() == "{}"
    assert (target / "runs" / "events").read_text() == "training log"
    assert not (target / "model-00002-of-00002.safetensors").exists()
    assert target.stat().st_mode & 0o777 == 0o750
    assert torch.equal(load_slim(target).classifier.weight, slim.classifier.weight)
    assert os.listdir(tmp_path) == ["slim"]


@pytest.mark.parametrize("way", ["exchange", "two_renames", "mount_point"])
def test_a_resave_drops_what_earlier_saves_wrote_and_keeps_the_users_files(tmp_path, monkeypatch, way):
    slim = optimize_model(masked_model("bert"))
    target = tmp_path / "slim"
    slim.save_pretrained(target)
    written = set(os.listdir(target))
    (target / "density.svg").write_text("<svg/>")  # the model card's picture as earlier releases named it
    (target / "generation_config.json").write_text("{}")  # a save of a model that generates
    (target / "notes.txt").write_text("lr 3e-5 was best")  # no slim save writes these two: the user's
    (target / "training_args.bin").write_bytes(b"someone else's")
    if way == "two_renames":
        monkeypatch.setattr(modeling_slim, "_exchange", lambda first, second: False)
    elif way == "mount_point":
        monkeypatch.setattr(modeling_slim.os.path, "ismount", lambda path: str(path) == str(target))
    with torch.no_grad():
        slim.classifier.weight.add_(1.0)
    slim.save_pretrained(target)
    monkeypatch.undo()
    assert set(os.listdir(target)) == written | {"notes.txt", "training_args.bin"}
    assert (target / "notes.txt").read_text() == "lr 3e-5 was best"
    assert (target / "training_args.bin").read_bytes() == b"someone else's"
    reloaded = load_slim(target)
    assert reloaded.state_dict().keys() == slim.state_dict().keys()
    assert all(torch.equal(reloaded.state_dict()[name], tensor) for name, tensor in slim.state_dict().items())


def test_the_names_a_save_owns_include_the_model_cards():
    from nn_prune_ext.slim.model_card import PICTURE_NAME

    # modeling_slim spells them out (a remote-code copy cannot import model_card): they must agree
    assert {PICTURE_NAME, "README.md", modeling_slim.MODELING_FILE_NAME} <= modeling_slim._SAVED_NAMES


def _fake_renameat2(error_number: int):
    """A libc whose renameat2 fails with `error_number`, as ctypes reports it."""
    import ctypes

    def renameat2(*args):
        ctypes.set_errno(error_number)
        return -1

    return lambda *args, **kwargs: type("Libc", (), {"renameat2": staticmethod(renameat2)})()


@pytest.mark.parametrize("error_name", ["ENOSYS", "EINVAL", "EBUSY", "EXDEV"])
def test_no_one_step_exchange_is_reported_not_raised(tmp_path, monkeypatch, error_name):
    import ctypes
    import errno

    monkeypatch.setattr(ctypes, "CDLL", _fake_renameat2(getattr(errno, error_name)))
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    assert modeling_slim._exchange(str(tmp_path / "a"), str(tmp_path / "b")) is False


def test_a_real_exchange_swaps_two_folders(tmp_path):
    for name in "ab":
        (tmp_path / name).mkdir()
        (tmp_path / name / "which").write_text(name)
    if not modeling_slim._exchange(str(tmp_path / "a"), str(tmp_path / "b")):
        pytest.skip("no renameat2(RENAME_EXCHANGE) here")
    assert (tmp_path / "a" / "which").read_text() == "b" and (tmp_path / "b" / "which").read_text() == "a"


def test_a_mount_point_has_its_files_replaced_one_by_one(tmp_path, monkeypatch):
    slim = optimize_model(masked_model("bert"))
    target = tmp_path / "slim"
    slim.save_pretrained(target)
    (target / "tokenizer.json").write_text("{}")
    (target / "model-00002-of-00002.safetensors").write_bytes(b"an older save's shard")
    inode = target.stat().st_ino
    monkeypatch.setattr(modeling_slim.os.path, "ismount", lambda path: str(path) == str(target))
    replaced = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: (replaced.append(os.path.basename(b)), real_replace(a, b)))
    with torch.no_grad():
        slim.classifier.weight.add_(1.0)
    slim.save_pretrained(target)
    monkeypatch.undo()
    assert target.stat().st_ino == inode  # the folder itself stayed
    assert replaced[-1] == "config.json"  # the checkpoint reads as the new one only once all else is there
    assert (target / "tokenizer.json").read_text() == "{}"
    assert not (target / "model-00002-of-00002.safetensors").exists()
    assert torch.equal(load_slim(target).classifier.weight, slim.classifier.weight)
    assert os.listdir(tmp_path) == ["slim"] and not [n for n in os.listdir(target) if n.startswith(".slim-")]


def test_a_failure_to_move_the_old_folder_aside_raises_and_keeps_it(tmp_path, monkeypatch):
    import errno

    slim = optimize_model(masked_model("bert"))
    target = tmp_path / "slim"
    slim.save_pretrained(target)
    before = _snapshot(target)
    real_rename = os.rename

    def rename(source, destination):
        if str(source) == str(target):
            raise PermissionError(errno.EACCES, "denied")
        real_rename(source, destination)

    monkeypatch.setattr(os, "rename", rename)
    monkeypatch.setattr(modeling_slim, "_exchange", lambda first, second: False)
    with torch.no_grad():
        slim.classifier.weight.add_(1.0)
    with pytest.raises(PermissionError):  # not a file-by-file replace, which only a mount point needs
        slim.save_pretrained(target)
    monkeypatch.undo()
    assert _snapshot(target) == before
    assert os.listdir(tmp_path) == ["slim"]


def test_two_saves_in_one_folder_at_once_both_complete(tmp_path):
    import threading

    models = [optimize_model(masked_model("bert")) for _ in range(2)]
    with torch.no_grad():
        models[1].classifier.weight.add_(1.0)
    errors = []

    def save(model, name):
        try:
            model.save_pretrained(tmp_path / name)
        except Exception as error:  # noqa: BLE001 (reported below)
            errors.append(error)

    threads = [threading.Thread(target=save, args=(model, f"slim{i}")) for i, model in enumerate(models)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    for i, model in enumerate(models):
        assert torch.equal(load_slim(tmp_path / f"slim{i}").classifier.weight, model.classifier.weight)
    assert sorted(os.listdir(tmp_path)) == ["slim0", "slim1"]


def _dead_pid() -> int:
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(child.stdout)


def test_leftovers_of_dead_saves_are_removed_and_a_folder_moved_aside_is_put_back(tmp_path):
    live = modeling_slim._owner()
    host = live.rsplit("-", 1)[0]
    dead = f"{host}-{_dead_pid()}"
    with subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE) as other:
        other_live = f"{host}-{other.pid}"
        untouched = [f".slim-staging-{live}-abc", f".slim-staging-{other_live}-abc", f".slim-old-{other_live}-x",
                     f".slim-staging-otherhost-{_dead_pid()}-abc", f".slim-staging-{dead}-locked", "kept"]
        leftovers = [f".slim-staging-{dead}-abc", f".slim-old-{dead}-kept", f".slim-old-{dead}-gone"]
        for name in untouched + leftovers:
            (tmp_path / name).mkdir()
        (tmp_path / f".slim-staging-{dead}-abc" / "model.safetensors").write_bytes(b"half")
        os.symlink(tmp_path / "kept", tmp_path / f".slim-staging-{dead}-link")  # what a save through a link left
        leftovers.append(f".slim-staging-{dead}-link")
        (tmp_path / f".slim-old-{dead}-gone" / "config.json").write_text("{}")
        # A save whose pid looks dead but which holds its folder's lock (another container) is alive.
        lock = modeling_slim._lock(str(tmp_path / f".slim-staging-{dead}-locked"))
        try:
            assert sorted(modeling_slim._clean_stale_staging(str(tmp_path))) == sorted(leftovers)
        finally:
            if lock is not None:
                os.close(lock)
        other.stdin.close()
    # Live saves' folders and another host's stay; the folder a dead save moved aside is back.
    assert sorted(os.listdir(tmp_path)) == sorted(untouched + ["gone"])
    assert (tmp_path / "gone" / "config.json").read_text() == "{}"
    assert os.listdir(tmp_path / "kept") == []


def test_a_save_puts_back_the_folder_a_killed_save_moved_aside_and_then_replaces_it(tmp_path):
    slim = optimize_model(masked_model("bert"))
    target = tmp_path / "slim"
    slim.save_pretrained(target)
    (target / "tokenizer.json").write_text("{}")
    os.rename(target, tmp_path / f".slim-old-{modeling_slim._owner().rsplit('-', 1)[0]}-{_dead_pid()}-slim")
    slim.save_pretrained(target)
    assert os.listdir(tmp_path) == ["slim"]
    assert (target / "tokenizer.json").read_text() == "{}"  # the old folder came back before it was replaced


def test_recover_interrupted_save_only_puts_back_a_dead_saves_folder(tmp_path):
    host = modeling_slim._owner().rsplit("-", 1)[0]
    (tmp_path / f".slim-old-{host}-{os.getpid()}-slim").mkdir()  # this live process is between its renames
    assert not modeling_slim.recover_interrupted_save(tmp_path / "slim")
    (tmp_path / f".slim-old-{host}-{_dead_pid()}-slim").mkdir()
    assert modeling_slim.recover_interrupted_save(tmp_path / "slim")
    assert (tmp_path / "slim").is_dir() and not modeling_slim.recover_interrupted_save(tmp_path / "slim")


@pytest.fixture(scope="module")
def kill_report(tmp_path_factory):
    import time

    work_dir = tmp_path_factory.mktemp("slim_kills")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.path.dirname(os.path.dirname(__file__))}
    started = time.monotonic()
    result = subprocess.run([sys.executable, os.path.join(os.path.dirname(__file__), "kill_slim_save.py"),
                             str(work_dir)], capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert time.monotonic() - started < 120, "the kill test should stay short"
    return work_dir, json.loads((work_dir / "report.json").read_text())


@pytest.fixture(scope="module")
def next_save():
    return optimize_model(masked_model("bert"))


KILL_STAGES = {
    "while_writing": "old", "keeping_old_files": "old", "before_exchange": "old", "after_exchange": "new",
    "removing_old_copy": "new", "between_fallback_renames": "old", "after_fallback_renames": "new",
}


@pytest.mark.parametrize("stage", list(KILL_STAGES))
def test_a_save_killed_anywhere_leaves_one_whole_checkpoint_and_nothing_behind(kill_report, next_save, stage):
    import signal

    work_dir, report = kill_report
    folder = work_dir / stage
    assert report[stage]["signal"] == signal.SIGKILL  # killed at that stage
    if stage == "between_fallback_renames":
        # The window the exchange closes: the path is empty until the next save (or this) puts the old one back.
        assert "slim" not in report[stage]["after_kill"]
        assert modeling_slim.recover_interrupted_save(folder / "slim")
    # The whole old or the whole new checkpoint, as the kill left it (nothing cleaned up yet).
    expected = load_file(str(folder / f"{KILL_STAGES[stage]}.safetensors"))
    loaded = load_slim(folder / "slim").state_dict()
    assert loaded.keys() == expected.keys()
    assert all(torch.equal(loaded[name], expected[name]) for name in expected)
    assert (folder / "slim" / "tokenizer.json").read_text() == "{}"
    next_save.save_pretrained(folder / "slim")  # the next save removes what the killed one left
    assert sorted(os.listdir(folder)) == ["new.safetensors", "old.safetensors", "slim"]
    assert not [name for name in os.listdir(folder / "slim") if name.startswith(".slim-")]
    assert (folder / "slim" / "tokenizer.json").read_text() == "{}"


def test_saved_folder_is_readable_by_others(tmp_path):
    optimize_model(masked_model("bert")).save_pretrained(tmp_path / "slim")
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "slim").stat().st_mode & 0o777 == 0o777 & ~umask


def test_a_slim_checkpoint_loads_for_another_task(tmp_path):
    from transformers import AutoModelForMaskedLM, AutoModelForSequenceClassification

    masked = masked_model("bert")
    encoder = AutoModelForMaskedLM.from_config(masked.config)
    encoder.bert.load_state_dict(bake_model(masked).bert.state_dict(), strict=False)  # MLM has no pooler
    slim = optimize_model(encoder)
    slim.save_pretrained(tmp_path)
    classifier = AutoModelForSequenceClassification.from_pretrained(tmp_path, trust_remote_code=True)
    assert type(classifier).__name__ == "SlimBertForSequenceClassification"
    batch = tiny_batch()
    with torch.no_grad():
        torch.testing.assert_close(classifier.bert(**batch).last_hidden_state, slim.bert(**batch).last_hidden_state)


def test_not_a_slim_checkpoint(tmp_path):
    tiny_model("bert").save_pretrained(tmp_path)
    with pytest.raises(InputError, match="not a slim checkpoint"):
        load_slim(tmp_path)


@pytest.mark.parametrize(
    ("name", "message"),
    [("missing/sub/folder", "There is no folder '.*missing/sub/folder'"), ("empty", "holds no config.json"),
     ("file.txt", "is a file")],
)
def test_load_slim_says_when_the_folder_is_missing_or_not_a_checkpoint(tmp_path, name, message):
    (tmp_path / "empty").mkdir()
    (tmp_path / "file.txt").write_text("")
    with pytest.raises(InputError, match=message):
        load_slim(tmp_path / name)


@pytest.mark.parametrize(
    ("path", "kwargs", "message"),
    [
        (None, {}, r"load_slim: path must be a folder \(str or os\.PathLike\) .*got NoneType"),
        (123, {}, r"load_slim: path must be a folder .*got int"),
        ("model", {}, r"load_slim: path must be a folder .*got BertForSequenceClassification \(it is loaded already\)"),
        (".", {"subfolder": 1}, r"load_slim: subfolder must be a folder .*got int"),
        (".", {"model_class": "bert"}, r"load_slim: model_class must be a transformers model class .*got 'bert'"),
    ],
    ids=["none", "number", "loaded_model", "subfolder_number", "model_class_text"],
)
def test_load_slim_refuses_arguments_that_are_not_paths_or_model_classes(path, kwargs, message):
    # Before: os.stat's TypeError ("path should be string, bytes, os.PathLike or integer").
    path = tiny_model("bert") if path == "model" else path
    with pytest.raises(InputError, match=message):
        load_slim(path, **kwargs)


@pytest.fixture
def fake_hub(monkeypatch):
    """HfApi without the Hub: records what would be uploaded."""
    import huggingface_hub

    uploads = []

    class Repo:
        def __init__(self, repo_id):
            self.repo_id = repo_id

    def upload_folder(self, repo_id, folder_path, **kwargs):
        files = {name: open(os.path.join(folder_path, name), "rb").read() for name in os.listdir(folder_path)}
        uploads.append((repo_id, kwargs, files))

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", lambda self, repo_id, **kwargs: Repo(repo_id))
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    return uploads


def test_push_to_hub_uploads_the_slim_checkpoint_and_its_card(fake_hub):
    slim = optimize_model(masked_model("bert"))
    slim.push_to_hub("me/slim", commit_message="slim")
    ((repo_id, kwargs, files),) = fake_hub
    assert repo_id == "me/slim" and kwargs["commit_message"] == "slim"
    assert {"model.safetensors", "config.json", modeling_slim.MODELING_FILE_NAME, "kept_per_layer.svg"} <= set(files)
    assert b"## Kept per layer" in files["README.md"]


def test_save_with_push_to_hub_saves_then_uploads(tmp_path, fake_hub):
    slim = optimize_model(masked_model("bert"))
    slim.save_pretrained(tmp_path / "slim", push_to_hub=True, repo_id="me/slim")
    ((repo_id, _, files),) = fake_hub
    assert repo_id == "me/slim" and set(files) == set(os.listdir(tmp_path / "slim"))


def test_saving_over_a_sharded_checkpoint_leaves_no_stale_shards(tmp_path):
    slim = optimize_model(masked_model("bert"))
    slim.save_pretrained(tmp_path, max_shard_size="20KB")
    assert "model.safetensors.index.json" in os.listdir(tmp_path)
    slim.save_pretrained(tmp_path)
    assert sorted(n for n in os.listdir(tmp_path) if ".safetensors" in n) == ["model.safetensors"]
    assert load_slim(tmp_path).config.per_layer_config[0].num_attention_heads == slim.slim_report.layers[0].heads[1]


def test_stock_class_of_a_class_loaded_with_remote_code(slim_checkpoints):
    # The remote class comes from the checkpoint's copy of the modeling file, not from nn_prune_ext.
    from transformers import AutoModelForSequenceClassification, BertForSequenceClassification

    from nn_prune_ext.slim.classes import stock_class

    remote = AutoModelForSequenceClassification.from_pretrained(slim_checkpoints["bert"], trust_remote_code=True)
    assert not isinstance(remote, modeling_slim.SlimModelMixin)
    assert stock_class(type(remote)) is BertForSequenceClassification
    assert stock_class(BertForSequenceClassification) is BertForSequenceClassification
