"""What ships inside the package (tuneterm/data) and how a user's own folders win over it: the README's
`evals/...` and `sample_data/...` paths work from any directory, and a `./evals` of the user's own is
the one the workbench lists and the commands read (issue 15, item 1). The wheel itself:
tests/test_wheel_install.py."""

from __future__ import annotations

from pathlib import Path

from tuneterm.core import resources


def test_the_builtin_folders_live_inside_the_package():
    package = Path(resources.__file__).resolve().parents[1]
    for folder in (resources.recipes_dir(), resources.evals_dir(), resources.metrics_dir(),
                   resources.sample_data_dir()):
        assert folder.resolve().is_relative_to(package) and folder.is_dir(), folder
    assert (resources.recipes_dir() / "lora.toml").is_file()
    assert (resources.metrics_dir() / "exact_match").is_dir()
    assert (resources.evals_dir() / "tickets").is_dir()


def test_readme_paths_fall_back_to_the_builtin_copy_and_a_users_own_folder_wins(tmp_path, monkeypatch):
    from tuneterm.core.evals.views import default_evals_dir

    monkeypatch.chdir(tmp_path)
    assert resources.builtin_fallback(Path("evals/tickets")) == resources.evals_dir() / "tickets"
    assert resources.builtin_fallback(Path("sample_data/broken/broken.jsonl")).is_file()
    assert resources.builtin_fallback(Path("evals/no-such-suite")) == Path("evals/no-such-suite")
    assert resources.builtin_fallback(Path("mine/tickets")) == Path("mine/tickets")
    assert default_evals_dir() == resources.evals_dir()

    (tmp_path / "evals" / "tickets").mkdir(parents=True)  # the user's own suite of the same name
    assert resources.builtin_fallback(Path("evals/tickets")) == Path("evals/tickets")
    assert default_evals_dir() == tmp_path / "evals"
