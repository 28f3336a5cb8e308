"""Every fenced block of README.md, docs/*.md, examples/README.md and analysis/README.md runs as written.

A page's blocks run in document order in one subprocess: its Python blocks share one namespace (a
later block uses what an earlier block on the same page defined, as in a doctest session), its bash
blocks run in the same working directory. That directory looks like the checkout's root (its tracked
top-level files and folders are linked in), so paths relative to the root resolve, and what the
blocks write (`out/slim`) lands in a temporary folder. Nothing is filled in by hand; the Hub is
switched off (`HF_HUB_OFFLINE=1`), so a block that downloads fails.

Every fence names its kind: `python`, `bash` or `sh` (code, run) or `text`, `json`, `jsonl` (data).
The line directly before a fence may carry one marker, an HTML comment that says how else the block
is checked:

- `<!-- docs-test: covered by tests/test_x.py::test_a[, tests/test_y.py::test_b] -->` (bash): too
  long to run here (a block without a marker may not call make, pip, accelerate, or the demo or the
  frontier sweep without --help/--quick); every command of the block must be run by the named tests:
  the same program (module, script or `nn-prune` subcommand), each flag it shows in one of the tests
  that run that program; or one of the tests reads the block's own lines from the page (its source
  names the page's file and the block's section);
- `<!-- docs-test: not run (install) -->` or `(test suite)` (bash): pip and venv lines, or the test
  suite itself; every command must be of that kind;
- `<!-- docs-test: signatures [of MODULE] -->` (python): a listing of call signatures, compared with
  `inspect.signature` of the objects of MODULE (default `nn_prune_ext`) instead of being run;
- `<!-- docs-test: [saved as NAME, ]read by MODULE.FUNCTION -->` (json, jsonl): the sample is written
  to a file (NAME in the working directory, for the blocks after it) and FUNCTION(path) must accept it.
  A `jsonl` block needs one: a file format is documented by the code that reads it.

Run one page with `python tests/test_docs.py PAGE` (e.g. `docs/slimming.md`).
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import io
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
import tokenize
import traceback
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = ["README.md", *sorted(f"docs/{path.name}" for path in (ROOT / "docs").glob("*.md")),
         "examples/README.md", "analysis/README.md"]
MARKER = re.compile(r"<!--\s*docs-test:\s*(.*?)\s*-->")
FENCE = re.compile(r"^(\s*)(`{3,})\s*([^`\s]*)[^`]*$")
# `not run` reasons, and the programs each allows: only set-up commands and the suite itself go unrun.
NOT_RUN_REASONS = {
    "install": ("module:pip", "module:venv", "program:pip", "program:pip3", "make:setup", "make:setup-floor"),
    "test suite": ("module:pytest",),
}
# Programs that run for minutes: an unmarked block may call them only with --help or --quick.
LONG_RUNNING = ("module:nn_prune_ext.demo", "script:analysis/frontier.py", "module:pytest")
PAGE_TIMEOUT = 900  # seconds; the slowest page takes about a minute on two quiet cores


@dataclasses.dataclass
class Block:
    """One fenced block: its page, the line of its opening fence (1-based), kind, text and marker."""

    page: str
    line: int
    kind: str
    code: str
    marker: str | None
    heading: str = ""  # the title of the section the block is in

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"


def read_blocks(page: str, text: str | None = None) -> tuple[list[Block], list[str]]:
    """The fenced blocks of `page` (a path relative to the checkout, or `text` given), and problems found.

    Returns:
        `(blocks, problems)`: problems are unclosed fences and markers that stand before no fence.
    """
    lines = (text if text is not None else (ROOT / page).read_text(encoding="utf-8")).splitlines()
    blocks, problems, index, heading = [], [], 0, ""
    while index < len(lines):
        match = FENCE.match(lines[index])
        if lines[index].startswith("#"):
            heading = lines[index].lstrip("#").strip()
        marker = MARKER.fullmatch(lines[index].strip())
        if marker and not (index + 1 < len(lines) and FENCE.match(lines[index + 1])):
            problems.append(f"{page}:{index + 1}: a docs-test marker must stand on the line directly before a fence")
        if not match:
            index += 1
            continue
        ticks, start = match.group(2), index
        before = MARKER.fullmatch(lines[index - 1].strip()) if index else None
        index += 1
        while index < len(lines) and lines[index].strip() != ticks:
            index += 1
        if index == len(lines):
            problems.append(f"{page}:{start + 1}: the fence opened here is never closed")
            break
        indent = len(match.group(1))
        code = "\n".join(line[indent:] if line[:indent].isspace() else line for line in lines[start + 1 : index])
        blocks.append(Block(page, start + 1, match.group(3), code + "\n", before.group(1) if before else None, heading))
        index += 1
    return blocks, problems


# ----- markers --------------------------------------------------------------------------------------


@dataclasses.dataclass
class Marker:
    kind: str  # "covered", "not run", "signatures", "data"
    tests: list[str] = dataclasses.field(default_factory=list)
    reason: str | None = None
    module: str = "nn_prune_ext"
    saved_as: str | None = None
    loader: str | None = None


MARKER_FORMS = {
    "covered": re.compile(r"covered by (tests/[\w/]+\.py::\w+(?:\s*,\s*tests/[\w/]+\.py::\w+)*)"),
    "not run": re.compile(r"not run \((.+)\)"),
    "signatures": re.compile(r"signatures(?: of ([\w.]+))?"),
    "data": re.compile(r"(?:saved as ([\w.\-]+), )?read by ([\w.]+)"),
}
MARKERS_ALLOWED = {"python": ("signatures",), "bash": ("covered", "not run"), "sh": ("covered", "not run"),
                   "text": (), "json": ("data",), "jsonl": ("data",)}


def parse_marker(text: str) -> Marker:
    """The marker's meaning; `ValueError` naming the accepted forms for anything else."""
    for kind, form in MARKER_FORMS.items():
        match = form.fullmatch(text)
        if not match:
            continue
        if kind == "covered":
            return Marker(kind, tests=[test.strip() for test in match.group(1).split(",")])
        if kind == "not run":
            return Marker(kind, reason=match.group(1))
        if kind == "signatures":
            return Marker(kind, module=match.group(1) or "nn_prune_ext")
        return Marker(kind, saved_as=match.group(1), loader=match.group(2))
    raise ValueError(
        f"unknown docs-test marker {text!r}; the forms are 'covered by tests/FILE.py::TEST[, ...]', "
        f"'not run (REASON)' with REASON one of {sorted(NOT_RUN_REASONS)}, 'signatures [of MODULE]', "
        "'[saved as NAME, ]read by MODULE.FUNCTION'"
    )


def block_problems(block: Block) -> list[str]:
    """What is wrong with a block's kind and marker (not yet whether its code runs)."""
    if block.kind not in MARKERS_ALLOWED:
        return [f"{block.where}: fence kind {block.kind!r} is none of {', '.join(MARKERS_ALLOWED)}: name the "
                "language of code to run, or text/json/jsonl for output and file formats"]
    if block.marker is None:
        if block.kind == "jsonl":
            return [f"{block.where}: a jsonl sample needs '<!-- docs-test: read by MODULE.FUNCTION -->', the code "
                    "that reads the format"]
        if block.kind in ("bash", "sh"):
            return [f"{block.where}: `{shlex.join(tokens)}` sets up an environment or runs for minutes, so it is not "
                    "run here: mark the block 'covered by' the test that runs it (set-up lines: 'not run (install)')"
                    for tokens in shell_commands(block.code) if not runs_here(tokens)]
        return []
    try:
        marker = parse_marker(block.marker)
    except ValueError as error:
        return [f"{block.where}: {error}"]
    if marker.kind not in MARKERS_ALLOWED[block.kind]:
        return [f"{block.where}: a {block.kind} block cannot be marked {marker.kind!r} (allowed: "
                f"{', '.join(MARKERS_ALLOWED[block.kind]) or 'none'})"]
    return []


def all_blocks() -> list[Block]:
    return [block for page in PAGES for block in read_blocks(page)[0]]


def marked(kind: str) -> list[Block]:
    """The blocks whose (valid) marker is of `kind`."""
    found = []
    for block in all_blocks():
        if block.marker and not block_problems(block) and parse_marker(block.marker).kind == kind:
            found.append(block)
    return found


# ----- commands in bash blocks ------------------------------------------------------------------------


def shell_commands(code: str) -> list[list[str]]:
    """The commands of a bash block as token lists: continuations joined, comments and `VAR=value` prefixes dropped."""
    commands = []
    for line in code.replace("\\\n", " ").splitlines():
        tokens = shlex.split(line, comments=True)
        while tokens and re.fullmatch(r"[A-Za-z_]\w*=\S*", tokens[0]):
            tokens = tokens[1:]
        if tokens:
            commands.append(tokens)
    return commands


def runs_here(tokens: list[str]) -> bool:
    """Whether a command may run in the suite: not an install, not a launcher, not a full demo or sweep."""
    program, flags = command_program(tokens)
    # make sets up .venv before its recipe runs, whatever the target.
    if os.path.basename(tokens[0]) in ("make", "accelerate") or program in NOT_RUN_REASONS["install"]:
        return False
    return program not in LONG_RUNNING or "--help" in flags or "--quick" in flags


def make_recipe(target: str) -> list[str] | None:
    """The command `make TARGET` runs (the Makefile recipe line that calls Python), `$(PY)` as `python`."""
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    match = re.search(rf"^{re.escape(target)}:.*\n((?:\t.*\n)*)", text, re.M)
    if match is None:
        return None
    for line in match.group(1).splitlines():
        if "$(PY)" in line or "$(FLOOR_PY)" in line:
            tokens = shlex.split(line.strip().replace("$(FLOOR_PY)", "python").replace("$(PY)", "python"))
            return [token for token in tokens if token != "$(ARGS)"]
    return []


def command_program(tokens: list[str]) -> tuple[str, list[str]]:
    """`(program, flags)` of one command: `module:M`, `script:PATH`, `nn-prune:SUB`, `make:TARGET`, `program:NAME`."""
    name = os.path.basename(tokens[0])
    flags = [token.split("=", 1)[0] for token in tokens[1:] if re.match(r"--?[A-Za-z]", token)]
    if name == "make":
        target = tokens[1] if len(tokens) > 1 else ""
        arguments = [shlex.split(token.split("=", 1)[1]) for token in tokens[2:] if token.startswith("ARGS=")]
        recipe = make_recipe(target)
        if not recipe:
            return f"make:{target}", []
        program, recipe_flags = command_program(recipe + [arg for args in arguments for arg in args])
        return program, recipe_flags
    if re.fullmatch(r"python[\d.]*", name):
        if "-m" in tokens:
            module_index = tokens.index("-m") + 1
            return f"module:{tokens[module_index]}", command_program(["x", *tokens[module_index + 1 :]])[1]
        script = next((token for token in tokens[1:] if token.endswith(".py")), "")
        return f"script:{script}", flags
    if name == "nn-prune":
        return f"nn-prune:{tokens[1] if len(tokens) > 1 else ''}", flags
    if name == "accelerate":
        script = next((token for token in tokens[1:] if token.endswith(".py")), "")
        return f"accelerate:{script}", flags
    return f"program:{name}", flags


def covering_source(reference: str, root: Path = ROOT) -> tuple[str, set[str], set[str]]:
    """The source a test runs and the names it uses, for `tests/FILE.py::TEST`.

    Returns:
        `(problem, words, strings)`: `problem` is "" when the test exists; `strings` holds every string
        constant of the test, of the fixtures it takes (same file or conftest.py) and of the module-level
        functions and constants they use; `words` those constants split on whitespace, and the modules and
        `module.name`s they import.

    """
    path, _, name = reference.partition("::")
    if not (root / path).is_file():
        return f"{path} does not exist", set(), set()
    definitions: dict[str, ast.AST] = {}
    imports: dict[str, list[str]] = {}
    conftest = root / "tests" / "conftest.py"
    for source in ([conftest] if conftest.is_file() else []) + [root / path]:  # the test file's own names win
        for node in ast.parse(source.read_text(encoding="utf-8")).body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                definitions[node.name] = node
            elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                    if isinstance(target, ast.Name):
                        definitions[target.id] = node
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    imports[(alias.asname or alias.name).split(".")[0]] = [alias.name]
            elif isinstance(node, ast.ImportFrom) and node.module:
                for alias in node.names:
                    imports[alias.asname or alias.name] = [node.module, f"{node.module}.{alias.name}"]
    test = definitions.get(name)
    if not isinstance(test, ast.FunctionDef) or not name.startswith("test"):
        return f"{path} has no test function {name!r}", set(), set()
    words: set[str] = set()
    strings: set[str] = set()
    queue, seen = [test], {name}
    while queue:
        node = queue.pop()
        used = {child.id for child in ast.walk(node) if isinstance(child, ast.Name)}
        used |= {child.arg for child in ast.walk(node) if isinstance(child, ast.arg)}  # fixtures by parameter name
        for child in ast.walk(node):
            if isinstance(child, ast.Constant) and isinstance(child.value, str):
                words.update(child.value.split())
                strings.add(child.value)
        for word in used - seen:
            seen.add(word)
            if word in definitions:
                queue.append(definitions[word])
            words.update(imports.get(word, []))
    return "", words, strings


def covered_problems(block: Block, root: Path = ROOT) -> list[str]:
    """How the tests a `covered by` marker names fail to run the block's commands (empty when they do)."""
    problems, closures, reads = [], {}, False
    for reference in parse_marker(block.marker).tests:
        problem, words, strings = covering_source(reference, root)
        if problem:
            problems.append(f"{block.where}: covered by {reference}, but {problem}")
        else:
            closures[reference] = words
            reads = reads or reads_block(block, strings)
    if reads:
        return problems  # a test takes the block's own lines from the page: it runs them as written
    for tokens in shell_commands(block.code):
        program, flags = command_program(tokens)
        # The tests that run this program, together, must show every flag (a flag's range may be tested apart).
        running = [words for words in closures.values() if runs(program, words)]
        missing = [flag for flag in flags if not any(shows(flag, words) for words in running)]
        if not running or missing:
            problems.append(
                f"{block.where}: `{shlex.join(tokens)}` ({program}) is run by none of "
                f"{', '.join(closures) or 'the named tests'}" + (f" with {', '.join(missing)}" if running else "")
                + ": name tests that run that program with those flags"
            )
    return problems


def reads_block(block: Block, strings: set[str]) -> bool:
    """Whether a test reads its commands from the block itself: it names the page's file and the block's section."""
    page = os.path.basename(block.page)
    return bool(block.heading) and any(string.endswith(page) for string in strings) and any(
        re.search(rf"#+ {re.escape(block.heading)}\b", string) for string in strings)


def runs(program: str, words: set[str]) -> bool:
    """Whether a test whose source closure holds `words` runs `program`."""
    kind, _, name = program.partition(":")
    if kind == "module":
        ran = name in words or any(word.startswith(name + ".") for word in words)
    elif kind in ("script", "accelerate"):
        script = os.path.basename(name)
        ran = bool(script) and any(word.endswith(script) or word == script[: -len(".py")] for word in words)
        ran = ran and (kind == "script" or "launch" in words)
    elif kind == "nn-prune":
        module = f"nn_prune_ext.commands.{name}"
        ran = module in words or ({name, "nn_prune_ext.cli"} <= words) or ({name, "nn-prune"} <= words)
    else:
        return False
    return ran


def shows(flag: str, words: set[str]) -> bool:
    return flag in words or any(word.startswith(flag + "=") for word in words)


def not_run_problems(block: Block) -> list[str]:
    reason = parse_marker(block.marker).reason
    if reason not in NOT_RUN_REASONS:
        return [f"{block.where}: 'not run ({reason})' is not an accepted reason; accepted: "
                f"{', '.join(sorted(NOT_RUN_REASONS))}. Anything else runs here or names the test that runs it"]
    problems = []
    for tokens in shell_commands(block.code):
        program, _ = command_program(tokens)
        if program not in NOT_RUN_REASONS[reason]:
            problems.append(f"{block.where}: `{shlex.join(tokens)}` ({program}) is not one of the {reason!r} "
                            "commands: run it here, or mark the block 'covered by' a test that runs it")
    return problems


# ----- signature listings ---------------------------------------------------------------------------


def signature_entries(code: str) -> list[tuple[str, ast.arguments, int]]:
    """`(dotted name, documented parameters, line in the block)` of each `name(params) [-> returns]` entry.

    Raises:
        SyntaxError: For an entry that is not of that form.
    """
    statements, current = [], []
    for token in tokenize.generate_tokens(io.StringIO(code).readline):
        if token.type == tokenize.NEWLINE:
            if current:
                statements.append(current)
            current = []
        elif token.type not in (tokenize.COMMENT, tokenize.NL, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER):
            current.append(token)
    lines = code.splitlines()
    entries = []
    for tokens in statements:
        (first_row, first_col), (last_row, last_col) = tokens[0].start, tokens[-1].end
        span = lines[first_row - 1 : last_row]
        text = "\n".join(span)[first_col : len("\n".join(span)) - (len(span[-1]) - last_col)]
        name, paren, rest = text.partition("(")
        if not paren or not re.fullmatch(r"[A-Za-z_][\w.]*", name.strip()):
            raise SyntaxError(f"line {first_row}: {text!r} is not `name(parameters) [-> returns]`")
        definition = ast.parse(f"def _({rest}: pass").body[0]
        entries.append((name.strip(), definition.args, first_row))
    return entries


def documented_parameters(arguments: ast.arguments) -> list[tuple[str, inspect._ParameterKind, object]]:
    """`(name, kind, default)` per documented parameter: a literal default, `...` for an expression (a lambda),
    `inspect.Parameter.empty` for none."""
    def default(node: ast.expr | None):
        if node is None:
            return inspect.Parameter.empty
        try:
            return ast.literal_eval(node)
        except ValueError:
            return Ellipsis  # an expression (a lambda): only its presence is compared
    positional = arguments.posonlyargs + arguments.args
    defaults = [None] * (len(positional) - len(arguments.defaults)) + list(arguments.defaults)
    kinds = [inspect.Parameter.POSITIONAL_ONLY] * len(arguments.posonlyargs)
    kinds += [inspect.Parameter.POSITIONAL_OR_KEYWORD] * len(arguments.args)
    documented = [(arg.arg, kind, default(value)) for arg, kind, value in zip(positional, kinds, defaults)]
    if arguments.vararg:
        documented.append((arguments.vararg.arg, inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.empty))
    documented += [(arg.arg, inspect.Parameter.KEYWORD_ONLY, default(value))
                   for arg, value in zip(arguments.kwonlyargs, arguments.kw_defaults)]
    if arguments.kwarg:
        documented.append((arguments.kwarg.arg, inspect.Parameter.VAR_KEYWORD, inspect.Parameter.empty))
    return documented


def signature_problems(block: Block) -> list[str]:
    """Where a signature listing differs from the code: a name that does not resolve, or other parameters."""
    module = importlib.import_module(parse_marker(block.marker).module)
    try:
        entries = signature_entries(block.code)
    except SyntaxError as error:
        return [f"{block.where}: {error}"]
    problems = []
    for name, arguments, row in entries:
        where = f"{block.page}:{block.line + row}"
        target = module
        try:
            for part in name.split("."):
                target = getattr(target, part)
        except AttributeError:
            problems.append(f"{where}: {name} is not in {module.__name__}")
            continue
        actual = list(inspect.signature(target).parameters.values())
        documented = documented_parameters(arguments)
        if actual and actual[0].name in ("self", "cls") and not (documented and documented[0][0] == actual[0].name):
            actual = actual[1:]
        expected = [(parameter.name, parameter.kind, parameter.default) for parameter in actual]
        if [entry[:2] for entry in documented] != [entry[:2] for entry in expected] or not all(
            same_default(doc, real) for (_, _, doc), (_, _, real) in zip(documented, expected)
        ):
            problems.append(f"{where}: the listing documents {name}{format_parameters(documented)}, the code is "
                            f"{name}{inspect.signature(target)}")
    return problems


def same_default(documented: object, actual: object) -> bool:
    """A documented default matches: equal and of the same kind (1 is not True, 0.0 not None); `...` any default."""
    if documented is Ellipsis:
        return actual is not inspect.Parameter.empty
    if isinstance(documented, (bool, type(None))) or isinstance(actual, (bool, type(None))):
        return documented is actual
    return documented == actual and isinstance(documented, str) == isinstance(actual, str)


def format_parameters(parameters) -> str:
    parts, keyword_only = [], False
    for name, kind, default in parameters:
        if kind == inspect.Parameter.KEYWORD_ONLY and not keyword_only:
            parts.append("*")
        keyword_only = keyword_only or kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.VAR_POSITIONAL)
        prefix = {inspect.Parameter.VAR_POSITIONAL: "*", inspect.Parameter.VAR_KEYWORD: "**"}.get(kind, "")
        value = "" if default is inspect.Parameter.empty else "=..." if default is Ellipsis else f"={default!r}"
        parts.append(f"{prefix}{name}{value}")
    return f"({', '.join(parts)})"


# ----- running a page -------------------------------------------------------------------------------


def page_steps(page: str) -> list[dict]:
    """What the page runner does, in document order: Python and bash blocks to run, data samples to read."""
    steps = []
    for block in read_blocks(page)[0]:
        marker = parse_marker(block.marker) if block.marker else None
        if block.kind == "python" and marker is None:
            steps.append(dict(kind="python", line=block.line, code=block.code))
        elif block.kind in ("bash", "sh") and marker is None:
            steps.append(dict(kind="bash", line=block.line, code=block.code))
        elif marker is not None and marker.kind == "data":
            steps.append(dict(kind="data", line=block.line, code=block.code, saved_as=marker.saved_as,
                              loader=marker.loader))
    return steps


def link_checkout(directory: Path) -> None:
    """Make `directory` look like the checkout's root: its tracked top-level entries linked in, and shims of
    `python` and `nn-prune` (in `bin/` and `.venv/bin/`, which `make` would create) for this interpreter."""
    try:
        listed = subprocess.run(["git", "-C", str(ROOT), "ls-files"], capture_output=True, text=True, check=True)
        tracked = {line.split("/", 1)[0] for line in listed.stdout.splitlines() if line}
    except (OSError, subprocess.CalledProcessError):
        tracked = {path.name for path in ROOT.iterdir()}
    for name in sorted(tracked):
        if not name.startswith(".") and (ROOT / name).exists():
            (directory / name).symlink_to(ROOT / name)
    shims = {"python": 'exec "{python}" "$@"', "python3": 'exec "{python}" "$@"',
             "nn-prune": 'exec "{python}" -m nn_prune_ext.cli "$@"'}
    for folder in (directory / "bin", directory / ".venv" / "bin"):
        folder.mkdir(parents=True)
        for name, line in shims.items():
            (folder / name).write_text("#!/bin/sh\n" + line.format(python=sys.executable) + "\n")
            (folder / name).chmod(0o755)


def run_page(page: str, directory: Path) -> subprocess.CompletedProcess:
    """Run `page`'s blocks in a subprocess in `directory` (linked to look like the checkout's root)."""
    link_checkout(directory)
    spec = directory / ".docs-test-steps.json"
    spec.write_text(json.dumps(dict(page=page, steps=page_steps(page))))
    # One OpenMP thread, as the suite's other subprocesses: on shared cores, threads of several processes spin
    # against each other (a training step took 20 times longer with two).
    env = {**os.environ, "PATH": f"{directory / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
           "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "HF_HOME": str(directory / ".hf-home"),
           "MPLBACKEND": "Agg", "HF_DATASETS_DISABLE_PROGRESS_BARS": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(Path(__file__).resolve()), "--steps", str(spec)], cwd=directory,
                          env=env, capture_output=True, text=True, timeout=PAGE_TIMEOUT)


def execute_steps(spec_path: str) -> int:
    """The page runner (in the subprocess): run the steps of a page in order; 1 at the first that fails."""
    spec = json.loads(Path(spec_path).read_text())
    page, namespace = spec["page"], {"__name__": "__main__"}
    for step in spec["steps"]:
        where, started = f"{page}:{step['line']}", time.perf_counter()
        print(f"[docs-test] {where} ({step['kind']})", flush=True)
        try:
            if step["kind"] == "python":
                # Padded so that tracebacks name the page's own line numbers.
                exec(compile("\n" * step["line"] + step["code"], page, "exec"), namespace)
            elif step["kind"] == "bash":
                if subprocess.run(["bash", "-e", "-o", "pipefail", "-c", step["code"]]).returncode:
                    print(f"[docs-test] FAILED: the bash block at {where} exited with an error", flush=True)
                    return 1
            else:
                path = step["saved_as"] or os.path.join(tempfile.mkdtemp(), "sample")
                Path(path).write_text(step["code"], encoding="utf-8")
                module, _, function = step["loader"].rpartition(".")
                getattr(importlib.import_module(module), function)(path)
        except BaseException:  # noqa: BLE001 - report any failure with the block's place, then stop
            traceback.print_exc()
            print(f"[docs-test] FAILED: the {step['kind']} block at {where}", flush=True)
            return 1
        print(f"[docs-test] {where} done in {time.perf_counter() - started:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--steps"]:
        sys.exit(execute_steps(sys.argv[2]))
    with tempfile.TemporaryDirectory() as folder:
        result = run_page(sys.argv[1], Path(folder))
        print(result.stdout + result.stderr)
        sys.exit(result.returncode)


# ----- the tests ------------------------------------------------------------------------------------


@pytest.mark.parametrize("page", PAGES)
def test_every_fence_names_its_kind_and_every_marker_is_understood(page):
    blocks, problems = read_blocks(page)
    problems += [problem for block in blocks for problem in block_problems(block)]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("block", marked("covered"), ids=lambda block: block.where)
def test_a_block_too_long_to_run_here_is_run_by_the_test_it_names(block):
    problems = covered_problems(block)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("block", marked("not run"), ids=lambda block: block.where)
def test_only_install_and_test_suite_commands_go_unrun(block):
    problems = not_run_problems(block)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("block", marked("signatures"), ids=lambda block: block.where)
def test_signature_listings_match_the_code(block):
    problems = signature_problems(block)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("block", [block for block in all_blocks() if block.kind in ("json", "jsonl")],
                         ids=lambda block: block.where)
def test_json_samples_parse(block):
    if block.kind == "json":
        json.loads(block.code)
    else:
        for number, line in enumerate(block.code.splitlines(), start=block.line + 1):
            if line.strip():
                assert isinstance(json.loads(line), dict), f"{block.page}:{number} is not a JSON object"


@pytest.mark.parametrize("page", [page for page in PAGES if page_steps(page)])
def test_page_runs_as_written(page, tmp_path):
    blocks, problems = read_blocks(page)
    problems += [problem for block in blocks for problem in block_problems(block)]
    assert not problems, "the page is not run: " + "\n".join(problems)  # nothing unmarked installs or runs for minutes
    result = run_page(page, tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-8000:]
    ran = re.findall(r"^\[docs-test\] (\S+) \(", result.stdout, re.M)
    assert ran == [f"{page}:{step['line']}" for step in page_steps(page)], output[-8000:]
    # The pages' training runs are short on purpose, and say that they prune: SparseTrainer's warning would say not.
    assert "too short to prune" not in output, output[-8000:]


# ----- the checks themselves catch what they are for ------------------------------------------------


def test_unknown_fences_stray_markers_and_unknown_markers_are_named():
    text = "```\nx\n```\n<!-- docs-test: not run (install) -->\n\n```bash\nls\n```\n" \
           "<!-- docs-test: skip -->\n```python\npass\n```\n```jsonl\n{}\n```\n"
    blocks, problems = read_blocks("page.md", text)
    problems += [problem for block in blocks for problem in block_problems(block)]
    assert problems == [
        "page.md:4: a docs-test marker must stand on the line directly before a fence",
        "page.md:1: fence kind '' is none of python, bash, sh, text, json, jsonl: name the language of code to run, "
        "or text/json/jsonl for output and file formats",
        "page.md:10: unknown docs-test marker 'skip'; the forms are 'covered by tests/FILE.py::TEST[, ...]', "
        "'not run (REASON)' with REASON one of ['install', 'test suite'], 'signatures [of MODULE]', "
        "'[saved as NAME, ]read by MODULE.FUNCTION'",
        "page.md:13: a jsonl sample needs '<!-- docs-test: read by MODULE.FUNCTION -->', the code that reads the "
        "format",
    ]


def test_an_unmarked_block_may_not_install_or_run_for_minutes():
    code = ("nn-prune --help\npython -m nn_prune_ext.demo --help\npython analysis/plot_frontier.py r.jsonl\n"
            "make demo\npip install -e .\npython -m nn_prune_ext.demo --method movement\n"
            "accelerate launch --multi_gpu train.py\nmake demo ARGS=--help\n")
    problems = block_problems(Block("page.md", 3, "bash", code, None))
    assert [problem.split("`")[1] for problem in problems] == [
        "make demo", "pip install -e .", "python -m nn_prune_ext.demo --method movement",
        "accelerate launch --multi_gpu train.py", "make demo ARGS=--help",
    ]


COVERING_TESTS = """
import pytest
from nn_prune_ext.cli import main as nn_prune
from nn_prune_ext.demo import main

QUICK = ["--quick", "--batch_size", "16"]


@pytest.fixture
def quick_run(tmp_path):
    return main([*QUICK, "--output_dir", str(tmp_path)])


def test_demo(quick_run):
    assert quick_run.slim_flops < quick_run.dense_flops


def test_heal():
    nn_prune(["heal", "a", "b", "--data", "d", "--train-data", "t", "--flops-budget", "0.5"])


def test_heal_epochs_range():
    nn_prune(["heal", "a", "b", "--epochs", "0"])


def test_tools_lines():
    for line in open("/checkout/README.md").read().split("\\n## Tools\\n")[1].splitlines():
        nn_prune(line.split()[1:])
"""


def test_a_covering_test_must_exist_and_run_the_same_program_with_the_same_flags(tmp_path):
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_x.py").write_text(COVERING_TESTS)

    def problems(command: str, tests: str, heading: str = "") -> list[str]:
        return covered_problems(Block("page.md", 3, "bash", command + "\n", f"covered by {tests}", heading), tmp_path)

    demo = "tests/test_x.py::test_demo"
    assert problems("make demo", demo) == []  # the Makefile's recipe: python -m nn_prune_ext.demo
    assert problems('make demo ARGS="--batch_size 16"', demo) == []  # the fixture passes it (with --quick)
    assert problems('make demo ARGS="--method posttrain"', demo) == [
        "page.md:3: `make demo 'ARGS=--method posttrain'` (module:nn_prune_ext.demo) is run by none of "
        f"{demo} with --method: name tests that run that program with those flags"
    ]
    assert problems("nn-prune bench out/slim", demo) == [
        f"page.md:3: `nn-prune bench out/slim` (nn-prune:bench) is run by none of {demo}: name tests that run that "
        "program with those flags"
    ]
    # Tests of one program share the flags: the heal run, and the range check of --epochs.
    heal = "nn-prune heal a b --data d --train-data t --flops-budget 0.5 --epochs 1"
    assert problems(heal, "tests/test_x.py::test_heal, tests/test_x.py::test_heal_epochs_range") == []
    assert problems(heal, "tests/test_x.py::test_heal")[0].endswith("with --epochs: name tests that run that program "
                                                                    "with those flags")
    # A test that reads the block's own lines (it names the page and the section) runs them as written.
    tools = "nn-prune bench out/slim --repeats 5"
    assert problems(tools, "tests/test_x.py::test_tools_lines") != []
    tools_block = Block("README.md", 9, "bash", tools + "\n", "covered by tests/test_x.py::test_tools_lines", "Tools")
    assert covered_problems(tools_block, tmp_path) == []
    assert not reads_block(dataclasses.replace(tools_block, heading="Docs"), {"/checkout/README.md", "\n## Tools\n"})
    assert problems("make demo", "tests/test_x.py::test_no_such_test") == [
        "page.md:3: covered by tests/test_x.py::test_no_such_test, but tests/test_x.py has no test function "
        "'test_no_such_test'",
        "page.md:3: `make demo` (module:nn_prune_ext.demo) is run by none of the named tests: name tests that run that "
        "program with those flags",
    ]
    assert problems("make demo", "tests/test_y.py::test_demo")[0] == (
        "page.md:3: covered by tests/test_y.py::test_demo, but tests/test_y.py does not exist")


def test_only_install_and_test_suite_reasons_leave_a_block_unrun():
    def block(command: str, reason: str) -> Block:
        return Block("page.md", 3, "bash", command + "\n", f"not run ({reason})")

    assert not_run_problems(block("python -m venv .venv\n.venv/bin/pip install -e .", "install")) == []
    assert not_run_problems(block("make test", "test suite")) == []
    assert not_run_problems(block("make demo", "install")) == [
        "page.md:3: `make demo` (module:nn_prune_ext.demo) is not one of the 'install' commands: run it here, or mark "
        "the block 'covered by' a test that runs it"
    ]
    assert not_run_problems(block("nn-prune bench out/slim", "too slow"))[0].startswith(
        "page.md:3: 'not run (too slow)' is not an accepted reason")


def test_a_signature_listing_that_differs_from_the_code_is_named():
    from nn_prune_ext import optimize_model

    listing = ("optimize_model(model, mode='dense', *, inplace=False, verify=True)\n"
               "optimize_model(model, mode='sparse', *, inplace=False, verify=True)\n"
               "optimize_model(model, *, inplace=False)\nnot_a_name(x)\n")
    problems = signature_problems(Block("page.md", 3, "python", listing, "signatures"))
    code = f"optimize_model{inspect.signature(optimize_model)}"
    assert problems == [
        f"page.md:5: the listing documents optimize_model(model, mode='sparse', *, inplace=False, verify=True), the "
        f"code is {code}",
        f"page.md:6: the listing documents optimize_model(model, *, inplace=False), the code is {code}",
        "page.md:7: not_a_name is not in nn_prune_ext",
    ]
