"""GGUF files run as they are, by llama.cpp (llama-cpp-python), in a worker process of their own.

``engine_file(ref)`` says whether a reference is a GGUF file this engine should run (a ``.gguf``
path, or ``job:ID`` of a GGUF quantize job; the embedded model stays on torch, where its LoRA
adapters live). :class:`LlamaCppEngine` starts :mod:`tuneterm.workers.llamacpp_worker` with the
thread plan of :mod:`tuneterm.workers.threadplan` (llama.cpp's OpenMP team must not inherit the
passive wait policy tuneterm's torch processes use: 3-4x slower) and streams chat answers through
the same consumer as the torch engine (:func:`tuneterm.workers.engine.text_pieces`: stop strings,
whole characters, finish reasons). The chat template and the end-of-generation tokens come from
the file's own metadata. Without llama-cpp-python the caller falls back to de-quantizing the file
for torch and says so (:func:`fallback_note`).
"""

from __future__ import annotations

import base64
import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from tuneterm.core import modelref
from tuneterm.core.errors import InputError, ModelLoadError, RuntimeFailure
from tuneterm.core.generation import GenerationParams, GenerationStats

INSTALL_HINT = ("pip install 'tuneterm[gguf]' (builds llama.cpp; where the native build crashes, set "
                "CMAKE_ARGS=\"-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON\" first, see docs/gguf.md)")
FILE_TYPES = {0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K", 11: "Q3_K_S",
              12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K",
              30: "IQ4_XS", 32: "BF16"}
_warned: set[str] = set()


def available() -> bool:
    """True when llama-cpp-python is importable (without importing it: that loads the library)."""
    from tuneterm.core.quantize_config import llama_cpp_python_installed

    return llama_cpp_python_installed()


def status() -> dict:
    """For ``tuneterm doctor``: is llama.cpp importable, and the CPU features it was built with."""
    if not available():
        return {"installed": False, "usable": False,
                "note": f"not installed: GGUF files run de-quantized through torch. {INSTALL_HINT}"}
    try:
        import llama_cpp

        info = llama_cpp.llama_print_system_info().decode(errors="replace").strip()
        return {"installed": True, "usable": True, "version": getattr(llama_cpp, "__version__", "?"),
                "system_info": " ".join(info.split())}
    except Exception as exc:  # a broken build or a missing dependency (diskcache) reads the same
        return {"installed": True, "usable": False, "note": f"import failed: {type(exc).__name__}: {str(exc)[:160]}"}


def engine_file(ref: str) -> Path | None:
    """The GGUF file behind ``ref`` when it is one this engine runs, else None."""
    parsed = modelref.parse(ref)
    if parsed.kind == "gguf":
        return Path(parsed.target)
    if parsed.kind == "job":
        from tuneterm.core.workspace import workspace

        art = modelref.job_artifact(parsed.target, workspace().jobs_dir)
        if (art.quant or {}).get("method") == "gguf" and art.quant.get("file"):
            return Path(art.path) / art.quant["file"]
    return None


def fallback_note(ref: str, path: Path) -> str:
    """Said once per reference when a GGUF runs through torch because llama.cpp is missing."""
    return (f"{ref}: llama-cpp-python is not installed, so this GGUF runs de-quantized to fp32 through torch "
            f"(slower, and not the file you ship). Install it: {INSTALL_HINT}")


def warn_fallback(ref: str, path: Path) -> None:
    if ref not in _warned:
        _warned.add(ref)
        print(fallback_note(ref, path), file=sys.stderr, flush=True)


def quant_label(path: Path, file_type: Any = None, imatrix: bool | None = None) -> str:
    """``Q4_1, 92 MiB``: the file's quant type (from its metadata) and size; ``Q4_K_M imatrix, 101 MiB``
    when llama.cpp's quantizer weighted the rounding by an importance matrix."""
    if file_type is None or imatrix is None:
        try:
            from tuneterm.workers.quantize.gguf import read_back

            meta = read_back(path)
            file_type = meta.get("file_type") if file_type is None else file_type
            imatrix = bool(meta.get("imatrix_entries")) if imatrix is None else imatrix
        except Exception:
            pass
    try:
        kind = FILE_TYPES.get(int(file_type), f"type {file_type}") if file_type is not None else "gguf"
    except (TypeError, ValueError):
        kind = str(file_type)
    return f"{kind}{' imatrix' if imatrix else ''}, {Path(path).stat().st_size / 2**20:.0f} MiB"


REFUSED = "llama.cpp refused the request"


@dataclass(frozen=True)
class JsonSchemaGrammar:
    """A JSON schema the worker's llama.cpp accepted as a grammar (structured output for a GGUF file)."""

    schema: str


class _Bytes:
    """The tokenizer face :func:`engine.text_pieces` needs: token ids -> text, from the bytes the
    worker sent with each token (end-of-generation tokens carry none)."""

    def __init__(self) -> None:
        self.pieces: dict[int, bytes] = {}

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:  # noqa: ARG002
        return b"".join(self.pieces.get(i, b"") for i in ids).decode("utf-8", errors="replace")


class LlamaCppEngine:
    """One GGUF file in a llama.cpp worker process; one request at a time."""

    is_llamacpp = True

    def __init__(self, path: Path, n_ctx: int = 4096, threads: int | None = None) -> None:
        self.path = Path(path)
        self.n_ctx = n_ctx
        self.threads = threads
        self.info: dict = {}
        self.plan: Any = None
        self.proc: subprocess.Popen | None = None
        self._stderr: Any = None
        self._lock = threading.Lock()
        self.load_seconds = 0.0
        self.pieces: dict[int, bytes] = {}  # token id -> its bytes, as the worker sent them (log-probabilities)
        self.start()

    # --- the worker process --------------------------------------------------------------------

    def start(self) -> None:
        from tuneterm.workers import threadplan

        started = time.perf_counter()
        self.plan = threadplan.plan()
        threads = self.threads or self.plan.threads
        env = self.plan.env()
        env["OMP_NUM_THREADS"] = env.get("OMP_NUM_THREADS") if "OMP_NUM_THREADS" in os.environ else str(threads)
        self._stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tuneterm.workers.llamacpp_worker", str(self.path), str(self.n_ctx), str(threads)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, env=env, text=True, bufsize=1,
        )
        first = self._recv()
        if "error" in first:
            self.close()
            raise ModelLoadError("llama.cpp could not load the GGUF file",
                                 [("file", str(self.path)), ("problem", first["error"][:300])],
                                 "check that the file is complete; `tuneterm doctor` shows the llama.cpp build")
        self.info = self.request({"op": "info"})
        self.load_seconds = time.perf_counter() - started

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _stderr_tail(self) -> str:
        try:
            self._stderr.seek(0)
            return self._stderr.read().decode(errors="replace").strip()[-300:]
        except Exception:
            return ""

    def _dead(self) -> RuntimeFailure:
        code = self.proc.poll() if self.proc is not None else None
        facts = [("file", str(self.path)), ("exit code", str(code))]
        tail = self._stderr_tail()
        if tail:
            facts.append(("stderr", tail))
        return RuntimeFailure("the llama.cpp worker process stopped", facts,
                              "the next request starts a new worker; if it keeps stopping, run `tuneterm doctor`")

    def _send(self, obj: dict) -> None:
        try:
            self.proc.stdin.write(json.dumps(obj) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError, ValueError):
            raise self._dead() from None

    def _recv(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(timeout=5)
            raise self._dead()
        return json.loads(line)

    def _ensure(self) -> None:
        if not self.alive():  # killed or crashed: a fresh worker for this request
            self.close()
            self.start()

    def request(self, obj: dict) -> dict:
        """Send one request and return its one-line answer (not for chat)."""
        self._send(obj)
        reply = self._recv()
        if "error" in reply:
            raise RuntimeFailure(REFUSED, [("file", str(self.path)), ("problem", reply["error"])])
        return reply

    def call(self, obj: dict) -> dict:
        with self._lock:
            self._ensure()
            return self.request(obj)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.proc.stdin.close()
                self.proc.wait(timeout=5)
            except Exception:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    # --- what callers use ----------------------------------------------------------------------

    @property
    def eos(self) -> set[int]:
        return set(self.info.get("eog") or [])

    def memory_bytes(self) -> int:
        return self.path.stat().st_size

    def token_bytes(self, token_id: int) -> list[int]:
        """A token's own bytes, as the worker sent them with a token or a log-probability alternative."""
        return list(self.pieces.get(int(token_id), b""))

    def label(self) -> str:
        return f"llama.cpp, {quant_label(self.path, self.info.get('file_type'), bool(self.info.get('imatrix')))}"

    def tokenize(self, text: str, special: bool = False, add_bos: bool = False) -> list[int]:
        return list(self.call({"op": "tokenize", "text": text, "special": special, "add_bos": add_bos})["ids"])

    def render(self, messages: list[dict]) -> str:
        return self.call({"op": "render", "messages": messages})["prompt"]

    def logits(self, ids: list[int]) -> Any:
        """Every position's logits for ``ids`` (a float32 numpy array [len(ids), n_vocab]): what the
        quality gate compares with the parent model's."""
        import numpy as np

        fd, name = tempfile.mkstemp(prefix="tuneterm-logits-", suffix=".npy")
        os.close(fd)
        try:
            self.call({"op": "logits", "ids": [int(i) for i in ids], "out": name})
            return np.load(name)
        finally:
            os.unlink(name)

    def json_schema_grammar(self, schema: str) -> JsonSchemaGrammar:
        """Structured output for this file: the schema checked by llama.cpp's schema-to-grammar converter
        in the worker (InputError naming the problem when it cannot take it), for :meth:`stream`."""
        try:
            self.call({"op": "grammar", "schema": schema})
        except RuntimeFailure as exc:
            if exc.title != REFUSED:  # the worker itself stopped
                raise
            raise InputError("llama.cpp cannot constrain decoding to this JSON schema",
                             [("file", str(self.path)), *[f for f in exc.facts if f[0] == "problem"]]) from None
        return JsonSchemaGrammar(schema)

    def loglikelihood(self, requests: list[tuple[list[int], list[int]]]) -> list[dict]:
        return self.call({"op": "loglik", "requests": [[list(c), list(t)] for c, t in requests]})["results"]

    def stream(self, messages: list[dict] | str, params: GenerationParams, stats: GenerationStats | None = None,
               cancel: threading.Event | None = None, logprobs: Any = None,
               grammar: JsonSchemaGrammar | None = None) -> Iterator[str]:
        """Yield the answer's text pieces as llama.cpp makes them; fills ``stats`` as the torch engine does.
        ``messages`` go through the file's chat template; a string is a prompt already rendered.
        ``logprobs`` (a :class:`tuneterm.workers.batcher.TokenLog`) is filled as the worker sends each
        token's log-probability, computed from the logits that picked it (end-of-generation tokens left out).
        ``grammar`` (from :meth:`json_schema_grammar`) constrains the answer to a JSON schema."""
        from tuneterm.workers.engine import text_pieces

        params.validate()
        stats = stats if stats is not None else GenerationStats()
        with self._lock:
            if cancel is not None and cancel.is_set():
                return
            self._ensure()
            tokens: queue.Queue = queue.Queue()
            halt = threading.Event()
            decoder = _Bytes()
            started = time.perf_counter()
            text = messages if isinstance(messages, str) else None
            self._send({"op": "chat", "messages": None if text is not None else messages, "prompt": text,
                        "max_new_tokens": params.max_new_tokens,
                        "temperature": params.temperature, "top_p": params.top_p, "seed": params.seed,
                        "top_logprobs": None if logprobs is None else int(logprobs.top),
                        "json_schema": None if grammar is None else grammar.schema})
            reader = threading.Thread(target=self._read_chat, args=(tokens, decoder, stats, halt, cancel, logprobs),
                                      name="tuneterm-llamacpp", daemon=True)
            reader.start()
            try:
                yield from text_pieces(tokens, decoder, params, stats, halt, cancel, started, self.eos)
            finally:
                halt.set()
                reader.join()
                stats.total_s = time.perf_counter() - started

    def _read_chat(self, tokens: queue.Queue, decoder: _Bytes, stats: GenerationStats, halt: threading.Event,
                   cancel: threading.Event | None, log: Any = None) -> None:
        """Move the worker's answer into ``tokens``; ask it to stop once the consumer is done."""
        stop_sent = False
        try:
            while True:
                if not stop_sent and (halt.is_set() or (cancel is not None and cancel.is_set())):
                    self._send({"op": "stop"})
                    stop_sent = True
                msg = self._recv()
                if "error" in msg:
                    raise RuntimeFailure("llama.cpp could not answer", [("file", str(self.path)), ("problem", msg["error"])])
                if "prompt_tokens" in msg:
                    stats.prompt_tokens = int(msg["prompt_tokens"])
                elif "t" in msg:
                    if "b" in msg:
                        decoder.pieces[int(msg["t"])] = self.pieces[int(msg["t"])] = base64.b64decode(msg["b"])
                    if log is not None and "lp" in msg:  # before the token: its consumer reads the entry
                        for alt, _, raw in msg["top"]:
                            self.pieces[int(alt)] = base64.b64decode(raw)
                        log.entries.append((int(msg["t"]), float(msg["lp"]),
                                            [(int(a), float(lp)) for a, lp, _ in msg["top"]]))
                    if not halt.is_set():
                        tokens.put(int(msg["t"]))
                elif "end" in msg:
                    break
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which raises it
            tokens.put(exc)
        tokens.put(None)
