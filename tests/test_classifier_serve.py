"""Issue 19 item 4: a classifier artifact (a ``cls_head`` job, a ``feature`` job) is a model reference like
any other. `tuneterm serve` answers a chat with its label (the label eval and ``predict`` give for the same
text, by one predict path), streamed or not, and refuses what cannot apply to a label with OpenAI's error
shape naming the field; `chat --compare` (plain and blind) and the Chat screen show it as a classifier
column. Real jobs trained on the tiny model, the real ``openai`` client over HTTP on 127.0.0.1."""

from __future__ import annotations

import io
import json
import random

import pytest

from classifier_jobs import TEXTS, WORDS, at_home, build

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def built(tiny_model_dir, tmp_path_factory):
    return build(tiny_model_dir, tmp_path_factory.mktemp("cls-jobs") / "ws")


@pytest.fixture(scope="module")
def server(built, tiny_model_dir):
    """The tiny base and both classifiers in one in-process server (loaded from the jobs' own workspace)."""
    from tuneterm.workers.serve import make_server, serve_in_thread

    with at_home(built.home):
        srv = make_server([str(tiny_model_dir), *built.refs], port=0)
    serve_in_thread(srv)
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def jobs_here(built, tmp_workspace):
    built.install(tmp_workspace)
    return built


@pytest.fixture
def client(server):
    from openai import OpenAI

    return OpenAI(base_url=server.url, api_key="unused", max_retries=0, timeout=120)


def _eval_labels(ref: str, texts: list[str]) -> list[str]:
    """What the eval harness answers for ``texts`` (its local backend, as `tuneterm eval` runs it)."""
    from tuneterm.workers.evals.backend import LocalGroup, resolve_local

    group = LocalGroup([resolve_local("v", ref)])
    try:
        assert group.is_classifier("v")
        return group.classify("v", texts)
    finally:
        group.close()


def test_chat_completions_answer_with_the_label_eval_and_predict_give(client, server, jobs_here):
    from tuneterm.workers import classifier

    texts = [*TEXTS, "billing parcel refund courier card"]
    for ref, method in zip(jobs_here.refs, ("cls_head", "feature")):
        expected = _eval_labels(ref, texts)
        assert classifier.predict(texts, ref) == expected  # chat's path and eval's are one
        assert expected[:2] == list(WORDS)  # trained well enough to tell the two easy texts apart
        tokenizer = server.variants[ref].group.tokenizer
        for text, label in zip(texts, expected):
            r = client.chat.completions.create(
                model=ref, temperature=0, max_tokens=8,
                messages=[{"role": "system", "content": "Route the ticket."}, {"role": "user", "content": "hi"},
                          {"role": "assistant", "content": "payments-ops"}, {"role": "user", "content": text}])
            choice = r.choices[0]
            assert choice.message.content == label, (ref, text)
            assert choice.finish_reason == "stop" and choice.logprobs is None
            assert r.usage.completion_tokens == len(tokenizer(label, add_special_tokens=False)["input_ids"])
            assert r.usage.prompt_tokens == len(tokenizer(text)["input_ids"])
        # streamed: the label as one piece, then the end and the usage
        stream = client.chat.completions.create(model=ref, messages=[{"role": "user", "content": texts[1]}],
                                                stream=True, stream_options={"include_usage": True})
        chunks = list(stream)
        pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
        assert pieces == [expected[1]]
        assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens >= 1
        # the listing says what it is
        card = client.models.retrieve(ref).model_extra["tuneterm"]
        assert card["kind"] == "classifier" and card["classifier"]["method"] == method
        assert sorted(card["classifier"]["labels"]) == sorted(WORDS) and card["memory_bytes"] > 0
    listed = {m.id: m.model_extra["tuneterm"] for m in client.models.list().data}
    assert listed[jobs_here.refs[0]]["classifier"]["label"] == "classifier: cls_head, 2 labels"
    assert listed[jobs_here.refs[1]]["classifier"]["label"] == "classifier: feature, last layer, 2 labels"
    assert listed[next(iter(server.variants))]["kind"] == "model" and listed[next(iter(server.variants))]["classifier"] is None


def _refused(call) -> dict:
    import openai

    with pytest.raises(openai.BadRequestError) as caught:
        call()
    assert caught.value.status_code == 400
    return caught.value.body


def test_what_cannot_apply_to_a_label_is_refused_naming_the_field(client, built, tiny_model_dir):
    user = [{"role": "user", "content": TEXTS[0]}]
    tool = {"type": "function", "function": {"name": "route", "parameters": {"type": "object"}}}
    for ref in built.refs:
        cases = {
            "logprobs": dict(logprobs=True),
            "top_logprobs": dict(top_logprobs=2),
            "tools": dict(tools=[tool]),
            "response_format": dict(response_format={"type": "json_object"}),
            "n": dict(n=2),
        }
        for param, extra in cases.items():
            body = _refused(lambda: client.chat.completions.create(model=ref, messages=user, **extra))
            assert body["param"] == param and body["type"] == "invalid_request_error", (ref, body)
            if param != "n":
                assert "classifier" in body["message"]
        schema = {"type": "json_schema", "json_schema": {"name": "a", "schema": {"type": "object"}}}
        body = _refused(lambda: client.chat.completions.create(model=ref, messages=user, response_format=schema))
        assert body["param"] == "response_format"
        body = _refused(lambda: client.chat.completions.create(
            model=ref, messages=[{"role": "system", "content": "no user turn"}]))
        assert body["param"] == "messages" and "last user message" in body["message"]
        body = _refused(lambda: client.completions.create(model=ref, prompt=TEXTS[0], max_tokens=2))
        assert body["param"] == "model" and f"{ref} is a classifier" in body["message"]
        body = _refused(lambda: client.responses.create(model=ref, input=TEXTS[0]))
        assert body["param"] == "model" and "classifier" in body["message"]
        # neutral values of those fields are fine
        r = client.chat.completions.create(model=ref, messages=user, logprobs=False, response_format={"type": "text"})
        assert r.choices[0].message.content in WORDS
    # the causal LM served beside them still decodes in its batch
    r = client.chat.completions.create(model=str(tiny_model_dir), messages=user, max_tokens=3, temperature=0)
    assert r.usage.completion_tokens == 3 and r.choices[0].finish_reason == "length"


def test_a_fewshot_reference_or_vllm_over_a_classifier_is_refused(jobs_here, tmp_path):
    from tuneterm.core.errors import InputError
    from tuneterm.workers.variants import load_variants

    pool = tmp_path / "pool.jsonl"
    pool.write_text(json.dumps({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]})
                    + "\n")
    with pytest.raises(InputError, match="needs a generative model, not a classifier"):
        load_variants([f"fewshot:1:{pool}@{jobs_here.refs[0]}"])
    from tuneterm.core.errors import UsageError
    from tuneterm.workers import vllm_child

    with pytest.raises(UsageError, match="is a classifier"):  # vLLM has no form for it either
        vllm_child.plan([jobs_here.refs[0]])


def test_chat_compare_answers_with_the_label_in_the_classifier_column(cli, jobs_here, tiny_model_dir):
    from tuneterm.workers import classifier

    head, feat = jobs_here.refs
    labels = classifier.predict([TEXTS[1]], head) + classifier.predict([TEXTS[1]], feat)
    code, out, err = cli("chat", "--compare", f"{tiny_model_dir},{head},{feat}", TEXTS[1], "-n", "4", "--json")
    assert code == 0, err
    rows = json.loads(out)["results"]
    assert [r["text"] for r in rows[1:]] == labels
    assert rows[1]["engine"] == "classifier: cls_head, 2 labels"
    assert rows[2]["engine"] == "classifier: feature, last layer, 2 labels"
    assert all(r["error"] is None and r["finish_reason"] == "stop" for r in rows[1:])
    assert rows[0]["completion_tokens"] == 4 and rows[0]["finish_reason"] == "length"
    code, out, err = cli("chat", "--compare", f"{tiny_model_dir},{head}", TEXTS[1], "-n", "4")
    assert code == 0, err
    column = out.split(f"── {head}  [classifier: cls_head, 2 labels] ──", 1)[1]
    assert column.lstrip("\n").splitlines()[0] == labels[0]


def test_a_blind_round_with_a_classifier_stores_the_vote(cli, jobs_here, tiny_model_dir, monkeypatch):
    from tuneterm.core import votes

    random.seed(1)
    head = jobs_here.refs[0]
    monkeypatch.setattr("sys.stdin", io.StringIO("1\n"))
    code, out, err = cli("chat", "--compare", f"{tiny_model_dir},{head}", "--blind", TEXTS[0], "-n", "4")
    assert code == 0, err
    assert "1 vote(s) in 1 round(s)" in out
    assert "classifier" not in out.split("vote: 1-2", 1)[0]  # nothing names it before the vote
    [vote] = votes.list_votes("human")
    assert sorted(vote.variants) == sorted([str(tiny_model_dir), head])
    assert vote.answers[vote.variants.index(head)] in WORDS


async def test_the_chat_screen_shows_a_classifier_column_and_its_label(server, built, tiny_model_dir):
    from test_tui_chat import ChatApp, wait_for

    from tuneterm.tui.screens.chat import ChatScreen

    from textual.widgets import Static

    head = built.refs[0]
    expected = server.variants[head].group.classify(TEXTS[0])
    refs = [f"{server.url}#{tiny_model_dir}", f"{server.url}#{head}"]
    screen = ChatScreen(models=refs)
    app = ChatApp(screen)
    async with app.run_test(size=(160, 30)) as pilot:
        screen.set_settings(max_tokens=4)
        screen.send(TEXTS[0])
        await wait_for(pilot, lambda: not screen.streaming and screen.columns[1].status == "done", "the answers")
        base_col, cls_col = screen.columns
        assert cls_col.answer == expected and cls_col.stats["finish_reason"] == "stop"
        titles = [str(c.query_one(".col-title", Static).render()) for c in screen.columns]
        assert "[classifier: cls_head, 2 labels]" in titles[1] and "MiB" in titles[1]
        assert "classifier" not in titles[0] and base_col.stats["completion_tokens"] == 4
        # blind mode hides what it is, and a vote on a round with it is stored
        await pilot.press("ctrl+b")
        await pilot.pause()
        assert screen.blind.active
        screen.send(TEXTS[1])
        await wait_for(pilot, screen.blind.can_vote, "the blind round")
        titles = [str(c.query_one(".col-title", Static).render()) for c in screen.columns]
        assert titles == ["Model 1", "Model 2"]
        screen.set_focus(None)
        await pilot.press("1")
        from tuneterm.core import votes

        await wait_for(pilot, lambda: len(votes.list_votes()) == 1, "the vote")
        [vote] = votes.list_votes()
        assert vote.answers[vote.variants.index(refs[1])] in WORDS
    assert app.errors == []


def test_tuneterm_serve_child_serves_a_classifier_job(jobs_here, tmp_path):
    """`tuneterm serve job:ID` as its own process (the Chat screen's route for a local reference)."""
    from tuneterm.core import chat_client
    from tuneterm.core.chat_client import LocalServers
    from tuneterm.workers import classifier

    head = jobs_here.refs[0]
    servers = LocalServers(log_dir=tmp_path / "logs")
    try:
        routes = servers.ensure([head])
        stats = chat_client.ChatStats()
        text = "".join(chat_client.stream_chat(routes[head], [{"role": "user", "content": TEXTS[1]}], {}, stats))
        assert text == classifier.predict([TEXTS[1]], head)[0] and stats.finish_reason == "stop"
        log = servers.children[0].log_path.read_text()
        assert f"model: {head}  (classifier: cls_head, 2 labels; answers chat completions with a label)" in log
    finally:
        servers.stop_all()


def test_eval_reads_a_feature_classifier_s_base_with_the_adapters_of_its_group_off(jobs_here, tiny_model_dir, tmp_path,
                                                                                   monkeypatch):
    """An eval group that holds a LoRA variant and a feature classifier over the same base: the classifier
    reads the base's own hidden states, whichever adapter was active last."""
    import numpy as np
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from tuneterm.workers import classifier
    from tuneterm.workers.evals.backend import LocalGroup, resolve_local

    torch.manual_seed(4)
    lora = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                          LoraConfig(r=4, lora_alpha=64, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    lora.save_pretrained(tmp_path / "adapter")
    seen: list = []
    real_embed = classifier.embed
    monkeypatch.setattr(classifier, "embed", lambda *a, **k: seen.append(real_embed(*a, **k)) or seen[-1])
    feat = jobs_here.refs[1]
    group = LocalGroup([resolve_local("lora", str(tmp_path / "adapter")), resolve_local("feat", feat)])
    try:
        group.model.set_adapter(group.adapters["lora"])  # as after scoring the LoRA variant
        labels = group.classify("feat", TEXTS)
    finally:
        group.close()
    assert labels == classifier.predict(TEXTS, feat)
    assert len(seen) == 2 and np.allclose(seen[0], seen[1], atol=1e-5)  # the same features as the plain base
