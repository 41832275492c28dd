"""lm-evaluation-harness's `local-completions` model against `tuneterm serve` (issue 25 item 3):
its log-likelihoods of continuations equal the model's own (within 1e-4), and its answer to a
multiple-choice item is the model's. Skipped when lm_eval is not installed (it installs with
`pip install --no-deps lm_eval` beside the project's packages)."""

from __future__ import annotations

import pytest

pytest.importorskip("tenacity", reason="lm_eval's API models need tenacity")
pytest.importorskip("lm_eval.models.openai_completions", reason="lm_eval is not installed")

ITEMS = [("The capital of France is", [" Paris", " London", " a dog"]),
         ("Two plus two equals", [" four", " five"])]


def test_local_completions_loglikelihoods_match_the_model(tiny_model_dir):
    import torch
    from lm_eval.api.instance import Instance
    from lm_eval.models.openai_completions import LocalCompletionsAPI
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tuneterm.workers.serve import make_server, serve_in_thread

    srv = make_server([str(tiny_model_dir)], port=0)
    serve_in_thread(srv)
    try:
        lm = LocalCompletionsAPI(model=str(tiny_model_dir), base_url=f"{srv.url}/completions",
                                 tokenizer_backend="huggingface", tokenizer=str(tiny_model_dir), max_retries=1,
                                 num_concurrent=1, batch_size=2)
        requests = [Instance("loglikelihood", doc={}, arguments=(ctx, cont), idx=i)
                    for ctx, conts in ITEMS for i, cont in enumerate(conts)]
        got = lm.loglikelihood(requests, disable_tqdm=True)
    finally:
        srv.shutdown()
        srv.server_close()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    expected = []
    for ctx, conts in ITEMS:
        for cont in conts:
            ctx_ids = tokenizer(ctx)["input_ids"]
            cont_ids = tokenizer(ctx + cont)["input_ids"][len(ctx_ids):]
            with torch.inference_mode():
                lp = torch.log_softmax(model(input_ids=torch.tensor([ctx_ids + cont_ids])).logits[0].float(), -1)
            expected.append(sum(float(lp[len(ctx_ids) - 1 + i, t]) for i, t in enumerate(cont_ids)))
    assert [ll for ll, _ in got] == pytest.approx(expected, abs=1e-4)
    offset = 0
    for _, conts in ITEMS:  # the multiple-choice answer: the most likely continuation, on both sides
        scores = [ll for ll, _ in got[offset:offset + len(conts)]]
        assert scores.index(max(scores)) == expected[offset:offset + len(conts)].index(max(expected[offset:offset + len(conts)]))
        offset += len(conts)
