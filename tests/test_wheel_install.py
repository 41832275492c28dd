"""The package as users install it: a wheel in a fresh virtual environment (no editable install, no
checkout on sys.path; dependencies from the project's venv through a .pth line, so no network),
and README's "A first session" run from another directory."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tests.conftest import OFFLINE_ENV, REPO, SHARED_MODELS
from tests.docs_commands import section_commands


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("wheel")
    src = work / "src"
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO,
                           capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, files):
        source, target = REPO / name, src / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            target.symlink_to(os.readlink(source))
        elif source.is_file():
            shutil.copy2(source, target)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                    "-q", "-w", str(work / "dist"), str(src)], check=True)
    wheel = next((work / "dist").glob("tuneterm-*.whl"))
    env_dir = work / "venv"
    subprocess.run([getattr(sys, "_base_executable", sys.executable), "-m", "venv", "--without-pip",
                    str(env_dir)], check=True)
    purelib = subprocess.run([str(env_dir / "bin" / "python"), "-c",
                              "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    # the dependencies: the project's site-packages as a plain path (its .pth files, the editable
    # install of the checkout among them, are not processed)
    Path(purelib, "project-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(env_dir / "bin" / "python"), "install",
                    "--no-deps", "--no-index", "--ignore-installed", "-q", str(wheel)], check=True)
    return env_dir


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TUNETERM_EXTRA_KINDS")}
    env.update(OFFLINE_ENV, TUNETERM_HOME=str(home / "ws"), TUNETERM_CONFIG=str(home / "config.toml"),
               TUNETERM_MODELS_DIR=str(SHARED_MODELS))
    return env


def _first_session() -> list[tuple[str, int]]:
    """README's "A first session": each command with the exit code the README gives it."""
    steps = section_commands(REPO / "README.md", "A first session")
    assert steps, "README.md has no console block under '## A first session'"
    return [(step.command, step.expected_exit) for step in steps]


def test_the_wheel_runs_from_another_directory_without_the_checkout(venv, tmp_path):
    python = venv / "bin" / "python"
    where = subprocess.run([str(python), "-c", "import json, sys, tuneterm; print(tuneterm.__file__); "
                            "print(json.dumps(sys.path))"],
                           cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True, check=True)
    module_file = Path(where.stdout.splitlines()[0])
    assert module_file.is_relative_to(venv)
    paths = [Path(p).resolve() for p in json.loads(where.stdout.splitlines()[1]) if p]
    assert REPO.resolve() not in paths
    (tmp_path / ".venv").symlink_to(venv)  # the README's `.venv/bin/tuneterm` is the installed wheel
    steps = [(line, code) for line, code in _first_session()
             if re.search(r"tuneterm (setup|data ls|data validate|cost)\b", line)]
    steps += [(".venv/bin/tuneterm train --model smollm2-135m-instruct --data tickets --method lora --dry-run", 0),
              (".venv/bin/tuneterm eval evals/tickets --models smollm2-135m-instruct --check", 0)]
    assert len(steps) == 6
    assert [code for _, code in steps] == [0, 0, 1, 0, 0, 0]  # validation finds the problems the file was made with
    for step, expected in steps:
        done = subprocess.run(["bash", "-c", step], cwd=tmp_path,
                              env=_env(tmp_path), capture_output=True, text=True)
        assert done.returncode == expected, f"{step}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"


@pytest.mark.slow
def test_the_readme_first_session_from_an_installed_wheel(venv, tmp_path):
    """Every step exits 0 (the LoRA run takes ~8 min on 2 cores). `job:ID` / `job:ID2` are the LoRA
    and quantize jobs, which is what the README's placeholders stand for."""
    (tmp_path / ".venv").symlink_to(venv)
    env = _env(tmp_path)
    ids: list[str] = []
    for step, expected in _first_session():
        if ids:
            step = step.replace("job:ID2", f"job:{ids[-1]}").replace("job:ID,", f"job:{ids[0]},")
        done = subprocess.run(["bash", "-c", step], cwd=tmp_path, env=env, capture_output=True, text=True)
        assert done.returncode == expected, f"{step}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
        if " chat --compare " in step:  # the session ends in the scored side-by-side chat
            lines = done.stdout.splitlines()
            titles = [i for i, line in enumerate(lines) if line.startswith("── ")]
            assert len(titles) == 3, done.stdout  # base, tuned, quantized
            for i in titles:  # each title with its score from the eval just run
                assert re.match(r"^   \d+\.\d \[.*\] \S+ · tickets", lines[i + 1]), done.stdout
            assert all("Δ" in lines[i + 1] for i in titles[1:]), done.stdout  # paired against the base
        listing = subprocess.run([str(venv / "bin" / "tuneterm"), "jobs", "ls", "--json"], cwd=tmp_path,
                                 env=env, capture_output=True, text=True)
        if listing.returncode == 0 and listing.stdout.strip().startswith("["):
            ids = [j.get("id") for j in sorted(json.loads(listing.stdout), key=lambda j: j.get("created_at", ""))]
