"""A prompt prefix that every row of a batch shares (a long system prompt, few-shot examples), computed
once: its key/value cache is laid down by one forward pass and handed to each batch as a fresh cache,
as training already does for packed batches (``train.data.PackedBatch(share_prefix=True)``).

Only where that is exact for the model (:func:`tuneterm.workers.train.data.exact_prefix_sharing`: every
layer attends to the full causal past), so the outputs are those of the plain path. Rows keep their
positions: the suffixes follow the prefix at positions ``len(prefix)...``, padding sits between the
prefix and a shorter suffix (generation) or after it (scoring) and is masked out.
"""

from __future__ import annotations

from typing import Any

import torch

from tuneterm.workers.train.data import common_prefix as shared_length  # the batch's shared prefix, as training finds it

MIN_PREFIX = 32  # tokens: a shorter shared prefix saves less than the extra forward pass costs


def usable(model: Any) -> bool:
    """Whether reusing a prefix's key/value cache gives exactly the model's own outputs."""
    from tuneterm.workers.train.data import exact_prefix_sharing

    config = getattr(model, "config", None)
    return config is not None and exact_prefix_sharing(config)


class PrefixCache:
    """The key/value cache of the last prefix seen, for one model in one state (adapter): make one per
    ``generate``/``loglikelihood`` call, never across adapter switches."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.tokens: list[int] | None = None
        self.layers: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.computed = 0  # prefixes laid down (for tests and benchmarks)

    def cache_for(self, tokens: list[int], rows: int, device: Any) -> Any:
        """A fresh cache holding ``tokens``' keys and values for each of ``rows`` rows."""
        from transformers import DynamicCache

        if tokens != self.tokens:
            cache = DynamicCache()
            with torch.inference_mode():
                self.model(input_ids=torch.tensor([tokens], dtype=torch.long, device=device), cache=cache,
                           use_cache=True, logits_to_keep=1)
            self.layers = [(layer.keys, layer.values) for layer in cache.layers]
            self.tokens = list(tokens)
            self.computed += 1
        return DynamicCache([(k.expand(rows, *k.shape[1:]), v.expand(rows, *v.shape[1:])) for k, v in self.layers])
