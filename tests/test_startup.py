"""The start-up budget: the CLI's light path and the TUI never import torch & co."""

import json
import subprocess
import sys

HEAVY = ("torch", "transformers", "peft", "bitsandbytes", "datasets", "accelerate")

PROBE = """
import json, sys
{body}
print(json.dumps(sorted(m for m in {heavy!r} if m in sys.modules)))
"""


def _loaded_after(body: str) -> list[str]:
    code = PROBE.format(body=body, heavy=HEAVY)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_cli_help_imports_nothing_heavy():
    body = (
        "import io, contextlib\n"
        "from tuneterm.cli import main\n"
        "buf = io.StringIO()\n"
        "with contextlib.redirect_stdout(buf):\n"
        "    try:\n"
        "        main(['--help'])\n"
        "    except SystemExit as e:\n"
        "        assert e.code == 0\n"
        "assert 'chat' in buf.getvalue()\n"
    )
    assert _loaded_after(body) == []


def test_every_command_help_imports_nothing_heavy():
    body = (
        "import io, contextlib\n"
        "from tuneterm.cli import build_parser\n"
        "p = build_parser()\n"
        "names = [a for a in p._subparsers._group_actions[0].choices]\n"
        "for n in names:\n"
        "    with contextlib.redirect_stdout(io.StringIO()):\n"
        "        try:\n"
        "            p.parse_args([n, '--help'])\n"
        "        except SystemExit:\n"
        "            pass\n"
    )
    assert _loaded_after(body) == []


def test_tui_app_import_is_light():
    assert _loaded_after("import tuneterm.tui.app") == []


def test_console_script_help(run_cli):
    proc = run_cli("--help")
    assert proc.returncode == 0
    assert "exit codes" in proc.stdout
    assert "chat" in proc.stdout and "doctor" in proc.stdout
