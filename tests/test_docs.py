"""The guide cannot drift: every command in README.md and docs/ composes or parses, every
link resolves, the Layout names every module, and the README stays a short guide."""

from __future__ import annotations

import importlib.util
import re
import shlex
import sys
from pathlib import Path

import pytest

from cheeger import compare
from cheeger.run.config_schema import validate_config
from tests.conftest import ROOT, compose

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
ENTRY_POINTS = {"train": "train", "eval": "eval", "predict": "predict", "dashboard": "dashboard"}
# Commands of other tools the docs show; only the repository files they name are checked.
FOREIGN = {"wandb", "export", "csEvalPixelLevelSemanticLabeling", "pip", "git", "cd", "sbatch"}
README_LIMIT = 12 * 1024


def _commands() -> list[tuple[str, list[str]]]:
    """(file:line, argv) of every command line of every bash block."""
    found = []
    for path in DOCS:
        text = path.read_text()
        for block in re.finditer(r"```(?:bash|sh|shell)\n(.*?)```", text, re.S):
            first_line = text[: block.start(1)].count("\n") + 1
            joined, start = "", 0
            for offset, line in enumerate(block.group(1).split("\n")):
                if not joined:
                    start = first_line + offset
                if line.rstrip().endswith("\\"):  # continued on the next line
                    joined += line.rstrip()[:-1] + " "
                    continue
                # <placeholders> stand for one word each.
                argv = shlex.split(re.sub(r"<[^>]*>", "PLACEHOLDER", joined + line), comments=True)
                if argv:
                    found.append((f"{path.relative_to(ROOT)}:{start}", argv))
                joined = ""
    return found


COMMANDS = _commands()


def _strip_env(argv: list[str]) -> list[str]:
    while argv and re.match(r"^[A-Z_][A-Z0-9_]*=", argv[0]):
        argv = argv[1:]
    return argv


def _split_sweep(value: str) -> list[str]:
    """``a,b,c`` -> its values; commas inside brackets, braces or quotes do not split."""
    parts, depth, current = [], 0, ""
    for char in value:
        depth += char in "[{("
        depth -= char in "]})"
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    return [*parts, current]


def _points(overrides: list[str], multirun: bool) -> list[list[str]]:
    """The job override lists of a command: without -m the overrides; with it, enough
    points that every swept value occurs in one."""
    if not multirun:
        return [overrides]
    swept = []
    for override in overrides:
        key, sep, value = override.partition("=")
        values = _split_sweep(value) if sep and not key.startswith("hydra.") else [value]
        swept.append([f"{key}{sep}{v}" if sep else key for v in values])
    width = max((len(v) for v in swept), default=1)
    return [[values[i % len(values)] for values in swept] for i in range(width)]


def _make_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    return set(re.findall(r"(?m)^([a-z][a-z0-9-]*):", text))


def _experiment_help(script: Path, capsys) -> str:
    spec = importlib.util.spec_from_file_location(f"doc_{script.stem}", script)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    with pytest.raises(SystemExit) as stop:
        module.main(["--help"])
    assert stop.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize(("where", "argv"), COMMANDS, ids=[w for w, _ in COMMANDS])
def test_every_documented_command_composes_or_parses(where, argv, tmp_path, capsys):
    argv = [a for a in _strip_env(argv) if a != "..."]
    program = argv[0]
    if program == "make":
        targets = [a for a in argv[1:] if "=" not in a]
        assert set(targets) <= _make_targets(), f"{where}: no make target {targets}"
        return
    if program in FOREIGN or not argv:
        for arg in argv:
            if arg.startswith(("sweeps/", "conf/", "experiments/")):
                assert (ROOT / arg).exists(), f"{where}: {arg} does not exist"
        return
    assert program in ("python", ".venv/bin/python"), f"{where}: unknown program {program}"
    if argv[1] == "-m":
        package, _, name = argv[2].partition(".")
        assert package == "cheeger", f"{where}: {argv[2]}"
        args = argv[3:]
        if name == "compare":
            parsed = compare.parser().parse_args(args)
            assert parsed.paths, where
            return
        assert name in ENTRY_POINTS, f"{where}: python -m {argv[2]} is no entry point"
        multirun = bool({"-m", "--multirun"} & set(args))
        overrides = [a for a in args if not a.startswith("-") and a != "job"]
        for i, point in enumerate(_points(overrides, multirun)):
            cfg = compose(ENTRY_POINTS[name], point, tmp_path / str(i))
            if name != "dashboard":
                validate_config(cfg)
        return
    script = ROOT / argv[1]
    assert script.is_file(), f"{where}: {argv[1]} does not exist"
    usage = _experiment_help(script, capsys)
    for flag in (a for a in argv[2:] if a.startswith("--")):
        option = flag.split("=", 1)[0]
        assert re.search(rf"{re.escape(option)}\b(?!-)", usage), f"{where}: no option {option}"


def test_the_docs_hold_commands_of_every_entry_point():
    shown = {" ".join(argv[:3]) for _, argv in COMMANDS}
    for name in (*ENTRY_POINTS, "compare"):
        assert f"python -m cheeger.{name}" in shown, name


def _anchors(path: Path) -> set[str]:
    titles = re.findall(r"(?m)^#+ (.+)$", path.read_text())
    return {re.sub(r"[^\w\- ]", "", t.strip().lower()).replace(" ", "-") for t in titles}


@pytest.mark.parametrize("path", DOCS, ids=[p.name for p in DOCS])
def test_every_relative_link_and_anchor_resolves(path):
    for target in re.findall(r"\]\(([^)\s]+)\)", path.read_text()):
        if re.match(r"[a-z]+://", target):
            continue
        file, _, anchor = target.partition("#")
        destination = (path.parent / file).resolve() if file else path
        assert destination.exists(), f"{path.name}: link to {target} (no such file)"
        if anchor:
            assert anchor in _anchors(destination), f"{path.name}: no #{anchor} in {file}"


def test_readme_is_a_short_guide_linking_every_doc():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.encode()) <= README_LIMIT, len(readme.encode())
    for doc in DOCS[1:]:
        assert f"(docs/{doc.name})" in readme, doc.name


def test_layout_names_every_module_of_the_package():
    text = (ROOT / "docs" / "development.md").read_text()
    layout = text.split("## Layout", 1)[1].split("```")[1]
    words = set(re.findall(r"[\w.]+/?", layout))
    package = ROOT / "cheeger"
    for path in package.rglob("*.py"):
        if path.name == "__init__.py" or "__pycache__" in path.parts:
            continue
        assert path.name in words, f"docs/development.md Layout does not name {path}"
    for directory in (d for d in package.iterdir() if d.is_dir() and d.name != "__pycache__"):
        assert f"{directory.name}/" in words, directory
    for word in (w for w in words if w.endswith(".py")):
        assert list(package.rglob(word)), f"Layout names {word}, which does not exist"
