"""docs/cli.md is what scripts/gen_cli_docs.py writes from the argument parser today."""

from __future__ import annotations

import importlib.util

from tests.docs_commands import REPO


def _generator():
    spec = importlib.util.spec_from_file_location("gen_cli_docs", REPO / "scripts" / "gen_cli_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_cli_reference_matches_the_parser(monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)
    expected = _generator().render()
    actual = (REPO / "docs" / "cli.md").read_text()
    assert actual == expected, "docs/cli.md is out of date: run .venv/bin/python scripts/gen_cli_docs.py"


def test_the_reference_names_every_subcommand():
    from tuneterm.cli import build_parser

    text = (REPO / "docs" / "cli.md").read_text()
    gen = _generator()
    for name, sub in gen._subcommands(build_parser()):
        assert f"## `tuneterm {name}`" in text
        for child, _ in gen._subcommands(sub):
            assert f"## `tuneterm {name} {child}`" in text
