"""The llama.cpp worker process: one GGUF file, run by llama-cpp-python, spoken to in JSON lines.

Started by :mod:`tuneterm.workers.llamacpp` as ``python -m tuneterm.workers.llamacpp_worker FILE
N_CTX N_THREADS``, in a process of its own so that llama.cpp's OpenMP team gets the wait policy it
is fastest with (tuneterm's torch processes set ``OMP_WAIT_POLICY=PASSIVE``, which makes
llama.cpp's decode 3-4x slower). It imports no torch. One request at a time on stdin, one JSON
object per line on stdout (llama.cpp's own log goes to stderr):

    {"op": "info"}                          -> {"ok": true, "eog": [...], "chat_template": ..., ...}
    {"op": "chat", "messages" (or "prompt": rendered text), "max_new_tokens", "temperature", "top_p", "seed",
     "top_logprobs" (optional: N, 0-20)}
                                            -> {"prompt_tokens": N}, then per token {"t": ID, "b": BASE64}
                                               ({"eog": true} on an end-of-generation token), then {"end": REASON};
                                               with top_logprobs, each token also carries "lp": its log-probability
                                               and "top": [[ID, LOGPROB, BASE64], ...] (N most likely), from
                                               the logits that picked it
    {"op": "stop"}                          (while a chat runs: end it at the next token)
    {"op": "tokenize", "text", "special"}   -> {"ids": [...]}
    {"op": "render", "messages"}            -> {"prompt": TEXT}
    {"op": "loglik", "requests": [[CTX_IDS, CONT_IDS], ...]}
                                            -> {"results": [{"logprob", "greedy", "tokens"}, ...]}
    {"op": "logits", "ids": [...], "out": PATH} -> {"shape": [T, N_VOCAB]}: every position's logits, written
                                               to PATH as a float32 .npy (too large for a JSON line)

An error in a request is answered ``{"error": MESSAGE}``; the worker keeps serving.
"""

from __future__ import annotations

import base64
import json
import queue
import sys
import threading
from typing import Any


class Worker:
    def __init__(self, path: str, n_ctx: int, n_threads: int) -> None:
        from llama_cpp import Llama

        self.path, self.n_ctx, self.n_threads = path, n_ctx, n_threads
        self.llm = Llama(model_path=path, n_ctx=n_ctx, n_threads=n_threads, n_threads_batch=n_threads, verbose=False)
        self._scorer: Any = None  # a second context with logits for every position, made on first use
        self.score_ctx = min(n_ctx, 2048)  # its logits table is score_ctx x n_vocab floats
        meta = self.llm.metadata
        self.template = meta.get("tokenizer.chat_template")
        n_vocab = self.llm.n_vocab()
        import llama_cpp

        vocab = self.llm._model.vocab
        self.eog = [t for t in range(n_vocab) if llama_cpp.llama_vocab_is_eog(vocab, t)]
        self.bos_id, self.eos_id = self.llm.token_bos(), self.llm.token_eos()
        self.add_bos = meta.get("tokenizer.ggml.add_bos_token", "false") == "true"

    def _token_text(self, tok: int) -> str:
        if tok is None or tok < 0:
            return ""
        return self.llm.detokenize([tok], special=True).decode("utf-8", errors="replace")

    def info(self) -> dict:
        import llama_cpp

        meta = self.llm.metadata
        return {"ok": True, "eog": self.eog, "chat_template": self.template, "n_ctx": self.n_ctx, "score_ctx": self.score_ctx,
                "n_threads": self.n_threads, "n_vocab": self.llm.n_vocab(), "bos": self.bos_id, "eos": self.eos_id,
                "architecture": meta.get("general.architecture"), "file_type": meta.get("general.file_type"),
                "name": meta.get("general.name"), "imatrix": bool(meta.get("quantize.imatrix.entries_count")),
                "system_info": llama_cpp.llama_print_system_info().decode(errors="replace"),
                "llama_cpp_python": getattr(llama_cpp, "__version__", "")}

    def render(self, messages: list[dict]) -> str:
        if not self.template:
            raise ValueError("this GGUF file has no chat template (tokenizer.chat_template)")
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        fmt = Jinja2ChatFormatter(self.template, eos_token=self._token_text(self.eos_id),
                                  bos_token=self._token_text(self.bos_id), add_generation_prompt=True)
        return fmt(messages=messages).prompt

    def tokenize(self, text: str, special: bool = True, add_bos: bool | None = None) -> list[int]:
        ids = self.llm.tokenize(text.encode(), add_bos=False, special=special)
        if (self.add_bos if add_bos is None else add_bos) and self.bos_id >= 0 and (not ids or ids[0] != self.bos_id):
            ids = [self.bos_id] + ids
        return ids

    def chat(self, req: dict, stop: threading.Event, out: Any) -> None:
        prompt = req["prompt"] if req.get("prompt") is not None else self.render(req["messages"])
        ids = self.tokenize(prompt)
        max_new = int(req.get("max_new_tokens", 256))
        if len(ids) + max_new > self.n_ctx:
            raise ValueError(f"the prompt ({len(ids)} tokens) and max_new_tokens ({max_new}) exceed the "
                             f"context of {self.n_ctx} tokens")
        out({"prompt_tokens": len(ids)})
        temp = float(req.get("temperature") or 0.0)
        if req.get("seed") is not None:
            self.llm.set_seed(int(req["seed"]))
        sampling = dict(temp=temp, top_p=float(req.get("top_p") or 1.0), top_k=0, min_p=0.0, repeat_penalty=1.0)
        if temp <= 0:
            sampling = dict(temp=0.0, top_k=1, top_p=1.0, min_p=0.0, repeat_penalty=1.0)
        eog = set(self.eog)
        top = req.get("top_logprobs")
        if req.get("json_schema") is not None:  # structured output: llama.cpp's grammar masks each step
            sampling["grammar"] = self.grammar(req["json_schema"])
        n, reason = 0, "length"
        for tok in self.llm.generate(ids, **sampling):
            n += 1
            if tok in eog:
                out({"t": int(tok), "eog": True})
                reason = "stop"
                break
            msg = {"t": int(tok), "b": self._b64(tok)}
            if top is not None:
                msg.update(self._logprobs(int(tok), int(top)))
            out(msg)
            if stop.is_set():
                reason = "cancelled"
                break
            if n >= max_new:
                break
        out({"end": reason})

    def grammar(self, schema: str) -> Any:
        """A fresh grammar (it keeps its parse state) for a JSON schema, through llama.cpp's own
        schema-to-GBNF converter; ValueError names what it cannot take."""
        from llama_cpp.llama_grammar import LlamaGrammar

        try:
            return LlamaGrammar.from_json_schema(schema, verbose=False)
        except Exception as exc:  # noqa: BLE001 - the converter raises whatever it meets
            raise ValueError(f"llama.cpp cannot turn the schema into a grammar: {exc}") from exc

    def _b64(self, tok: int) -> str:
        return base64.b64encode(self.llm.detokenize([tok])).decode()

    def _logprobs(self, tok: int, top: int) -> dict:
        """The log-probability of ``tok`` and the ``top`` most likely tokens, from the logits the
        sampler just picked it from (the context's last output row, still in place while
        ``generate`` is suspended at its yield)."""
        import numpy as np

        n_vocab = self.llm.n_vocab()
        row = np.ctypeslib.as_array(self.llm._ctx.get_logits_ith(-1), shape=(n_vocab,)).astype(np.float64)
        row -= row.max()
        logp = row - np.log(np.exp(row).sum())
        alts = np.argsort(-logp, kind="stable")[:top].tolist() if top else []
        return {"lp": float(logp[tok]), "top": [[int(a), float(logp[a]), self._b64(a)] for a in alts]}

    def scorer(self) -> Any:
        if self._scorer is None:
            from llama_cpp import Llama

            self._scorer = Llama(model_path=self.path, n_ctx=self.score_ctx, n_threads=self.n_threads,
                                 n_threads_batch=self.n_threads, logits_all=True, verbose=False)
        return self._scorer

    def logits(self, ids: list[int], out: str) -> dict:
        import numpy as np

        if not ids or len(ids) > self.score_ctx:
            raise ValueError(f"{len(ids)} tokens: score between 1 and {self.score_ctx} at a time")
        llm = self.scorer()
        llm.reset()
        llm.eval(list(ids))
        rows = np.asarray(llm.scores[: len(ids)], dtype=np.float32)
        np.save(out, rows)
        return {"shape": list(rows.shape)}

    def loglik(self, requests: list) -> list[dict]:
        import numpy as np

        llm = self.scorer()
        results = []
        for ctx, cont in requests:
            whole = (list(ctx) + list(cont))[-(self.score_ctx + 1):]
            inp = whole[:-1]
            llm.reset()
            llm.eval(inp)
            rows = np.asarray(llm.scores[len(inp) - len(cont): len(inp)], dtype=np.float64)
            rows = rows - rows.max(axis=-1, keepdims=True)
            logp = rows - np.log(np.exp(rows).sum(axis=-1, keepdims=True))
            picked = logp[np.arange(len(cont)), np.asarray(cont)]
            results.append({"logprob": float(picked.sum()), "greedy": bool((logp.argmax(-1) == np.asarray(cont)).all()),
                            "tokens": len(cont)})
        return results


def main(argv: list[str]) -> int:
    path, n_ctx, n_threads = argv[0], int(argv[1]), int(argv[2])
    stdout = sys.stdout
    sys.stdout = sys.stderr  # nothing but our JSON lines on the real stdout
    lock = threading.Lock()

    def out(obj: dict) -> None:
        with lock:
            stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
            stdout.flush()

    try:
        worker = Worker(path, n_ctx, n_threads)
    except Exception as exc:  # reported to the parent, which names the file
        out({"error": f"{type(exc).__name__}: {exc}"})
        return 1
    requests: queue.Queue = queue.Queue()
    stop = threading.Event()

    def read() -> None:  # stdin in a thread of its own, so that "stop" arrives while a chat runs
        for line in sys.stdin:
            if not line.strip():
                continue
            req = json.loads(line)
            if req.get("op") == "stop":
                stop.set()
            else:
                requests.put(req)
        requests.put(None)

    threading.Thread(target=read, daemon=True).start()
    out({"ready": True})
    while True:
        req = requests.get()
        if req is None:
            return 0
        stop.clear()
        op = req.get("op")
        try:
            if op == "info":
                out(worker.info())
            elif op == "chat":
                worker.chat(req, stop, out)
            elif op == "tokenize":
                out({"ids": worker.tokenize(req["text"], bool(req.get("special", False)), req.get("add_bos"))})
            elif op == "render":
                out({"prompt": worker.render(req["messages"])})
            elif op == "logits":
                out(worker.logits(req["ids"], req["out"]))
            elif op == "loglik":
                out({"results": worker.loglik(req["requests"])})
            elif op == "grammar":  # a schema checked before its request starts streaming
                worker.grammar(req["schema"])
                out({"ok": True})
            else:
                out({"error": f"unknown op {op!r}"})
        except Exception as exc:
            out({"error": f"{type(exc).__name__}: {exc}"})


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
