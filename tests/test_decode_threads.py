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


def test_serve_spins_briefly_unless_the_user_chose_and_llama_cpp_children_do_not_inherit_it(monkeypatch):
    from tuneterm.core import generation

    for key in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS", "TUNETERM_ADAPT_THREADS",
                "TUNETERM_OMP_DEFAULTED"):
        monkeypatch.delenv(key, raising=False)
    generation.apply_serve_thread_env()
    import os

    assert (os.environ["GOMP_SPINCOUNT"], os.environ["TUNETERM_ADAPT_THREADS"]) == ("10000", "1")
    assert "OMP_WAIT_POLICY" not in os.environ
    child = threadplan.ThreadPlan(2, "ACTIVE", 2, 0.0, "test").env()  # a llama.cpp worker's environment
    assert "GOMP_SPINCOUNT" not in child and "TUNETERM_ADAPT_THREADS" not in child
    assert child["OMP_WAIT_POLICY"] == "ACTIVE"

    for key in ("GOMP_SPINCOUNT", "TUNETERM_ADAPT_THREADS", "TUNETERM_OMP_DEFAULTED"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")  # the user's own: kept, nothing added
    generation.apply_serve_thread_env()
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE" and "GOMP_SPINCOUNT" not in os.environ
    assert "TUNETERM_ADAPT_THREADS" not in os.environ


def test_the_decode_loop_follows_the_load_when_serve_asks(tiny_model_dir, monkeypatch):
    """With TUNETERM_ADAPT_THREADS, the batcher's torch thread count is the cores other processes
    leave free: measured once when it starts, then between steps every ADAPT_EVERY_S."""
    from tuneterm.core.generation import GenerationParams
    from tuneterm.workers import batcher as batching
    from tuneterm.workers.loading import load

    assert threadplan.threads_for(0.0, 2) == 2
    assert threadplan.threads_for(0.9, 2) == 1
    assert threadplan.threads_for(3.0, 2) == 1
    assert threadplan.threads_for(1.2, 8) == 7
    watch = threadplan.LoadWatch()
    assert watch.busy_elsewhere() is None or watch.busy_elsewhere() >= 0.0

    before = torch.get_num_threads()
    monkeypatch.setenv("TUNETERM_ADAPT_THREADS", "1")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    load_seen = iter([1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    monkeypatch.setattr(threadplan, "busy_elsewhere", lambda window_s=0.25: 1.0)  # one core busy at the start
    monkeypatch.setattr(threadplan.LoadWatch, "busy_elsewhere", lambda self: next(load_seen, 0.0))
    monkeypatch.setattr(threadplan, "usable_cores", lambda: 2)
    monkeypatch.setattr(batching, "ADAPT_EVERY_S", 0.0)
    try:
        loaded = load(str(tiny_model_dir))
        loop = batching.Batcher(loaded.model, loaded.tokenizer)
        seen = []  # the thread count each forward pass ran with, read in the decode thread (it is per thread)
        forward = loop._forward
        monkeypatch.setattr(loop, "_forward", lambda rows, **kw: seen.append(torch.get_num_threads()) or forward(rows, **kw))
        text = "".join(loop.stream([{"role": "user", "content": "hi"}], GenerationParams(max_new_tokens=4)))
        loop.close()
        assert text and seen[0] == 1  # one core busy when the loop started and at its first look: left alone
        assert seen[-1] == 2  # the load went away: both cores again
    finally:
        torch.set_num_threads(before)
