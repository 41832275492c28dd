"""Datasets: read many formats, validate, measure, split, convert and store them (torch-free).

- :mod:`.formats`    detect a file's format and stream canonical examples (OpenAI chat JSONL)
- :mod:`.containers` read JSONL, JSON arrays, CSV/TSV, Parquet, Arrow, HF dataset folders row by row
- :mod:`.schemas`    Alpaca, ShareGPT, prompt/completion, classification, extraction, DPO -> canonical
- :mod:`.rules`      the validation rules: kind, severity, hint (and :class:`Problem`)
- :mod:`.validate`   stream a file through the rules into a :class:`ValidationReport`
- :mod:`.tokens`     token counters (tiktoken for OpenAI models, the HF tokenizer for local ones)
- :mod:`.stats`      token lengths, histogram vs a cutoff, messages, labels, duplicates
- :mod:`.labels`     the label of classification-like examples
- :mod:`.split`      deterministic, stratified, leak-free train/val/test splits
- :mod:`.export`     canonical -> OpenAI JSONL, Alpaca, ShareGPT
- :mod:`.store`      the workspace's ``datasets/<name>/`` folders and the ``datasets`` table

Nothing here imports torch & co. at module level; ``datasets`` (HF) is imported only inside
the function that reads a local HF dataset, transformers only inside the HF token counter.
"""
