"""The eval runner on the tiny model: batch-size independence, the per-item cache and resume,
adapter switching on one base, reports, the job kind; one slow test on the embedded model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tuneterm.core.evals.spec import load_task
from tuneterm.core.evals.variants import parse_variants

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """One intra-op thread for this module, restored afterwards: the tiny model's matrices gain
    nothing from threads, and on a busy 2-core machine the threads spin-wait for each other
    (one thread measured 6-30x faster there)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _spec(folder: Path, name: str, body: str):
    path = folder / f"{name}.yaml"
    path.write_text(body)
    return load_task(path)


POOL_ROWS = [{"messages": [{"role": "system", "content": "Route the ticket."},
                            {"role": "user", "content": f"Pool ticket {i} about a parcel"},
                            {"role": "assistant", "content": "logistics" if i % 2 else "payments-ops"}]} for i in range(5)]


@pytest.fixture(scope="module")
def tasks(tmp_path_factory):
    """A generate task, a choice task and a perplexity task over small files (read-only: shared)."""
    tmp_path = tmp_path_factory.mktemp("eval-tasks")
    gen_rows = [{"id": f"g{i}", "messages": [{"role": "system", "content": "Answer with one word."},
                                              {"role": "user", "content": f"Ticket {i}: " + "words " * (i % 5)},
                                              {"role": "assistant", "content": "logistics" if i % 2 else "payments-ops"}]}
                for i in range(7)]
    (tmp_path / "gen.jsonl").write_text("".join(json.dumps(r) + "\n" for r in gen_rows))
    (tmp_path / "pool.jsonl").write_text("".join(json.dumps(r) + "\n" for r in POOL_ROWS))
    mc_rows = [{"id": f"m{i}", "q": f"What is {i} plus {i}?" + " really" * (i % 3), "choices": [str(2 * i), str(2 * i + 1), "many"],
                "answer": 0} for i in range(6)]
    (tmp_path / "mc.jsonl").write_text("".join(json.dumps(r) + "\n" for r in mc_rows))
    gen = _spec(tmp_path, "gen", "name: gen\nversion: 1\ntype: generate\ndata: {path: gen.jsonl}\n"
                "generation: {max_new_tokens: 6, stop: [\"###\"]}\nextract: [strip]\nmetrics: [exact_match, {f1: {average: macro}}]\n")
    mc = _spec(tmp_path, "mc", "name: mc\nversion: 1\ntype: choice\ndata: {path: mc.jsonl}\n"
               "prompt: {template: 'Question: {{q}}\\nAnswer:'}\nchoices: choices\ntarget: '{{answer}}'\nmetrics: [accuracy]\n")
    ppl = _spec(tmp_path, "ppl", "name: ppl\nversion: 1\ntype: perplexity\ndata: {path: mc.jsonl}\ntext: '{{q}} {{answer}}'\n")
    return [gen, mc, ppl]


_BASELINE: dict = {}


@pytest.fixture
def baseline(tasks, tiny_model_dir):
    """The tiny model on the three tasks at batch sizes 1 and 4, uncached; computed once, shared."""
    if "runs" not in _BASELINE:
        ref = str(tiny_model_dir)
        one, _ = _collect(tasks, [ref], batch_size=1, use_cache=False)
        many, _ = _collect(tasks, [ref], batch_size=4, use_cache=False)
        _BASELINE["runs"] = (one, many)
    return _BASELINE["runs"]


def _collect(tasks, models, **kw):
    from tuneterm.workers.evals.runner import RunOptions, collect

    return collect(tasks, parse_variants(models), RunOptions(progress=False, **kw))


def test_scores_do_not_depend_on_batch_size(baseline, tiny_model_dir):
    ref = str(tiny_model_dir)
    one, many = baseline
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


def test_cache_resume_and_report(tasks, baseline, tiny_model_dir, tmp_path, tmp_workspace):
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
    fresh = baseline[1]  # computed without the cache
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


def test_adapters_share_one_base_and_keys_include_the_model(tasks, baseline, tiny_model_dir, tmp_path, monkeypatch):
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
    alone = baseline[1]  # base with adapters disabled == base alone
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


def test_fewshot_variants_share_the_base_model(tasks, tiny_model_dir, monkeypatch):
    from tuneterm.core.errors import UsageError
    from tuneterm.workers import loading

    ref = str(tiny_model_dir)
    pool = str(Path(tasks[0].source).parent / "pool.jsonl")
    few, similar = f"fewshot:2:{pool}@{ref}", f"fewshot:1:similar:{pool}@{ref}"
    loads = []
    real_load = loading.load
    monkeypatch.setattr(loading, "load", lambda r, *a, **k: loads.append(r) or real_load(r, *a, **k))
    outcomes, fps = _collect(tasks[:2], [ref, few, similar], batch_size=4)
    assert len(loads) == 1  # REF and fewshot:...@REF: one model in memory
    assert fps[few]["id"] == fps[ref]["id"]  # same weights; the prompts differ, so do the cache keys
    base_items, few_items = outcomes["gen"][ref].items, outcomes["gen"][few].items
    roles = [m["role"] for m in few_items[0].messages]
    assert roles == ["system", "user", "assistant", "user", "assistant", "user"]
    assert few_items[0].messages[0] == base_items[0].messages[0]  # the item's own system prompt stays
    assert few_items[0].messages[1]["content"].startswith("Pool ticket")
    assert few_items[0].messages[-1] == base_items[0].messages[-1]
    assert not any(r.get("cached") for r in outcomes["gen"][few].records)
    assert "Pool ticket" in outcomes["gen"][few].records[0]["prompt"]
    sim = outcomes["gen"][similar].items
    assert [m["role"] for m in sim[0].messages] == ["system", "user", "assistant", "user"]
    # plain-text prompts (chat template off) get the examples as blocks before the question
    mc_few = outcomes["mc"][few].items[0].context.split("\n\n")
    assert len(mc_few) == 3 and mc_few[0].startswith("Pool ticket") and mc_few[-1].startswith("Question: ")
    from tuneterm.workers.evals.backend import resolve_local
    from tuneterm.workers.evals.runner import assign_parents

    variants = parse_variants([few, ref])
    assign_parents(variants, {v.vid: resolve_local(v.vid, v.ref) for v in variants}, None)
    assert variants[0].parent == ref and variants[1].parent is None
    with pytest.raises(UsageError) as exc:  # the old form is folded into fewshot:
        parse_variants([f"{ref}+2shot"])
    assert "fewshot:2:POOL@" in exc.value.hint


def _train_classifier(data: Path, model: str) -> str:
    """A real feature job (tuneterm.workers.classifier) run in-process; returns its job:ID."""
    from tuneterm.core.jobs import store
    from tuneterm.workers.kinds import feature
    from tuneterm.workers.jobctx import JobContext

    info = store.create_job("feature", {"model": model, "dataset": str(data), "layer": -1, "pooling": "mean"})
    feature.run(JobContext(info.dir))
    return f"job:{info.id}"


def test_classifier_artifact_is_a_variant(tasks, tiny_model_dir, monkeypatch):
    from tuneterm.workers import classifier, loading

    ref = str(tiny_model_dir)
    clf = _train_classifier(Path(tasks[0].source).parent / "gen.jsonl", ref)
    loads = []
    real_load = loading.load
    monkeypatch.setattr(loading, "load", lambda r, *a, **k: loads.append(r) or real_load(r, *a, **k))
    outcomes, fps = _collect(tasks[:2], [ref, clf], batch_size=3)
    assert len(loads) == 1  # the classifier's features come from the base already loaded
    out = outcomes["gen"][clf]
    texts = [it.messages[-1]["content"] for it in out.items]
    assert [r["output"] for r in out.records] == classifier.predict(texts, clf)  # the label is the output
    assert {r["output"] for r in out.records} <= {"logistics", "payments-ops"}
    assert fps[clf]["kind"] == "classifier" and fps[clf]["id"] != fps[ref]["id"]
    assert "classification" in outcomes["mc"][clf].skipped
    from tuneterm.workers.evals.runner import RunOptions, finish

    variants = parse_variants([ref, clf])
    from tuneterm.workers.evals.backend import resolve_local
    from tuneterm.workers.evals.runner import assign_parents

    assign_parents(variants, {v.vid: resolve_local(v.vid, v.ref) for v in variants}, None)
    report = finish(tasks[:2], variants, outcomes, fps, RunOptions(progress=False), 0.0)
    gen = report["tasks"]["gen"]
    assert gen["variants"][clf]["n"] == 7 and gen["comparisons"][0]["baseline"] == ref
    assert [v["kind"] for v in report["variants"]] == ["model", "classifier"]


def test_cli_and_job_kind(tasks, tiny_model_dir, tmp_path, cli, tmp_workspace, monkeypatch):
    ref = str(tiny_model_dir)
    spec = tasks[1].source
    folder = Path(spec).parent
    code, out, err = cli("eval", spec, "--models", f"{ref},fewshot:2:nowhere.jsonl@{ref}", "--out", str(tmp_path / "o"))
    assert code in (3, 4) and "nowhere.jsonl" in err and "Traceback" not in err  # before any model loads
    code, out, err = cli("eval", spec, "--models", f"{ref},{ref}+2shot")
    assert code == 2 and "fewshot:2:POOL@" in err
    few = f"fewshot:2:{folder / 'pool.jsonl'}@{ref}"
    code, out, err = cli("eval", spec, "--models", f"{ref},{few}", "--out", str(tmp_path / "o"), "--json",
                         "--fail-on-regression", "--batch-size", "8")
    assert code in (0, 1), err
    report = json.loads(out)
    comp = report["tasks"]["mc"]["comparisons"][0]
    assert comp["variant"] == few and comp["baseline"] == ref and comp["test"] == "mcnemar_exact"
    assert code == (1 if comp["regression"] else 0)
    from tuneterm.core.jobs import store
    from tuneterm.workers.kinds import eval as eval_job
    from tuneterm.workers.jobctx import JobContext

    # a job runs in its own folder: relative spec and pool paths resolve from the config's cwd
    monkeypatch.chdir(tmp_path)
    info = store.create_job("eval", {"spec": "mc.yaml", "models": [ref, "fewshot:2:pool.jsonl@" + ref],
                                     "batch_size": 8, "cwd": str(folder)})
    eval_job.run(JobContext(info.dir))
    saved = json.loads((info.dir / "output" / "report.json").read_text())
    assert saved["tasks"]["mc"]["variants"][ref]["n"] == 6
    assert saved["tasks"]["mc"]["variants"]["fewshot:2:pool.jsonl@" + ref]["n"] == 6
    events = [json.loads(line) for line in (info.dir / "events.jsonl").read_text().splitlines()]
    kinds = [e.get("type") for e in events]
    assert kinds[0] == "eval_plan" and events[0]["total"] == 12 and kinds[-1] == "eval_report"
    progress = [e for e in events if e.get("type") == "eval_progress"]
    assert progress and progress[-1]["done"] == progress[-1]["total"] == 6
    # items over the whole run, so `jobs ls`, `jobs show` and the workbench give an eval job an ETA
    assert [e["step"] for e in progress] == sorted(e["step"] for e in progress) and progress[-1]["step"] == 12
    assert all(e["total_steps"] == 12 for e in progress)
    from tuneterm.core.jobs.eta import eta_seconds

    assert eta_seconds(events[:1] + progress[:1], now=progress[0]["time"]) is None  # one point: no pace yet
    assert eta_seconds(events[:1] + progress, now=progress[-1]["time"]) == 0.0
    from tuneterm.core.evals.views import job_progress

    assert job_progress(events).finished and job_progress(events).done == 12


@pytest.mark.slow
def test_embedded_model_batched_equals_unbatched():
    """The real model: left-padded batches give the greedy outputs and log-likelihoods of batch size 1
    (one load serves both runs)."""
    from tuneterm.core.evals.items import build_items
    from tuneterm.core.evals.spec import load_task
    from tuneterm.workers.evals.backend import LocalGroup, resolve_local
    from tuneterm.workers.evals.progress import ProgressBar
    from tuneterm.workers.evals.runner import RunOptions, _run_local

    specs = [load_task(REPO / "evals" / "tickets" / "tickets.yaml"), load_task(REPO / "evals" / "general_mc" / "general_mc.yaml")]
    ref = "smollm2-135m-instruct"
    (v,) = parse_variants([ref])
    group = LocalGroup([resolve_local(ref, ref)])
    fp = group.fingerprint(ref)
    runs = {}
    for bs in (1, 2):
        opts = RunOptions(batch_size=bs, progress=False, use_cache=False)
        runs[bs] = {s.name: _run_local(group, v, s, build_items(s, limit=2), fp, None, opts, ProgressBar("", 2, False))
                    for s in specs}
    one, many = runs[1], runs[2]
    assert [r["output"] for r in one["tickets"].records] == [r["output"] for r in many["tickets"].records]
    for a, b in zip(one["general_mc"].records, many["general_mc"].records):
        assert a["logprobs"] == pytest.approx(b["logprobs"], abs=1e-3)
        n = len(a["logprobs"])
        assert max(range(n), key=lambda k: a["logprobs"][k]) == max(range(n), key=lambda k: b["logprobs"][k])


def test_identical_rows_are_scored_and_the_report_counts_them(tiny_model_dir, tmp_path, tmp_workspace):
    """Real test sets repeat rows: each is an item of its own (a stable id), and the report says how many."""
    from tuneterm.workers.evals.runner import RunOptions, run_eval

    rows = [{"q": "Where is my parcel?", "a": "logistics"}, {"q": "I was charged twice", "a": "payments-ops"},
            {"q": "Where is my parcel?", "a": "logistics"}, {"q": "Where is my parcel?", "a": "logistics"}]
    (tmp_path / "dup.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = _spec(tmp_path, "dup", "name: dup\nversion: 1\ntype: generate\ndata: {path: dup.jsonl}\n"
                 "prompt: {template: '{{q}}'}\ntarget: '{{a}}'\ngeneration: {max_new_tokens: 3}\nmetrics: [exact_match]\n")
    ref = str(tiny_model_dir)
    out = tmp_path / "report"
    report = run_eval([spec], parse_variants([ref]), RunOptions(batch_size=4, progress=False, out_dir=out,
                                                                use_cache=False))
    task = report["tasks"]["dup"]
    assert task["variants"][ref]["n"] == 4 and task["duplicate_rows"] == 2
    assert "dup: 2 duplicate row(s) in the data, each scored as an item of its own" in (out / "report.md").read_text()
    ids = [json.loads(line)["id"] for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(ids) == len(set(ids)) == 4


def test_generate_progress_moves_with_the_rows_inside_a_batch(tiny_model_dir, tmp_path, monkeypatch):
    """One batch holds all 7 rows (batch size 16). The tiny model repeats a prompt's last word, so the
    stop strings end the `card` row after 1 token, `hello` after 2 and `crash` after 3; the rest run to
    max_new_tokens. Progress (the events `tuneterm eval`'s bar and an eval job's ETA read) reaches
    1, 2 and 3 while the batch runs, then 7 when it ends; between those, events tell the tokens made
    (``partial``); the answers are those of batch size 1."""
    from tuneterm.workers.evals import runner

    monkeypatch.setattr(runner, "PARTIAL_EVERY_S", 0.0)  # every token's event, not one per 2 s
    words = ["parcel", "card", "refund", "box", "login", "crash", "hello"]
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps({"id": f"r{i}", "word": w}) + "\n"
                                                 for i, w in enumerate(words)))
    spec = _spec(tmp_path, "words", "name: words\nversion: 1\ntype: generate\ndata: {path: rows.jsonl}\n"
                 "prompt: {template: 'Ticket: {{word}}', chat_template: false}\ntarget: '{{word}}'\n"
                 "generation: {max_new_tokens: 6, stop: [card, hello hello, crash crash crash]}\n"
                 "metrics: [exact_match]\n")
    events: list[dict] = []
    batched, _ = _collect([spec], [str(tiny_model_dir)], batch_size=16, use_cache=False,
                          on_event=lambda **kw: events.append(kw))
    done = [e["done"] for e in events if e["type"] == "eval_progress" and "partial" not in e]
    assert done == [1, 2, 3, 7]
    partial = [(e["done"], e["partial"]) for e in events if "partial" in e]
    # after token k of 6: the 7 - done unfinished rows are k/6 of the way
    assert partial == [(d, round((7 - d) * k / 6, 3)) for d, k in [(1, 1), (2, 2), (3, 3), (3, 4), (3, 5), (3, 6)]]
    one, _ = _collect([spec], [str(tiny_model_dir)], batch_size=1, use_cache=False)
    ref = str(tiny_model_dir)
    answers = [r["output"] for r in batched["words"][ref].records]
    assert answers == [r["output"] for r in one["words"][ref].records]
    tokens = dict(zip(words, (r["completion_tokens"] for r in batched["words"][ref].records)))
    assert (tokens["card"], tokens["hello"], tokens["crash"], tokens["parcel"]) == (1, 2, 3, 6)


def test_rows_done_tells_rows_ending_in_eos_once_and_changes_no_decision():
    import torch

    from tuneterm.workers.evals.backend import _rows_done

    told: list[tuple[int, int, int]] = []
    watch = _rows_done(None, {2}, lambda *a: told.append(a), 8)
    steps = [[[5, 7], [5, 2], [5, 9]],  # row 1 ends (EOS)
             [[5, 7, 2], [5, 2, 2], [5, 9, 4]],  # row 0 ends; row 1 is padded with EOS: not told again
             [[5, 7, 2, 2], [5, 2, 2, 2], [5, 9, 4, 8]]]
    for ids in steps:
        assert not watch(torch.tensor(ids), None).any()  # never stops a row itself
    assert told == [(1, 1, 8), (1, 2, 8), (0, 3, 8)]
    told.clear()
    inner = lambda ids, scores, **kw: torch.tensor([True, False])  # noqa: E731 - a stop string in row 0
    watch = _rows_done(inner, {2}, lambda *a: told.append(a), 8)
    assert watch(torch.tensor([[1, 3], [1, 4]]), None).tolist() == [True, False] and told == [(1, 1, 8)]


def test_the_terminal_bar_moves_with_the_tokens_of_a_running_batch(capsys):
    from tuneterm.workers.evals.progress import ProgressBar

    changes: list[tuple[int, int]] = []
    bar = ProgressBar("tickets · m", 10, True, on_change=lambda *a: changes.append(a))
    bar._last = -1.0  # as if the last draw were long ago
    bar.working(10 * 3 / 8, "token 3/8")
    drawn = capsys.readouterr().err.split("\r")[-1]
    assert "0/10 · token 3/8" in drawn and "█" in drawn and " ETA " in drawn
    assert changes == []  # job events count finished rows only
    bar.working(0.0)
    bar.advance(10)
    bar.close()
    assert capsys.readouterr().err.split("\r")[-1].startswith("tickets · m") and changes == [(10, 10)]


def test_job_events_inside_a_batch_carry_the_runs_eta():
    from tuneterm.workers.kinds.eval import _with_steps

    sent: list[dict] = []
    now = [1000.0]
    on_event = _with_steps(lambda **kw: sent.append(kw), clock=lambda: now[0])
    on_event(type="eval_plan", total=20)
    now[0] += 30  # the model loads: not part of the pace
    on_event(type="eval_progress", task="t", variant="a", done=0, total=10, partial=1.0)
    now[0] += 10
    on_event(type="eval_progress", task="t", variant="a", done=0, total=10, partial=3.0)  # 2 rows in 10 s
    on_event(type="eval_progress", task="t", variant="a", done=4, total=10)  # a batch ends
    assert [e.get("step") for e in sent[1:]] == [0, 0, 4] and all(e["total_steps"] == 20 for e in sent[1:])
    assert "eta_s" not in sent[1] and sent[2]["eta_s"] == 85.0  # 17 rows left at 5 s each
    assert "eta_s" not in sent[3]  # rows counted: `jobs ls` takes the pace between step events
