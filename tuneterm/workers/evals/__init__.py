"""Eval execution (the ML side): local batched backends, remote backends, scoring, the runner."""
