"""`tuneterm serve` under load (issue 22): back-pressure instead of resets, clients that leave,
slow and stuck clients, /health, /metrics, and a graceful stop on SIGTERM with a stream open.
Real HTTP on 127.0.0.1 against the tiny model (the SIGTERM test runs the real command)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest

PROMPT = [{"role": "user", "content": "hello there"}]


def _serve(variants, **options):
    from tuneterm.workers.serve import ChatServer, serve_in_thread

    srv = ChatServer(("127.0.0.1", 0), variants, **options)
    serve_in_thread(srv)
    return srv


def _stop(srv):
    srv.shutdown()
    srv.server_close()


@pytest.fixture(scope="module")
def variants(tiny_model_dir):
    from tuneterm.workers.variants import load_variants

    return load_variants([str(tiny_model_dir)])


def _get(url: str):
    try:
        with urllib.request.urlopen(url, timeout=60) as resp:
            return resp.status, resp.read(), {k.lower(): v for k, v in resp.headers.items()}
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), {k.lower(): v for k, v in exc.headers.items()}


def _body(model: str, max_tokens: int, stream: bool = False) -> bytes:
    return json.dumps({"model": model, "messages": PROMPT, "max_tokens": max_tokens, "temperature": 0,
                       "stream": stream}).encode()


def _request_bytes(srv, body: bytes) -> bytes:
    host, port = srv.server_address[:2]
    return (f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body


def _until(check, timeout: float = 60.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if check():
            return True
        time.sleep(0.02)
    return False


def _decoder(srv):
    return next(iter(srv.variants.values())).group.batcher


def test_a_burst_of_200_connections_gets_only_200s_and_429s(variants):
    srv = _serve(variants, max_running=4, max_waiting=8)
    model = next(iter(variants))
    payload = _request_bytes(srv, _body(model, 4))
    host, port = srv.server_address[:2]

    async def one() -> tuple:
        try:
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(payload)
            await writer.drain()
            raw = await reader.read()
            writer.close()
        except (ConnectionResetError, BrokenPipeError) as exc:
            return ("reset", repr(exc), b"")
        head, _, body = raw.partition(b"\r\n\r\n")
        return (int(head.split()[1]) if head else "empty", head.decode(errors="replace"), body)

    async def burst():
        return await asyncio.gather(*(one() for _ in range(200)))

    try:
        results = asyncio.run(burst())
    finally:
        _stop(srv)
    statuses = [r[0] for r in results]
    assert set(statuses) <= {200, 429}, sorted(set(map(str, statuses)))
    assert statuses.count(200) >= 12 and statuses.count(429) > 0  # 4 running + 8 waiting got through
    for status, head, body in results:
        if status == 429:
            assert re.search(r"(?im)^retry-after: \d+", head)
            error = json.loads(body)["error"]
            assert error["type"] == "rate_limit_error" and error["code"] == "rate_limit_exceeded"
        else:
            assert json.loads(body)["object"] == "chat.completion"


def test_a_client_that_leaves_stops_its_decoding(variants):
    from openai import OpenAI

    srv = _serve(variants, max_running=1, max_waiting=4)
    model = next(iter(variants))
    client = OpenAI(base_url=srv.url, api_key="x", max_retries=0, timeout=60)
    try:
        client.chat.completions.create(model=model, messages=PROMPT, max_tokens=2)  # the decode loop exists
        decoder = _decoder(srv)
        before = decoder.decoded
        stream = client.chat.completions.create(model=model, messages=PROMPT, max_tokens=450, temperature=0,
                                                stream=True)
        chunks = 0
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                chunks += 1
                if chunks == 3:
                    break
        stream.close()
        assert _until(lambda: srv.admission.running == 0)
        decoded = decoder.decoded - before
        # the three chunks sent, what was in flight when the close arrived, then one step at most
        assert 3 <= decoded < 100, decoded
        metrics = _get(srv.url.replace("/v1", "/metrics"))[1].decode()
        assert "tuneterm_requests_cancelled_total 1.0" in metrics
        assert 'tuneterm_requests_total{endpoint="chat.completions",status="499"} 1.0' in metrics
    finally:
        _stop(srv)


def test_a_waiting_request_whose_client_left_never_decodes(variants):
    srv = _serve(variants, max_running=1, max_waiting=4)
    model = next(iter(variants))
    host, port = srv.server_address[:2]
    try:
        urllib.request.urlopen(urllib.request.Request(f"{srv.url}/chat/completions", data=_body(model, 1),
                                                      headers={"Content-Type": "application/json"}), timeout=60)
        decoder = _decoder(srv)
        # one long stream holds the only slot; a second request waits, then its client leaves
        holder = socket.create_connection((host, port))
        holder.sendall(_request_bytes(srv, _body(model, 450, stream=True)))
        holder.recv(1)
        assert _until(lambda: srv.admission.running == 1)
        waiter = socket.create_connection((host, port))
        waiter.sendall(_request_bytes(srv, _body(model, 450)))
        assert _until(lambda: srv.admission.waiting == 1)
        waiter.close()
        assert _until(lambda: srv.admission.waiting == 0)
        holder.close()
        assert _until(lambda: srv.admission.running == 0)
        metrics = _get(srv.url.replace("/v1", "/metrics"))[1].decode()
        assert "tuneterm_requests_cancelled_total 2.0" in metrics
        assert decoder.decoded < 1 + 450  # the waiting request's 450 tokens were never decoded
    finally:
        _stop(srv)


def test_a_slow_body_is_cut_off_without_holding_a_slot(variants):
    from openai import OpenAI

    srv = _serve(variants, max_running=1, max_waiting=0, read_timeout=1.0)
    model = next(iter(variants))
    host, port = srv.server_address[:2]
    body = _body(model, 4)
    slow = socket.create_connection((host, port))
    slow.sendall(_request_bytes(srv, body)[: -len(body)] + body[:5])
    stop = threading.Event()

    def dribble():  # a byte every 0.3 s, never the whole body
        for b in body[5:]:
            if stop.wait(0.3):
                return
            try:
                slow.sendall(bytes([b]))
            except OSError:
                return

    thread = threading.Thread(target=dribble, daemon=True)
    thread.start()
    try:
        # with one slot and no queue, this succeeds only if the slow client holds no slot
        answer = OpenAI(base_url=srv.url, api_key="x", max_retries=0, timeout=60).chat.completions.create(
            model=model, messages=PROMPT, max_tokens=3)
        assert answer.usage.completion_tokens == 3
        slow.settimeout(30)
        raw = b""
        while chunk := slow.recv(65536):
            raw += chunk
        head, _, payload = raw.partition(b"\r\n\r\n")
        assert head.split()[1] == b"408", head
        assert json.loads(payload)["error"]["code"] == "request_timeout"
    finally:
        stop.set()
        slow.close()
        _stop(srv)


def test_request_timeout_ends_streams_with_an_error_event_and_others_with_504(variants):
    srv = _serve(variants, request_timeout=0.2)
    model = next(iter(variants))
    try:
        status, body, _ = _post_raw(srv, _body(model, 450))
        assert status == 504 and json.loads(body)["error"]["code"] == "request_timeout"
        status, body, _ = _post_raw(srv, _body(model, 450, stream=True))
        assert status == 200
        events = [line[6:] for line in body.decode().splitlines() if line.startswith("data: ")]
        assert json.loads(events[0])["object"] == "chat.completion.chunk"
        assert json.loads(events[-1])["error"]["code"] == "request_timeout"
        assert "[DONE]" not in events
    finally:
        _stop(srv)


def _post_raw(srv, body: bytes):
    req = urllib.request.Request(f"{srv.url}/chat/completions", data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, resp.read(), {k.lower(): v for k, v in resp.headers.items()}
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), {k.lower(): v for k, v in exc.headers.items()}


def test_health_is_503_while_loading_then_200_and_metrics_count(variants):
    from openai import OpenAI

    from tuneterm.workers.serve import ChatServer, serve_in_thread

    release = threading.Event()
    srv = ChatServer(("127.0.0.1", 0), None)
    serve_in_thread(srv)
    root = srv.url[: -len("/v1")]
    try:
        srv.load_in_background(lambda: (release.wait(60), variants)[1])
        status, body, headers = _get(f"{root}/health")
        assert status == 503 and json.loads(body)["status"] == "loading" and headers.get("retry-after") == "1"
        status, body, _ = _get(f"{srv.url}/models")
        assert status == 503 and json.loads(body)["error"]["code"] == "model_loading"
        release.set()
        assert _until(lambda: _get(f"{root}/health")[0] == 200)
        model = next(iter(variants))
        client = OpenAI(base_url=srv.url, api_key="x", max_retries=0, timeout=60)
        client.chat.completions.create(model=model, messages=PROMPT, max_tokens=5)
        list(client.chat.completions.create(model=model, messages=PROMPT, max_tokens=5, stream=True))
        assert _until(lambda: srv.admission.running == 0)  # the slot is freed once the decode loop let go
        status, body, headers = _get(f"{root}/metrics")
        text = body.decode()
        assert status == 200 and headers["content-type"].startswith("text/plain")
        assert 'tuneterm_requests_total{endpoint="chat.completions",status="200"} 2.0' in text
        assert "tuneterm_tokens_out_total 10.0" in text
        assert "tuneterm_requests_running 0.0" in text and "tuneterm_requests_waiting 0.0" in text
        assert "tuneterm_time_to_first_token_seconds_count 2.0" in text
        assert "tuneterm_request_latency_seconds_count 2.0" in text
        assert 'tuneterm_requests_total{endpoint="health",status="503"} 1.0' in text
    finally:
        _stop(srv)


def test_unknown_paths_and_methods_answer_in_openai_shape(variants):
    srv = _serve(variants)
    try:
        status, body, _ = _post_raw(srv, b"{}")
        assert status == 400 and json.loads(body)["error"]["param"] == "model"
        status, body, _ = _get(f"{srv.url}/chat/completions")
        assert status == 405 and "error" in json.loads(body)
        status, body, _ = _get(f"{srv.url}/nothing/here")
        assert status == 404 and json.loads(body)["error"]["code"] == "unknown_url"
    finally:
        _stop(srv)


@pytest.mark.slow
def test_sigterm_ends_an_open_stream_with_a_final_event_and_exits_0(embedded_model_dir):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "tuneterm", "serve", str(embedded_model_dir), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        first = proc.stdout.readline()
        url = re.search(r"(http://\S+/v1)", first).group(1)
        assert _until(lambda: _get(url.replace("/v1", "/health"))[0] == 200, timeout=300)
        host, port = re.search(r"http://([^:/]+):(\d+)", url).groups()
        conn = socket.create_connection((host, int(port)))
        body = json.dumps({"model": str(embedded_model_dir), "max_tokens": 400, "temperature": 0, "stream": True,
                           "messages": [{"role": "user", "content": "Count from 1 to 300, separated by commas."}]})
        conn.sendall((f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                      f"Content-Length: {len(body)}\r\n\r\n{body}").encode())
        conn.settimeout(60)
        raw = b""
        while raw.count(b"data: ") < 3:
            raw += conn.recv(65536)
        proc.send_signal(signal.SIGTERM)
        while chunk := conn.recv(65536):
            raw += chunk
            if raw.endswith(b"0\r\n\r\n"):
                break
        code = proc.wait(timeout=30)
        out, err = proc.communicate()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    events = [line[6:] for line in raw.decode(errors="replace").splitlines() if line.startswith("data: ")]
    assert json.loads(events[-1])["error"]["code"] == "server_shutdown", events[-3:]
    assert code == 0, err
    assert "Traceback" not in err


def test_a_stream_cut_inside_a_multibyte_character_never_emits_half_of_it(variants):
    """Issue 15: an answer cut by max_tokens after the first bytes of 😀 (three tokens) ends before it."""
    import queue

    from tuneterm.core.generation import GenerationParams, GenerationStats
    from tuneterm.workers.engine import text_pieces

    tokenizer = next(iter(variants.values())).group.tokenizer
    emoji = tokenizer.encode("😀", add_special_tokens=False)
    assert len(emoji) > 1 and "\ufffd" in tokenizer.decode(emoji[:-1])
    prefix = tokenizer.encode("Hi ", add_special_tokens=False)
    for cut in range(1, len(emoji)):
        tokens: queue.Queue = queue.Queue()
        for tok in [*prefix, *emoji[:cut]]:
            tokens.put(tok)
        tokens.put(None)
        params = GenerationParams(max_new_tokens=len(prefix) + cut)
        pieces = list(text_pieces(tokens, tokenizer, params, GenerationStats(), threading.Event(), None,
                                  time.perf_counter(), set()))
        assert "".join(pieces) == "Hi " and not any("\ufffd" in p for p in pieces), pieces
    tokens = queue.Queue()
    for tok in [*prefix, *emoji, None]:
        tokens.put(tok)
    whole = text_pieces(tokens, tokenizer, GenerationParams(max_new_tokens=10), GenerationStats(),
                        threading.Event(), None, time.perf_counter(), set())
    assert "".join(whole) == "Hi 😀"


def test_fields_the_server_does_not_apply_are_refused_by_name(variants):
    """Issue 25 item 1: nothing silently ignored; no-ops OpenAI itself accepts stay accepted."""
    import openai
    from openai import OpenAI

    srv = _serve(variants)
    model = next(iter(variants))
    client = OpenAI(base_url=srv.url, api_key="x", max_retries=0, timeout=60)
    tool = {"type": "function", "function": {"name": "add", "parameters": {"type": "object", "properties": {}}}}
    refused = {
        "frobnicate": {"extra_body": {"frobnicate": 3}},
        "response_format.type": {"response_format": {"type": "yaml"}},
        "tools": {"tools": [tool]},
        "top_logprobs": {"top_logprobs": 2},  # without logprobs: true
        "frequency_penalty": {"frequency_penalty": 0.5},
        "n": {"n": 2},
    }
    try:
        for param, kwargs in refused.items():
            with pytest.raises(openai.BadRequestError) as err:
                client.chat.completions.create(model=model, messages=PROMPT, max_tokens=2, **kwargs)
            assert err.value.body["param"] == param, (param, err.value.body)
            assert err.value.body["type"] == "invalid_request_error"
        fine = client.chat.completions.create(model=model, messages=PROMPT, max_tokens=2, user="u1",
                                              metadata={"run": "a"}, frequency_penalty=0, n=1,
                                              response_format={"type": "text"}, logprobs=False)
        assert fine.usage.completion_tokens == 2
    finally:
        _stop(srv)
