"""`tuneterm serve job:ID`: a request may name the job by any form `job:ID` takes (full id, 4-digit
suffix, unique prefix), whichever form the server was started with; the banner names what each
model is (a quantized artifact is not "base"). Issue 15, the serve bullet under "Exit codes".
Real jobs from the real workers (tests/chat_jobs.py), the real openai client."""

from __future__ import annotations

import pytest

from chat_jobs import build


@pytest.fixture(scope="module")
def built(tiny_model_dir, tmp_path_factory):
    return build(tiny_model_dir, tmp_path_factory.mktemp("serve-jobs") / "ws")


def test_a_served_job_answers_to_its_full_id_its_suffix_and_a_prefix(built, tmp_workspace, capsys):
    import openai
    from openai import OpenAI

    from tuneterm.commands.serve import _describe
    from tuneterm.workers.server import make_server, serve_in_thread

    built.install(tmp_workspace)
    tuned_short, quant_full = f"job:{built.tuned[-4:]}", f"job:{built.quantized}"
    server = make_server([tuned_short, quant_full], port=0)
    serve_in_thread(server)
    try:
        _describe(server.variants, None, server.admission)
        banner = capsys.readouterr().out
        quant_line = next(line for line in banner.splitlines() if f"model: {quant_full}" in line)
        assert "(base)" not in quant_line and "int8-dynamic" in quant_line, banner
        assert f"model: {tuned_short}  (adapter over" in banner
        client = OpenAI(base_url=server.url, api_key="x", max_retries=0)
        asked = [f"job:{built.tuned}", tuned_short, f"job:{built.tuned[:-2]}",  # the LoRA job, three ways
                 quant_full, f"job:{built.quantized[-4:]}"]  # the quantize job, started by its full id
        for model in asked:
            reply = client.chat.completions.create(model=model, max_tokens=2, temperature=0,
                                                   messages=[{"role": "user", "content": "hi"}])
            assert reply.choices[0].message.content is not None, model
            assert client.models.retrieve(model).id in (tuned_short, quant_full), model
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(model="job:no-such-job", max_tokens=2,
                                           messages=[{"role": "user", "content": "hi"}])
    finally:
        server.shutdown()
        server.server_close()
