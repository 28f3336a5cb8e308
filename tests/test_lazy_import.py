"""The lazy package (PEP 562 `__getattr__` in nn_prune_ext/__init__.py) and a CLI that answers before torch loads.

The checks that torch is not imported run in a fresh interpreter: this test process has imported torch long ago.
"""

import ast
import json
import os
import subprocess
import sys
import textwrap

import pytest

import nn_prune_ext

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The package of this checkout, whichever copy is installed (an editable install may point elsewhere).
THIS_CHECKOUT = {**os.environ, "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")])}
HEAVY = ("torch", "transformers", "datasets", "accelerate", "safetensors", "numpy", "scipy")


def run_python(script: str) -> subprocess.CompletedProcess:
    """`script` in a fresh interpreter, from this checkout."""
    return subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True,
                          timeout=300, cwd=ROOT, env=THIS_CHECKOUT)


def test_this_checkout_is_the_one_the_subprocesses_import():
    done = run_python("import nn_prune_ext; print(nn_prune_ext.__file__)")
    assert done.stdout.strip() == os.path.join(ROOT, "nn_prune_ext", "__init__.py"), done.stderr


# ----- the CLI answers --help and bad flags without torch ---------------------------------------------------
def test_help_and_bad_flags_are_answered_without_importing_torch_or_transformers():
    done = run_python(f"""
        import contextlib, io, json, sys
        from nn_prune_ext.cli import build_parser, main

        argvs = [["--help"], ["--bogus"], ["optimize", "--bogus", "a", "b"], ["optimize", "--help"],
                 ["report", "ckpt", "--seq-len", "0"], ["report", "--help"], ["bench", "ckpt", "--warmup", "nan"],
                 ["bench", "--help"], ["posttrain", "in", "out", "--data", "d", "--flops-budget", "2"],
                 ["posttrain", "--help"], ["heal", "in", "out", "--data", "d", "--train-data", "t"],
                 ["heal", "--help"], ["nonsense"]]
        codes = []
        for argv in argvs:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                try:
                    build_parser().parse_args(argv)
                except SystemExit as exit_info:
                    codes.append(exit_info.code)
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                try:
                    main(argv)
                except SystemExit as exit_info:
                    codes.append(exit_info.code)
        print(json.dumps({{"codes": codes, "loaded": sorted(name for name in {HEAVY!r} if name in sys.modules)}}))
    """)
    result = json.loads(done.stdout)
    expected = [0, 2, 2, 0, 2, 0, 2, 0, 2, 0, 2, 0, 2]
    assert result["codes"] == [code for code in expected for _ in range(2)], done.stderr
    assert result["loaded"] == []


def _fake_checkpoint(path) -> None:
    """A folder that passes the path checks (config.json, a .safetensors file) without any model in it."""
    path.mkdir()
    (path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    (path / "model.safetensors").write_bytes(b"")


BAD_PATHS = {
    # command line (IN is a checkpoint folder, DATA a data file, MISSING nothing) -> what the line names
    "optimize_missing_in": (["optimize", "MISSING", "OUT"], "nn-prune optimize: error: IN "),
    "optimize_out_is_a_file": (["optimize", "IN", "DATA"], "nn-prune optimize: error: OUT "),
    "report_in_without_config": (["report", "EMPTY", "--no-plots"], "holds no config.json"),
    "report_missing_importance_data": (["report", "IN", "--no-plots", "--importance-data", "MISSING"],
                                       "nn-prune report: error: --importance-data "),
    "bench_missing_checkpoint": (["bench", "MISSING"], "nn-prune bench: error: CKPT "),
    "bench_json_is_a_folder": (["bench", "IN", "--json", "EMPTY"], "nn-prune bench: error: --json "),
    "posttrain_missing_data": (["posttrain", "IN", "OUT", "--flops-budget", "0.5", "--data", "MISSING"],
                               "nn-prune posttrain: error: --data "),
    "posttrain_data_is_a_folder": (["posttrain", "IN", "OUT", "--flops-budget", "0.5", "--data", "EMPTY"],
                                   "(a folder)"),
    "heal_missing_train_data": (["heal", "IN", "OUT", "--flops-budget", "0.5", "--data", "DATA", "--train-data",
                                 "MISSING"], "nn-prune heal: error: --train-data "),
    "heal_missing_eval_data": (["heal", "IN", "OUT", "--flops-budget", "0.5", "--data", "DATA", "--train-data",
                                "DATA", "--eval-data", "MISSING"], "nn-prune heal: error: --eval-data "),
    "heal_work_dir_is_a_file": (["heal", "IN", "OUT", "--flops-budget", "0.5", "--data", "DATA", "--train-data",
                                 "DATA", "--work-dir", "DATA"], "nn-prune heal: error: --work-dir "),
}


def test_bad_paths_are_refused_before_torch_is_imported(tmp_path):
    _fake_checkpoint(tmp_path / "in")
    (tmp_path / "empty").mkdir()
    (tmp_path / "data.jsonl").write_text('{"text": "a", "label": 0}\n')
    names = {"IN": tmp_path / "in", "OUT": tmp_path / "out", "DATA": tmp_path / "data.jsonl",
             "EMPTY": tmp_path / "empty", "MISSING": tmp_path / "missing"}
    cases = {case: [str(names.get(arg, arg)) for arg in argv] for case, (argv, _) in BAD_PATHS.items()}
    done = run_python(f"""
        import contextlib, io, json, sys
        from nn_prune_ext.cli import main

        results = {{}}
        for case, argv in {cases!r}.items():
            stderr = io.StringIO()
            with contextlib.redirect_stderr(stderr):
                try:
                    main(argv)
                except SystemExit as exit_info:
                    results[case] = [exit_info.code, stderr.getvalue()]
        print(json.dumps({{"results": results, "loaded": sorted(name for name in {HEAVY!r} if name in sys.modules)}}))
    """)
    result = json.loads(done.stdout)
    for case, (_, named) in BAD_PATHS.items():
        code, error = result["results"][case]
        assert code == 2 and error.count("\n") == 1 and named in error, (case, error)
    assert result["loaded"] == []
    assert sorted(os.listdir(tmp_path)) == ["data.jsonl", "empty", "in"]  # nothing written


def test_a_missing_data_file_is_refused_by_the_console_entry_point_without_torch(tmp_path):
    """`python -m nn_prune_ext.cli`, as `nn-prune` runs it: status 2, one line, and torch never imported."""
    _fake_checkpoint(tmp_path / "in")
    script = (
        "import runpy, sys\n"
        "checkpoint, output, data = sys.argv[1:]\n"
        "sys.argv = ['nn-prune', 'posttrain', checkpoint, output, '--flops-budget', '0.5', '--data', data]\n"
        "try:\n"
        "    runpy.run_module('nn_prune_ext.cli', run_name='__main__')\n"
        "finally:\n"
        "    print('torch' in sys.modules, 'transformers' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "in"), str(tmp_path / "out"),
                           str(tmp_path / "calibration.jsonl")], capture_output=True, text=True, timeout=300,
                          cwd=ROOT, env=THIS_CHECKOUT)
    assert done.returncode == 2
    assert done.stderr == (f"nn-prune posttrain: error: --data {str(tmp_path / 'calibration.jsonl')!r} is not a file "
                           "(no such file): give a JSON-lines file of calibration examples.\n")
    assert done.stdout == "False False\n"


# ----- the lazy package -------------------------------------------------------------------------------------
def test_importing_the_package_and_its_errors_imports_no_torch():
    done = run_python(f"""
        import sys
        import nn_prune_ext
        from nn_prune_ext import InputError, NonFiniteError
        from nn_prune_ext.validation import check_fields
        import nn_prune_ext.commands.arguments, nn_prune_ext.commands.data, nn_prune_ext.dependencies
        print(sorted(name for name in {HEAVY!r} if name in sys.modules), nn_prune_ext.__version__)
    """)
    assert done.stdout == "[] 0.1.0\n", done.stderr


def test_every_public_name_resolves_to_the_object_its_submodule_defines():
    import importlib

    assert len(nn_prune_ext.__all__) == len(set(nn_prune_ext.__all__)) == 65
    assert set(nn_prune_ext.__all__) == set(nn_prune_ext._EXPORTS)
    for name in nn_prune_ext.__all__:
        module = importlib.import_module(f"nn_prune_ext.{nn_prune_ext._EXPORTS[name]}")
        assert getattr(nn_prune_ext, name) is getattr(module, name), name
    assert set(nn_prune_ext.__all__) <= set(dir(nn_prune_ext))


def test_every_public_name_imports_first():
    """Each name alone, first thing after a fresh `import nn_prune_ext`: no name relies on another submodule having
    been imported before it (the eager package imported them all in one order)."""
    done = run_python("""
        import sys
        import torch, transformers  # once: what matters is the order of nn_prune_ext's own modules
        import nn_prune_ext

        failed = []
        for name in nn_prune_ext.__all__:
            for module in [module for module in sys.modules if module.split(".")[0] == "nn_prune_ext"]:
                del sys.modules[module]
            namespace = {}
            try:
                exec(f"from nn_prune_ext import {name}", namespace)
                if getattr(namespace[name], "__name__", None) != name:
                    failed.append((name, namespace[name]))
            except Exception as error:
                failed.append((name, repr(error)))
        print(failed)
    """)
    assert done.stdout == "[]\n", done.stdout + done.stderr


def test_star_import_gives_all_and_nothing_else():
    namespace: dict = {}
    exec("from nn_prune_ext import *", namespace)
    assert sorted(name for name in namespace if name != "__builtins__") == sorted(nn_prune_ext.__all__)


def test_the_type_checking_imports_match_the_lazy_table():
    """Editors and type checkers read the `if TYPE_CHECKING:` imports; `__getattr__` reads `_SUBMODULE_EXPORTS`."""
    tree = ast.parse(open(nn_prune_ext.__file__, encoding="utf-8").read())
    block = next(node for node in tree.body
                 if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING")
    imported = {(node.module, alias.name) for node in block.body for alias in node.names}
    assert imported == {(module, name) for module, names in nn_prune_ext._SUBMODULE_EXPORTS.items() for name in names}


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="module 'nn_prune_ext' has no attribute 'SparseTrainr'"):
        nn_prune_ext.SparseTrainr
    with pytest.raises(ImportError, match="cannot import name 'SparseTrainr'"):
        exec("from nn_prune_ext import SparseTrainr", {})
    assert not hasattr(nn_prune_ext, "_private_name")
    assert getattr(nn_prune_ext, "no_such.module", None) is None  # not a ModuleNotFoundError for "no_such"


def test_a_submodule_is_reachable_as_an_attribute_as_with_the_eager_package():
    done = run_python("""
        import sys
        import nn_prune_ext
        assert "nn_prune_ext.validation" not in sys.modules
        print(nn_prune_ext.validation.__name__, nn_prune_ext.validation.InputError is nn_prune_ext.InputError)
    """)
    assert done.stdout == "nn_prune_ext.validation True\n", done.stderr


def test_the_function_summary_is_not_hidden_by_the_submodule_summary():
    """`nn_prune_ext.summary` is the function, also after something imports the submodule of that name."""
    done = run_python("""
        import nn_prune_ext
        import nn_prune_ext.summary as imported      # the import system sets the package's `summary` here
        from nn_prune_ext import summary
        from nn_prune_ext.summary import summary as defined
        print(summary is defined, nn_prune_ext.summary is defined, imported is defined, callable(summary))
    """)
    assert done.stdout == "True True True True\n", done.stderr


def test_an_error_inside_a_submodule_surfaces_with_its_traceback():
    # A finder that makes `nn_prune_ext.flops` fail while it executes, as a bug in that module would.
    done = run_python("""
        import importlib.abc, importlib.machinery, sys

        class Broken(importlib.abc.MetaPathFinder, importlib.abc.Loader):
            def find_spec(self, name, path, target=None):
                return importlib.machinery.ModuleSpec(name, self) if name == "nn_prune_ext.flops" else None

            def create_module(self, spec):
                return None

            def exec_module(self, module):
                raise ZeroDivisionError("a bug inside nn_prune_ext.flops")

        sys.meta_path.insert(0, Broken())
        import nn_prune_ext
        nn_prune_ext.model_flops
    """)
    assert done.returncode == 1
    assert "Traceback" in done.stderr and "in exec_module" in done.stderr
    assert done.stderr.strip().endswith("ZeroDivisionError: a bug inside nn_prune_ext.flops")
