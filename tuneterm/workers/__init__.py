"""The ML side: everything here may import torch, transformers, peft, bitsandbytes, datasets.

Nothing outside this package imports it at module level (see DESIGN.md, Layers).
"""

import os

# Quiet, offline-friendly defaults for the libraries we drive; a user's own setting wins.
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
