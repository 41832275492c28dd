"""Eval specs, data, caching, statistics and reports (torch-free).

The ML side that runs models lives in ``tuneterm.workers.evals``.
"""
