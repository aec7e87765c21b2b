"""The README and the guides in docs/: the site builds with no broken link, its reference tables list every
key the code defines, no timing is written outside RESULTS.md, and every command in a ``bash`` block runs as
written.

Commands run in order, page after page (the README, then the site's navigation), in one folder, so a page's
later commands read its earlier ones' outputs. ``adapterxfer`` commands run in this process (one import of
the training stack for all) on the suite's fixture corpus, with ``ADAPTERXFER_BACKBONE=tiny-xlmr`` as the
default backbone; a command whose comment starts with ``needs`` (the Hub, a GPU, XTREME data, PyPI), ``a
long run`` or ``after`` is parsed and validated only, as the docs' conventions say.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from adapterxfer import cli
from adapterxfer.config import FIELDS, load_config
from adapterxfer.study import plan as plans
from adapterxfer.tasks import get_task

REPO = Path(__file__).resolve().parents[1]
VALIDATE_ONLY = re.compile(r"^(needs\b|a long run\b|after\b)")
TIMING = re.compile(r"\b\d+(\.\d+)?\s*(ms|s|sec|seconds?|min|minutes?|h|hours?)\b(?![-\w])")


def pages() -> list[Path]:
    """The README, then every page of the site in its navigation's order."""
    nav = yaml.safe_load((REPO / "mkdocs.yml").read_text())["nav"]

    def flatten(items):
        for item in items:
            value = next(iter(item.values())) if isinstance(item, dict) else item
            yield from flatten(value) if isinstance(value, list) else [value]

    return [REPO / "README.md", *(REPO / "docs" / page for page in flatten(nav))]


def blocks(page: Path, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", page.read_text(), flags=re.S | re.M)


def commands(page: Path) -> list[tuple[str, str]]:
    """(command, its comment) of every line of the page's bash blocks."""
    found = []
    for block in blocks(page, "bash"):
        for line in block.splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                command, _, comment = line.partition(" #")
                found.append((command.strip(), comment.strip()))
    return found


def test_the_site_builds_with_no_broken_link_and_its_tables_list_every_key(tmp_path):
    build = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(tmp_path / "site")],
                           cwd=REPO, capture_output=True, text=True, env={"NO_MKDOCS_2_WARNING": "1",
                                                                           "PATH": str(Path(sys.executable).parent)})
    assert build.returncode == 0, build.stderr
    train_keys = (tmp_path / "site" / "reference" / "train-keys" / "index.html").read_text()
    for name, spec in FIELDS.items():
        assert f"<code>{name}</code>" in train_keys, name
        assert _html(spec.metadata["help"]) in train_keys, name
    plan_keys = (tmp_path / "site" / "reference" / "plan-keys" / "index.html").read_text()
    for name, (_, _, help_text) in plans.KEYS.items():
        assert f"<code>{name}</code>" in plan_keys and _html(help_text) in plan_keys, name


def _html(text: str) -> str:
    """Help text as the page shows it: its `code` spans as <code>, <, > and & escaped."""
    escaped = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return re.sub(r"`([^`]*)`", r"<code>\1</code>", escaped)


def test_the_readmes_links_lead_to_files_of_the_repository():
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", (REPO / "README.md").read_text())
    assert links
    for link in links:
        assert (REPO / link).is_file(), link


def test_no_timing_is_written_outside_results():
    for page in pages():
        if page.name == "results.md":
            continue
        text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)  # commands and outputs may name steps
        assert not [match.group(0) for match in TIMING.finditer(text)], page


@pytest.mark.slow
def test_every_command_in_the_readme_and_the_docs_runs_as_written(tmp_path, monkeypatch, capsys):
    """... and the README's example output (me5-small's) has the table its quickstart prints."""
    shown = next(block for block in blocks(REPO / "README.md", "text") if "zero-shot scores:" in block)
    for name in ("configs", "tests"):
        (tmp_path / name).symlink_to(REPO / name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ADAPTERXFER_BACKBONE", "tiny-xlmr")
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}:{__import__('os').environ['PATH']}")
    ran, printed = 0, ""
    for page in pages():
        for command, comment in commands(page):
            words = shlex.split(command)
            with monkeypatch.context() as scoped:
                while "=" in words[0] and not words[0].startswith("-"):
                    scoped.setenv(*words.pop(0).split("=", 1))
                validate_only = bool(VALIDATE_ONLY.match(comment))
                _run(words, validate_only, f"{page.name}: {command}", capsys)
            ran += not validate_only
            out = capsys.readouterr().out
            if page.name == "README.md" and "zero-shot scores:" in out and not printed:
                printed = out[out.index("English dev"):]
    assert ran >= 20
    assert _skeleton(printed) == _skeleton(shown)


def _skeleton(text: str) -> list[str]:
    return [re.sub(r"\d+\.\d+", "#", line).rstrip() for line in text.strip().splitlines()]


def _run(words: list[str], validate_only: bool, where: str, capsys) -> None:
    program, args = words[0], words[1:]
    if program == "adapterxfer":
        if validate_only:
            _validate(args, where)
        else:
            assert cli.main(args) == 0, f"{where}: {capsys.readouterr().err}"
    elif program == "make":
        assert subprocess.run(["make", "-n", *args], cwd=REPO, capture_output=True).returncode == 0, where
    elif program == "source":
        assert (REPO / args[0]).is_file(), where
    elif program == "pip" and validate_only:
        _validate_install(args, where)
    else:
        assert program == "export" and args[0].startswith("PATH="), f"{where}: a command the docs test does not know"


def _validate(args: list[str], where: str) -> None:
    """Parse as the CLI does, then check what can be checked without running: keys, tasks, languages, plans."""
    try:
        parsed = cli.build_parser().parse_args(["train", *cli._as_pairs(args[1:])] if args[0] == "train" else args)
    except SystemExit:
        pytest.fail(f"{where}: does not parse")
    if parsed.verb == "train":
        recipe = parsed.args[0] if parsed.args and "=" not in parsed.args[0] else None
        config = load_config(recipe, parsed.args[1:] if recipe else parsed.args)
        tasks = [get_task(name) for name in config.task.split("+")]
        tasks[0].check_langs(config.eval_langs)
    elif parsed.verb == "study" and parsed.action in ("run", "confirm", "status", "report"):
        plans.load_plan(parsed.plan, parsed.smoke, parsed.backbone)
    elif parsed.verb in ("evaluate", "select"):
        for name in (parsed.task if parsed.verb == "evaluate" else parsed.target).split(","):
            get_task(name)


def _validate_install(args: list[str], where: str) -> None:
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert args[0] == "install", where
    target = args[1]
    if not target.startswith("torch"):
        assert target.startswith("."), where
        wanted = re.findall(r"\[(.*)\]", target)
        assert not wanted or set(wanted[0].split(",")) <= set(extras), f"{where}: no such extra"
