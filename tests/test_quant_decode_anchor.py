"""benchmarks/quant_decode.py measures its llama.cpp anchor in a process of its own: no torch in it and
none of tuneterm's OpenMP settings (inside the torch process the same file decoded at about a quarter of
llama.cpp's own speed, which made "1.05x llama.cpp" mean 0.25x). Issue 15, item 9. Runs the benchmark's
own anchor code on the embedded Q4_1 file, 4 tokens."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

BENCH = REPO / "benchmarks" / "quant_decode.py"

# the anchor mode of the benchmark, run as `python benchmarks/quant_decode.py --llamacpp-alone FILE`
# would run it, then what that process had loaded and set
PROBE = ("import json, os, runpy, sys\n"
         "sys.argv = [sys.argv[1], '--llamacpp-alone', sys.argv[2], '--tokens', '4', '--prompts', '[\"Hi\", \"Hello\"]']\n"
         "try:\n    runpy.run_path(sys.argv[0], run_name='__main__')\nexcept SystemExit as stop:\n    code = stop.code\n"
         "print(json.dumps({'code': code, 'torch': 'torch' in sys.modules, "
         "'omp': os.environ.get('OMP_WAIT_POLICY'), 'tuneterm_omp': os.environ.get('TUNETERM_OMP_DEFAULTED')}))\n")


def test_the_llama_cpp_anchor_runs_without_torch_or_tuneterm_thread_settings(monkeypatch):
    pytest.importorskip("llama_cpp")
    from tuneterm.core import modelref

    gguf = modelref.embedded_gguf_path()
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")  # what a tuneterm process sets for itself
    monkeypatch.setenv("TUNETERM_OMP_DEFAULTED", "1")
    import quant_decode

    captured = {}
    real_run = subprocess.run

    def fake_run(cmd, **kw):  # run the benchmark's own child command, with the probe around it
        captured["env"] = kw["env"]
        assert cmd[:3] == [sys.executable, quant_decode.__file__, "--llamacpp-alone"]
        done = real_run([sys.executable, "-c", PROBE, cmd[1], cmd[3]], capture_output=True, text=True,
                              env=kw["env"], timeout=300)
        lines = done.stdout.strip().splitlines()
        captured["probe"] = json.loads(lines[-1])
        return subprocess.CompletedProcess(cmd, 0, "\n".join(lines[:-1]), done.stderr)

    monkeypatch.setattr(subprocess, "run", fake_run)
    tok_s = quant_decode.llama_cpp_alone(gguf, ["Hi", "Hello"], 4, user_policy=None)
    probe = captured["probe"]
    assert probe["code"] == 0 and not probe["torch"], probe  # no torch in the anchor's process
    assert probe["omp"] is None and probe["tuneterm_omp"] is None, probe  # no tuneterm thread setting
    assert tok_s and tok_s > 0
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"  # the benchmark's own process keeps its setting
