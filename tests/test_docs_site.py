"""The docs site builds with `mkdocs build --strict` (broken links and missing pages fail), README's
links point at files that exist, and every page's ``console`` blocks follow the convention that
tests/test_docs_commands.py runs them by."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys

import pytest

from tests.docs_commands import REPO, DocsFormatError, console_blocks_without_commands, console_commands, pages

LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def test_the_docs_site_builds_strict(tmp_path):
    # not skipped when missing: mkdocs is in the dev extra, which `make install` and CI install
    assert importlib.util.find_spec("mkdocs"), "mkdocs is missing: pip install -e '.[dev]' (or pip install mkdocs)"
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "-d", str(tmp_path / "site")],
                          cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "site" / "cli" / "index.html").exists()


def _links(text: str) -> list[tuple[int, str]]:
    found = []
    fence = False
    for number, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("```"):
            fence = not fence
        if not fence:
            found += [(number, target) for target in LINK.findall(line.replace("``", ""))]
    return found


def test_readme_links_point_at_files_that_exist():
    text = (REPO / "README.md").read_text()
    links = _links(text)
    assert any(target.startswith("docs/") for _, target in links)
    broken = []
    for number, target in links:
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        path = target.split("#", 1)[0]
        if not (REPO / path).exists():
            broken.append(f"README.md:{number}: {target}")
    assert not broken, "\n".join(broken)


def test_every_console_block_follows_the_convention():
    problems = []
    for page in pages():
        name = page.relative_to(REPO)
        try:
            console_commands(page)
        except DocsFormatError as err:
            problems.append(str(err))
        problems += [f"{name}:{line}: a console block with no `$ ` command (tag it text)"
                     for line in console_blocks_without_commands(page)]
    assert not problems, "\n".join(problems)


def test_readme_first_session_is_a_console_block_the_wheel_test_walks():
    from tests.docs_commands import section_commands

    steps = section_commands(REPO / "README.md", "A first session")
    assert steps and all(s.command.startswith(".venv/bin/tuneterm ") for s in steps)
    assert [s.expected_exit for s in steps if "data validate" in s.command] == [1]


def test_the_extraction_reads_continuations_and_exit_codes(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# T\n\n```console\n$ tuneterm data validate x \\\n    --json\nsome output\n$ echo $?\n1\n"
                    "$ tuneterm data ls\n```\n\n```text\n$ tuneterm web\n```\n")
    commands = console_commands(page)
    assert [(c.line, c.command, c.expected_exit) for c in commands] == [
        (4, "tuneterm data validate x --json", 1), (9, "tuneterm data ls", 0)]
    assert commands[0].where().endswith("page.md:4 (T): $ tuneterm data validate x --json")
    page.write_text("```console\n$ tuneterm data ls\n$ echo $?\nzero\n```\n")
    with pytest.raises(DocsFormatError, match=r"page.md:4: expected the exit code"):
        console_commands(page)


def test_commands_shown_but_not_run_still_parse(capsys):
    """The ```text examples (they need a GPU, the network or minutes) use options that exist."""
    import shlex

    from tests.docs_commands import shown_commands
    from tuneterm.cli import build_parser, parse_command_line

    parser = build_parser()
    checked, problems = 0, []
    for page in pages():
        for command in shown_commands(page):
            checked += 1
            try:
                parse_command_line(parser, shlex.split(command.command, comments=True)[1:])
            except ValueError as err:
                problems.append(f"{command.where()}\n  {err}")
            except SystemExit as stop:
                if stop.code:
                    problems.append(f"{command.where()}\n  {capsys.readouterr().err.strip().splitlines()[-1]}")
    assert checked > 20
    assert not problems, "\n".join(problems)
