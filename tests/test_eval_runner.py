"""The eval runner on the tiny model: batch-size independence, the per-item cache and resume,
adapter switching on one base, reports, the job kind; one slow test on the embedded model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tuneterm.core.evals.spec import load_task
from tuneterm.core.evals.variants import parse_variants

REPO = Path(__file__).resolve().parents[1]


def _spec(folder: Path, name: str, body: str):
    path = folder / f"{name}.yaml"
    path.write_text(body)
    return load_task(path)


@pytest.fixture
def tasks(tmp_path):
    """A generate task, a choice task and a perplexity task over small files."""
    gen_rows = [{"id": f"g{i}", "messages": [{"role": "system", "content": "Answer with one word."},
                                              {"role": "user", "content": f"Ticket {i}: " + "words " * (i % 5)},
                                              {"role": "assistant", "content": "logistics"}]} for i in range(7)]
    (tmp_path / "gen.jsonl").write_text("".join(json.dumps(r) + "\n" for r in gen_rows))
    mc_rows = [{"id": f"m{i}", "q": f"What is {i} plus {i}?" + " really" * (i % 3), "choices": [str(2 * i), str(2 * i + 1), "many"],
                "answer": 0} for i in range(6)]
    (tmp_path / "mc.jsonl").write_text("".join(json.dumps(r) + "\n" for r in mc_rows))
    gen = _spec(tmp_path, "gen", "name: gen\nversion: 1\ntype: generate\ndata: {path: gen.jsonl}\n"
                "generation: {max_new_tokens: 6, stop: [\"###\"]}\nextract: [strip]\nmetrics: [exact_match, {f1: {average: macro}}]\n")
    mc = _spec(tmp_path, "mc", "name: mc\nversion: 1\ntype: choice\ndata: {path: mc.jsonl}\n"
               "prompt: {template: 'Question: {{q}}\\nAnswer:'}\nchoices: choices\ntarget: '{{answer}}'\nmetrics: [accuracy]\n")
    ppl = _spec(tmp_path, "ppl", "name: ppl\nversion: 1\ntype: perplexity\ndata: {path: mc.jsonl}\ntext: '{{q}} {{answer}}'\n")
    return [gen, mc, ppl]


def _collect(tasks, models, **kw):
    from tuneterm.workers.evals.runner import RunOptions, collect

    return collect(tasks, parse_variants(models), RunOptions(progress=False, **kw))


def test_scores_do_not_depend_on_batch_size(tasks, tiny_model_dir):
    ref = str(tiny_model_dir)
    one, _ = _collect(tasks, [ref], batch_size=1, use_cache=False)
    many, _ = _collect(tasks, [ref], batch_size=4, use_cache=False)
    gen1 = [r["output"] for r in one["gen"][ref].records]
    assert gen1 == [r["output"] for r in many["gen"][ref].records]
    assert any(gen1)  # the random tiny model does say something
    for a, b in zip(one["mc"][ref].records, many["mc"][ref].records):
        assert a["logprobs"] == pytest.approx(b["logprobs"], abs=1e-4)
        assert a["tokens"] == b["tokens"]
    for a, b in zip(one["ppl"][ref].records, many["ppl"][ref].records):
        assert a["nll"] == pytest.approx(b["nll"], abs=1e-3) and a["tokens"] == b["tokens"]


def test_choice_scoring_follows_lm_eval_encoding(tiny_model_dir):
    """Trailing context spaces move to the continuation; continuation tokens come from the joint encoding."""
    from tuneterm.workers.evals.backend import LocalGroup, resolve_local

    group = LocalGroup([resolve_local("t", str(tiny_model_dir))])
    ctx, cont = group.encode_pair("Question: 2+2?\nAnswer: ", "4")
    ctx2, cont2 = group.encode_pair("Question: 2+2?\nAnswer:", " 4")
    assert (ctx, cont) == (ctx2, cont2)
    assert ctx + cont == group.encode("Question: 2+2?\nAnswer: 4")
    # the summed log-probability equals a plain forward pass over context + continuation
    import torch

    results = []
    group.loglikelihood([(ctx, cont)], 1, lambda idx, res: results.extend(res))
    ids = torch.tensor([ctx + cont])
    with torch.inference_mode():
        lp = torch.log_softmax(group.model(ids).logits[0].float(), -1)
    expected = sum(float(lp[len(ctx) - 1 + k, t]) for k, t in enumerate(cont))
    assert results[0]["logprob"] == pytest.approx(expected, abs=1e-4)


def test_cache_resume_and_report(tasks, tiny_model_dir, tmp_path, tmp_workspace):
    from tuneterm.workers.evals.runner import EvalStopped, RunOptions, run_eval

    ref = str(tiny_model_dir)
    calls = {"n": 0}

    def stop_after_first_batch() -> bool:
        calls["n"] += 1
        return calls["n"] >= 1

    with pytest.raises(EvalStopped):
        run_eval(tasks[:1], parse_variants([ref]), RunOptions(batch_size=3, progress=False, should_stop=stop_after_first_batch))
    resumed, _ = _collect(tasks[:1], [ref], batch_size=3)
    speed = resumed["gen"][ref].speed
    assert speed["cached"] == 3 and speed["computed"] == 4  # picked up where it stopped
    fresh, _ = _collect(tasks[:1], [ref], batch_size=3, use_cache=False)
    assert [r["output"] for r in resumed["gen"][ref].records] == [r["output"] for r in fresh["gen"][ref].records]
    out = tmp_path / "report"
    report = run_eval(tasks, parse_variants([ref]), RunOptions(batch_size=3, progress=False, out_dir=out))
    assert report["tasks"]["gen"]["variants"][ref]["speed"]["cached"] == 7
    assert (tmp_workspace.evals_dir / "cache.sqlite").is_file()
    saved = json.loads((out / "report.json").read_text())
    assert saved["schema"] == "tuneterm.eval-report/1"
    mc = saved["tasks"]["mc"]["variants"][ref]
    assert mc["n"] == 6 and mc["metrics"]["accuracy"]["ci_method"] == "wilson"
    assert saved["tasks"]["gen"]["variants"][ref]["metrics"]["f1"]["ci_method"] == "bootstrap"
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 7 + 6 + 6
    assert {"prompt", "output", "extracted", "target", "scores"} <= set(samples[0])
    assert "| gen |" in (out / "report.md").read_text()


def _lora(base_dir: Path, out: Path, seed: int) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base_dir)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=64, target_modules=["q_proj", "v_proj"],
                                                  init_lora_weights=False))
    peft_model.save_pretrained(out)
    return out


def test_adapters_share_one_base_and_keys_include_the_model(tasks, tiny_model_dir, tmp_path, monkeypatch):
    from tuneterm.workers import loading
    from tuneterm.workers.evals import runner

    base = str(tiny_model_dir)
    a1 = str(_lora(tiny_model_dir, tmp_path / "lora1", 1))
    a2 = str(_lora(tiny_model_dir, tmp_path / "lora2", 2))
    loads = []
    real_load = loading.load
    monkeypatch.setattr(loading, "load", lambda ref, *a, **k: loads.append(ref) or real_load(ref, *a, **k))
    outcomes, fps = _collect(tasks[1:2], [base, a1, a2], batch_size=4)
    assert len(loads) == 1  # one base in memory serves the base and both adapters
    assert len({fps[v]["id"] for v in (base, a1, a2)}) == 3
    lp = {v: [r["logprobs"] for r in outcomes["mc"][v].records] for v in (base, a1, a2)}
    assert lp[a1] != lp[base] and lp[a1] != lp[a2]
    alone, _ = _collect(tasks[1:2], [base], use_cache=False)  # base with adapters disabled == base alone
    for got, want in zip([r["logprobs"] for r in alone["mc"][base].records], lp[base]):
        assert got == pytest.approx(want, abs=1e-4)
    from peft import PeftModel  # the adapter through the plain library gives the same scores
    import torch

    model = PeftModel.from_pretrained(real_load(base).model, a1).eval()
    tok = real_load(base).tokenizer
    item = outcomes["mc"][a1].items[0]
    group_enc = tok(item.context + " " + item.choices[0], add_special_tokens=False)["input_ids"]
    ctx_len = len(tok(item.context, add_special_tokens=False)["input_ids"])
    with torch.inference_mode():
        logp = torch.log_softmax(model(torch.tensor([group_enc])).logits[0].float(), -1)
    direct = sum(float(logp[k - 1, group_enc[k]]) for k in range(ctx_len, len(group_enc)))
    assert outcomes["mc"][a1].records[0]["logprobs"][0] == pytest.approx(direct, abs=1e-4)
    from tuneterm.workers.evals.backend import resolve_local

    variants = parse_variants([a1, base])
    runner.assign_parents(variants, {v.vid: resolve_local(v.vid, v.ref) for v in variants}, None)
    assert variants[0].parent == base and variants[1].parent is None  # lineage, not list order


def test_cli_and_job_kind(tasks, tiny_model_dir, tmp_path, cli, tmp_workspace):
    ref = str(tiny_model_dir)
    spec = tasks[1].source
    code, out, err = cli("eval", spec, "--models", f"{ref},{ref}+2shot", "--out", str(tmp_path / "o"), "--json")
    assert code == 3 and "few-shot needs a pool" in err  # checked before any model loads
    (Path(spec).parent / "mc.yaml").write_text(Path(spec).read_text() + "fewshot: {n: 0, pool: mc.jsonl}\n")
    code, out, err = cli("eval", spec, "--models", f"{ref},{ref}+2shot", "--out", str(tmp_path / "o"), "--json",
                         "--fail-on-regression")
    assert code in (0, 1), err
    report = json.loads(out)
    comp = report["tasks"]["mc"]["comparisons"][0]
    assert comp["variant"] == f"{ref}+2shot" and comp["baseline"] == ref and comp["test"] == "mcnemar_exact"
    assert code == (1 if comp["regression"] else 0)
    from tuneterm.core.jobs import store
    from tuneterm.workers import eval as eval_job
    from tuneterm.workers.jobctx import JobContext

    info = store.create_job("eval", {"spec": spec, "models": [ref], "batch_size": 4})
    ctx = JobContext(info.dir)
    eval_job.run(ctx)
    saved = json.loads((info.dir / "output" / "report.json").read_text())
    assert saved["tasks"]["mc"]["variants"][ref]["n"] == 6
    events = [json.loads(line) for line in (info.dir / "events.jsonl").read_text().splitlines()]
    assert any(e.get("type") == "eval_report" for e in events)


@pytest.mark.slow
def test_embedded_model_batched_equals_unbatched():
    from tuneterm.core.evals.spec import load_task

    specs = [load_task(REPO / "evals" / "tickets" / "tickets.yaml"), load_task(REPO / "evals" / "general_mc" / "general_mc.yaml")]
    ref = "smollm2-135m-instruct"
    one, _ = _collect(specs, [ref], batch_size=1, limit=2, use_cache=False)
    many, _ = _collect(specs, [ref], batch_size=2, limit=2, use_cache=False)
    assert [r["output"] for r in one["tickets"][ref].records] == [r["output"] for r in many["tickets"][ref].records]
    for a, b in zip(one["general_mc"][ref].records, many["general_mc"][ref].records):
        assert a["logprobs"] == pytest.approx(b["logprobs"], abs=1e-3)
        n = len(a["logprobs"])
        assert max(range(n), key=lambda k: a["logprobs"][k]) == max(range(n), key=lambda k: b["logprobs"][k])
