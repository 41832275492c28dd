"""``hf:ORG/NAME/FILE.gguf`` references: resolved from the local Hugging Face cache only (a fake cache
laid out as huggingface_hub lays it out, found through HF_HUB_CACHE), never downloaded."""

from __future__ import annotations

import os
import shutil

import pytest

from tuneterm.core import modelref
from tuneterm.core.errors import InputError, ModelNotFoundError

COMMIT = "0123456789abcdef0123456789abcdef01234567"
OLDER = "fedcba9876543210fedcba9876543210fedcba98"


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    """A hub cache holding Org/Tiny-GGUF at two commits; ``main`` points at COMMIT. As huggingface_hub
    does, snapshot files are symlinks into blobs/."""
    cache = tmp_path / "hub"
    repo = cache / "models--Org--Tiny-GGUF"
    (repo / "blobs").mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    source = modelref.embedded_gguf_path()
    for commit, blob in ((COMMIT, "aaaa"), (OLDER, "bbbb")):
        shutil.copyfile(source, repo / "blobs" / blob)
        snap = repo / "snapshots" / commit
        (snap / "sub").mkdir(parents=True)
        os.symlink(f"../../blobs/{blob}", snap / "tiny-Q4_1.gguf")
        os.symlink(f"../../../blobs/{blob}", snap / "sub" / "tiny-Q4_1.gguf")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    return cache


def test_a_cached_gguf_file_is_a_gguf_reference(hf_cache):
    ref = modelref.parse("hf:Org/Tiny-GGUF/tiny-Q4_1.gguf")
    assert ref.kind == "gguf" and ref.raw == "hf:Org/Tiny-GGUF/tiny-Q4_1.gguf"
    assert ref.target == str(hf_cache / "models--Org--Tiny-GGUF" / "snapshots" / COMMIT / "tiny-Q4_1.gguf")
    assert os.path.getsize(ref.target) == modelref.embedded_gguf_path().stat().st_size  # the symlink resolves
    assert modelref.parse("hf:Org/Tiny-GGUF/sub/tiny-Q4_1.gguf").target.endswith(f"{COMMIT}/sub/tiny-Q4_1.gguf")
    assert OLDER in modelref.parse(f"hf:Org/Tiny-GGUF/tiny-Q4_1.gguf@{OLDER}").target


def test_a_named_revision_is_read_from_the_caches_refs(hf_cache):
    (hf_cache / "models--Org--Tiny-GGUF" / "refs" / "v1").write_text(OLDER)
    assert OLDER in modelref.parse("hf:Org/Tiny-GGUF/tiny-Q4_1.gguf@v1").target


def test_a_missing_file_says_how_to_download_it_and_nothing_is_fetched(hf_cache):
    with pytest.raises(ModelNotFoundError) as info:  # the network is blocked in tests: a download would fail loudly
        modelref.parse("hf:Org/Tiny-GGUF/tiny-Q8_0.gguf")
    text = info.value.render()
    assert "not in the local Hugging Face cache" in text
    assert "huggingface-cli download Org/Tiny-GGUF tiny-Q8_0.gguf" in text and str(hf_cache) in text
    with pytest.raises(ModelNotFoundError) as info:
        modelref.parse("hf:Other/Repo/model.gguf@v2")
    assert "--revision v2" in info.value.render()


@pytest.mark.parametrize("bad", ["hf:Org/x.gguf", "hf:Org/Repo/../../etc/x.gguf", "hf:/Repo/x.gguf"])
def test_a_malformed_gguf_reference_is_refused(hf_cache, bad):
    with pytest.raises(InputError) as info:
        modelref.parse(bad)
    assert "hf:ORG/NAME/FILE.gguf" in info.value.render()


def test_the_cache_is_found_as_huggingface_hub_finds_it(tmp_path, monkeypatch):
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    assert modelref.hf_cache_dir() == tmp_path / "home" / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "direct"))
    assert modelref.hf_cache_dir() == tmp_path / "direct"


def test_an_hf_gguf_reference_runs_where_a_gguf_path_runs(hf_cache):
    from tuneterm.workers import llamacpp

    path = llamacpp.engine_file("hf:Org/Tiny-GGUF/tiny-Q4_1.gguf")
    assert path is not None and path.name == "tiny-Q4_1.gguf" and COMMIT in str(path)
