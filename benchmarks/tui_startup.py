"""Time to first paint of the workbench, in a clean subprocess, on a fresh workspace.

Each run starts `python -c ...` that imports tuneterm.tui.app and runs TunetermApp headless
(80x24); the clock starts before the import and stops at Textual's ``Ready`` event ("the DOM
is ready and the first frame has been displayed"). A bare Textual app (Header, Static, Footer)
is timed the same way in the same run as the anchor. Also reports whether any of torch & co.
got imported, and the CPU time the process spent until the first frame (all its threads;
steadier than wall time on a shared, loaded machine). Prints one JSON line:

    {"first_paint_ms": median, "runs_ms": [...], "import_ms": median, "cpu_ms": median,
     "bare_textual_ms": median, "bare_cpu_ms": median, "ratio_to_bare": x, "cpu_ratio_to_bare": x,
     "heavy_modules": []}
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile

RUNS = 5
PROBE = r"""
import time, json, sys
t0, c0 = time.perf_counter(), time.process_time()
from tuneterm.tui.app import TunetermApp
t_import = time.perf_counter()

class Probe(TunetermApp):
    def on_ready(self):
        self.painted_at, self.cpu_at = time.perf_counter(), time.process_time()
        self.exit()

app = Probe()
app.run(headless=True, size=(80, 24))
heavy = sorted(m for m in ("torch", "transformers", "peft", "bitsandbytes", "datasets", "accelerate")
               if m in sys.modules)
print(json.dumps({"paint_ms": (app.painted_at - t0) * 1000, "import_ms": (t_import - t0) * 1000,
                  "cpu_ms": (app.cpu_at - c0) * 1000, "heavy": heavy}))
"""

BARE = r"""
import time, json
t0, c0 = time.perf_counter(), time.process_time()
from textual.app import App
from textual.widgets import Footer, Header, Static

class Bare(App):
    def compose(self):
        yield Header()
        yield Static("hello")
        yield Footer()

    def on_ready(self):
        self.painted_at, self.cpu_at = time.perf_counter(), time.process_time()
        self.exit()

app = Bare()
app.run(headless=True, size=(80, 24))
print(json.dumps({"paint_ms": (app.painted_at - t0) * 1000, "cpu_ms": (app.cpu_at - c0) * 1000}))
"""


def main() -> None:
    results, bare = [], []
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, TUNETERM_HOME=os.path.join(tmp, "ws"), TUNETERM_CONFIG=os.path.join(tmp, "c.toml"))

        def run(code: str) -> dict:
            out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
            return json.loads(out.stdout.strip().splitlines()[-1])

        for _ in range(RUNS):  # interleaved, so machine noise hits both alike
            results.append(run(PROBE))
            bare.append(run(BARE))
    paints = [round(r["paint_ms"], 1) for r in results]
    first = statistics.median(paints)
    anchor = statistics.median(r["paint_ms"] for r in bare)
    cpu = statistics.median(r["cpu_ms"] for r in results)
    bare_cpu = statistics.median(r["cpu_ms"] for r in bare)
    print(json.dumps({
        "first_paint_ms": round(first, 1),
        "runs_ms": paints,
        "import_ms": round(statistics.median(r["import_ms"] for r in results), 1),
        "cpu_ms": round(cpu, 1),
        "bare_textual_ms": round(anchor, 1),
        "bare_cpu_ms": round(bare_cpu, 1),
        "ratio_to_bare": round(first / anchor, 2),
        "cpu_ratio_to_bare": round(cpu / bare_cpu, 2),
        "heavy_modules": sorted({m for r in results for m in r["heavy"]}),
    }))


if __name__ == "__main__":
    main()
