import subprocess
import sys

import pytest

from tuneterm.core import db
from tuneterm.core.workspace import workspace


def test_import_creates_nothing(tmp_path):
    home = tmp_path / "fresh"
    code = "import tuneterm, tuneterm.cli, tuneterm.core.db, tuneterm.core.workspace, tuneterm.core.modelref"
    env = {"TUNETERM_HOME": str(home), "PATH": "/usr/bin:/bin"}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)
    assert not home.exists()


def test_workspace_layout_and_migrations(tmp_workspace):
    ws = workspace()
    for sub in ("datasets", "models", "jobs", "evals"):
        assert (ws.root / sub).is_dir()
    with db.connect() as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == db.SCHEMA_VERSION
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"datasets", "openai_jobs", "conversations", "eval_runs"} <= tables


def test_newer_schema_is_refused(tmp_workspace):
    ws = workspace()
    with db.connect():
        pass
    import sqlite3

    conn = sqlite3.connect(ws.db_path)
    conn.execute(f"PRAGMA user_version = {db.SCHEMA_VERSION + 5}")
    conn.close()
    from tuneterm.core.errors import RuntimeFailure

    with pytest.raises(RuntimeFailure, match="newer"):
        with db.connect():
            pass


def test_failed_transaction_rolls_back(tmp_workspace):
    with pytest.raises(ZeroDivisionError):
        with db.connect() as conn:
            conn.execute(
                "INSERT INTO eval_runs VALUES ('r1', 's', '[]', '/tmp', 'running', 'now')"
            )
            1 / 0
    with db.connect() as conn:
        assert conn.execute("SELECT count(*) FROM eval_runs").fetchone()[0] == 0


WRITER = """
import sys
from tuneterm.core import db
tag = sys.argv[1]
for i in range(150):
    with db.connect() as conn:
        conn.execute("INSERT INTO eval_runs VALUES (?, 's', '[]', '/tmp', 'ok', 'now')", (f"{tag}-{i}",))
"""


def test_two_processes_write_concurrently(tmp_workspace):
    with db.connect():
        pass  # migrate once
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, tag]) for tag in ("a", "b")]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    with db.connect() as conn:
        assert conn.execute("SELECT count(*) FROM eval_runs").fetchone()[0] == 300
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_two_processes_migrate_a_fresh_db(tmp_workspace):
    code = "from tuneterm.core import db\nwith db.connect() as c: pass\n"
    procs = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(3)]
    assert [p.wait(timeout=60) for p in procs] == [0, 0, 0]
    with db.connect() as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == db.SCHEMA_VERSION


def test_settings_file_and_env(tmp_path, monkeypatch):
    from tuneterm.core.settings import get_settings

    cfg = tmp_path / "config.toml"
    cfg.write_text('default_model = "hf:Org/Name"\njob_poll_seconds = 2.5\n')
    monkeypatch.setenv("TUNETERM_CONFIG", str(cfg))
    s = get_settings(fresh=True)
    assert s.default_model == "hf:Org/Name" and s.job_poll_seconds == 2.5
    monkeypatch.setenv("TUNETERM_JOB_POLL_SECONDS", "4")
    assert get_settings(fresh=True).job_poll_seconds == 4.0


def test_bad_settings_file_is_a_clear_error(tmp_path, monkeypatch, run_cli):
    cfg = tmp_path / "config.toml"
    cfg.write_text("this is = = not toml")
    monkeypatch.setenv("TUNETERM_CONFIG", str(cfg))
    monkeypatch.delenv("TUNETERM_HOME")
    proc = run_cli("doctor", "--json")
    code, err = proc.returncode, proc.stderr
    assert code == 2
    assert "not valid TOML" in err and str(cfg) in err
    assert "Traceback" not in err
