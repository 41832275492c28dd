"""The lean decode loop picks its own thread count (measured), decodes with it, and the gate, eval and
serve run quantized models through that same loop and count."""

from __future__ import annotations

import json

import torch

from tuneterm.workers import threadplan


def test_candidate_counts_cover_small_machines_and_sample_large_ones():
    assert threadplan.candidate_counts(1) == [1]
    assert threadplan.candidate_counts(2) == [1, 2]
    assert threadplan.candidate_counts(4) == [1, 2, 3, 4]
    assert threadplan.candidate_counts(16) == [1, 4, 8, 16]


def test_the_fastest_measured_count_wins_and_torchs_own_count_is_restored(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    a = torch.randn(256, 256)

    def step():  # a step whose cost grows with the thread count: 1 must win
        for _ in range(torch.get_num_threads() ** 2 * 40):
            a @ a

    choice = threadplan.pick_decode_threads(step, rounds=2, steps=2, cores=2)
    assert choice.threads == 1 and set(choice.timings_ms) == {1, 2}
    assert choice.timings_ms[1] < choice.timings_ms[2] and "measured" in choice.reason
    assert torch.get_num_threads() == before


def test_a_users_omp_num_threads_is_not_second_guessed(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    calls = []
    choice = threadplan.pick_decode_threads(lambda: calls.append(1), cores=8)
    assert choice.threads == 3 and choice.reason == "OMP_NUM_THREADS" and not calls  # nothing timed


def test_decode_steps_run_with_the_chosen_count_and_prefill_with_torchs(tiny_model_dir, monkeypatch):
    from transformers import AutoModelForCausalLM

    from tuneterm.workers.quantize import fastgen, int8

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    int8.quantize_model(model, "int8-dynamic")
    assert fastgen.install(model)
    decoder = model._tuneterm_fast
    assert decoder.threads in threadplan.candidate_counts() and decoder.thread_choice.timings_ms
    decoder.threads = 1 if torch.get_num_threads() > 1 else None  # make the switch visible on any machine
    seen = []  # (tokens in the call, torch threads during it)
    hook = model.model.layers[0].mlp.down_proj.register_forward_hook(
        lambda m, i, o: seen.append((i[0].shape[1], torch.get_num_threads())))
    default = torch.get_num_threads()
    ids = torch.tensor([[1, 504, 3458, 28, 2, 17]])
    model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=5, min_new_tokens=5, do_sample=False,
                   pad_token_id=0)
    hook.remove()
    assert seen[0] == (6, default)  # the prompt, at torch's own count
    assert all(threads == (decoder.threads or default) for n, threads in seen[1:]) and len(seen) == 5
    assert torch.get_num_threads() == default


def test_the_gate_reports_the_decode_thread_count(tiny_model_dir):
    from tests.test_quant_cpu import run_job

    info = run_job(tiny_model_dir, "int8-dynamic")
    report = json.loads((info.dir / "output" / "quality.json").read_text())
    assert report["quantized"]["decode_threads"] in threadplan.candidate_counts()
    assert "decode_threads" not in report["parent"]  # the float parent runs transformers' generate


def test_eval_runs_a_lean_loop_model_one_row_at_a_time_through_the_loop(tiny_model_dir):
    from tests.test_quant_cpu import run_job
    from tuneterm.workers.evals.backend import LocalGroup, resolve_local

    info = run_job(tiny_model_dir, "int8-dynamic")
    group = LocalGroup([resolve_local("q", f"job:{info.id}")])
    decoder = group.model._tuneterm_fast
    calls = []
    stream = decoder.stream

    def counting(*args, **kwargs):
        calls.append(args[0].shape)
        return stream(*args, **kwargs)

    decoder.stream = counting
    batches = []
    prompts = ["Hello there", "What is two plus two?", "Name a colour"]
    group.generate(prompts, {"max_new_tokens": 4}, batch_size=16, on_batch=lambda idx, res: batches.append((idx, res)))
    assert sorted(i for idx, _ in batches for i in idx) == [0, 1, 2]
    assert all(len(idx) == 1 for idx, _ in batches)  # rows one by one, not a padded batch of three
    assert len(calls) == 3 and all(shape[0] == 1 for shape in calls)  # each through the lean loop
    assert all(r["completion_tokens"] >= 1 for _, res in batches for r in res)
