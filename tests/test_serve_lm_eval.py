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


def _mc_task(tmp_path, n=12):
    """The shipped general_mc items (first n) as a tuneterm task and as an lm-eval task over the same file."""
    import json
    from pathlib import Path

    src = Path(__file__).resolve().parents[1] / "evals" / "general_mc" / "items.jsonl"
    rows = [json.loads(line) for line in src.read_text().splitlines() if line.strip()][:n]
    data = tmp_path / "items.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "mc.yaml").write_text(
        "name: mc\nversion: 1\ntype: choice\ndata: {path: items.jsonl, id: id}\n"
        "prompt: {template: \"Question: {{question}}\\nAnswer:\", chat_template: false}\n"
        "choices: choices\ntarget: \"{{answer}}\"\ntarget_delimiter: \" \"\nmetrics: [accuracy]\n")
    lm_tasks = tmp_path / "lm_tasks"
    lm_tasks.mkdir()
    (lm_tasks / "tt_mc.yaml").write_text(
        "task: tt_mc\ndataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {data}\n"
        "test_split: test\noutput_type: multiple_choice\n"
        "doc_to_text: \"Question: {{question}}\\nAnswer:\"\ndoc_to_choice: \"{{choices}}\"\ndoc_to_target: answer\n"
        "target_delimiter: \" \"\nmetric_list:\n  - metric: acc\n")
    return rows, lm_tasks


def test_lm_eval_local_completions_scores_a_task_as_tuneterm_eval_does(tiny_model_dir, tmp_path, monkeypatch):
    """The same multiple-choice task, scored by lm-eval's harness (`local-completions` against `tuneterm
    serve`) and by `tuneterm eval`: the same accuracy and the same per-item log-likelihoods (1e-4)."""
    import json

    pytest.importorskip("datasets")
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    from tuneterm.core.evals.spec import load_task
    from tuneterm.core.evals.variants import parse_variants
    from tuneterm.workers.evals.runner import RunOptions, run_eval
    from tuneterm.workers.serve import make_server, serve_in_thread

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-datasets"))
    rows, lm_tasks = _mc_task(tmp_path)
    ref = str(tiny_model_dir)
    ours = run_eval([load_task(tmp_path / "mc.yaml")], parse_variants([ref]),
                    RunOptions(out_dir=tmp_path / "out", progress=False, use_cache=False))
    samples = {s["id"]: s for s in map(json.loads, (tmp_path / "out" / "samples.jsonl").read_text().splitlines())}

    srv = make_server([ref], port=0)
    serve_in_thread(srv)
    try:
        theirs = simple_evaluate(
            model="local-completions",
            model_args=f"model={ref},base_url={srv.url}/completions,tokenizer_backend=huggingface,"
                       f"tokenizer={ref},num_concurrent=1,max_retries=1",
            tasks=["tt_mc"], task_manager=TaskManager(include_path=str(lm_tasks)), log_samples=True,
            batch_size=4)
    finally:
        srv.shutdown()
        srv.server_close()
    acc = ours["tasks"]["mc"]["variants"][ref]["metrics"]["accuracy"]["value"]
    assert theirs["results"]["tt_mc"]["acc,none"] == pytest.approx(acc, abs=1e-6)  # the report keeps 6 decimals
    logged = theirs["samples"]["tt_mc"]
    assert len(logged) == len(rows)
    for s in logged:
        mine = samples[s["doc"]["id"]]
        their_lls = [float(r[0][0]) if isinstance(r[0], (list, tuple)) else float(r[0]) for r in s["resps"]]
        assert their_lls == pytest.approx(mine["logprobs"], abs=1e-4), s["doc"]["id"]


def test_lm_eval_local_chat_completions_runs_a_generate_task(tiny_model_dir, tmp_path, monkeypatch):
    """lm-eval's `local-chat-completions` model runs a generate task through `tuneterm serve`'s chat
    template: its greedy answers are the ones `tuneterm eval` writes for the same chat prompts."""
    import json

    pytest.importorskip("datasets")
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    from tuneterm.core.evals.spec import load_task
    from tuneterm.core.evals.variants import parse_variants
    from tuneterm.workers.evals.runner import RunOptions, run_eval
    from tuneterm.workers.serve import make_server, serve_in_thread

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-datasets"))
    questions = ["my card was charged twice", "the app crashes on start", "I forgot my password"]
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"id": f"q{i}", "q": q, "a": "x"}) + "\n" for i, q in enumerate(questions)))
    (tmp_path / "g.yaml").write_text("name: g\nversion: 1\ntype: generate\ndata: {path: d.jsonl, id: id}\n"
                                     "prompt: {template: '{{q}}'}\ntarget: '{{a}}'\n"
                                     "generation: {max_new_tokens: 12}\n")
    lm_tasks = tmp_path / "lm_tasks"
    lm_tasks.mkdir()
    (lm_tasks / "tt_gen.yaml").write_text(
        f"task: tt_gen\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {data}\n"
        "test_split: test\noutput_type: generate_until\ndoc_to_text: \"{{q}}\"\ndoc_to_target: \"{{a}}\"\n"
        "generation_kwargs:\n  until: [\"<never>\"]\n  max_gen_toks: 12\n  do_sample: false\n"
        "metric_list:\n  - metric: exact_match\n")
    ref = str(tiny_model_dir)
    run_eval([load_task(tmp_path / "g.yaml")], parse_variants([ref]),
             RunOptions(out_dir=tmp_path / "out", progress=False, use_cache=False))
    ours = {s["id"]: s["output"] for s in map(json.loads, (tmp_path / "out" / "samples.jsonl").read_text().splitlines())}

    srv = make_server([ref], port=0)
    serve_in_thread(srv)
    try:
        theirs = simple_evaluate(
            model="local-chat-completions",
            model_args=f"model={ref},base_url={srv.url}/chat/completions,num_concurrent=1,max_retries=1",
            tasks=["tt_gen"], task_manager=TaskManager(include_path=str(lm_tasks)), log_samples=True,
            apply_chat_template=True)
    finally:
        srv.shutdown()
        srv.server_close()
    logged = theirs["samples"]["tt_gen"]
    assert len(logged) == 3 and "exact_match,none" in theirs["results"]["tt_gen"]
    for s in logged:
        answer = s["resps"][0][0]
        assert isinstance(answer, str) and answer
        assert answer == ours[s["doc"]["id"]], s["doc"]["id"]
