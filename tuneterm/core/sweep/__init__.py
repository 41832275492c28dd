"""Budgeted sweeps across training methods (``tuneterm sweep``): search spaces, trial jobs,
successive halving and the leaderboard. Torch-free; trials run as ordinary jobs."""
