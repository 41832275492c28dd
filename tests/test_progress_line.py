"""ProgressLine (a long phase on stderr) and the row estimate it counts against."""

from __future__ import annotations

import io

from tuneterm.core.datasets.containers import row_estimate, rows
from tuneterm.core.progress_line import ProgressLine


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_log_gets_a_line_every_few_seconds_with_an_eta_and_a_last_one():
    out, clock = io.StringIO(), Clock()
    line = ProgressLine("counting tokens", total=888, stream=out, tty=False, every_s=5.0, clock=clock)
    line.note("loading the tokenizer of m")
    line.start()
    for done in range(1, 889):
        clock.now += 2 ** -7  # 6.9 s in all (exact binary steps): a line at 5 s, then the last one
        line.update(done)
    line.close()
    assert out.getvalue().splitlines() == [
        "loading the tokenizer of m ...",
        "counting tokens: 640/888 examples, ETA 2s",  # 640 done in 5 s: 248 left at 128/s
        "counting tokens: 888/888 examples, 7s",
    ]


def test_a_terminal_line_is_redrawn_in_place_and_ended_once():
    out, clock = io.StringIO(), Clock()
    line = ProgressLine("counting tokens", total=10, stream=out, tty=True, clock=clock)
    line.note("loading the tokenizer of m")
    line.start()
    clock.now += 0.25
    line.update(1)  # the first count is drawn at once
    clock.now += 1 / 16
    line.update(2)  # within 0.1 s of the last draw: not drawn
    clock.now += 1 / 16
    line.update(4)
    line.close()
    assert out.getvalue().split("\r") == ["", "loading the tokenizer of m ...\x1b[K",
                                          "counting tokens: 1/10 examples, ETA 2s\x1b[K",
                                          "counting tokens: 4/10 examples, ETA 1s\x1b[K",
                                          "counting tokens: 4/4 examples, 0s\x1b[K\n"]


def test_without_a_total_or_past_an_estimate_the_count_stands_alone():
    out, clock = io.StringIO(), Clock()
    line = ProgressLine("reading", unit="rows", total=2, stream=out, tty=True, clock=clock)
    line.start()
    line.update(3)  # the estimate fell short (a CSV cell over two lines counts once)
    assert out.getvalue() == "\rreading: 3 rows\x1b[K"


def test_row_estimate_counts_what_rows_yields(tmp_path):
    jsonl = tmp_path / "a.jsonl"
    jsonl.write_bytes(b'{"a": 1}\n\n{"a": 2}')  # a blank line and no final newline: still 3 rows
    assert row_estimate(jsonl, "jsonl") == len(list(rows(jsonl, "jsonl"))) == 3
    csv = tmp_path / "a.csv"
    csv.write_text("text,label\nhi,a\n\"two\nlines\",b\n")
    assert row_estimate(csv, "csv") == 3 and len([r for r in rows(csv, "csv") if r[0]]) == 2  # an upper bound
    assert row_estimate(tmp_path / "a.json", "json") is None
