"""Prompts for training and evaluation: `rows` (the built-in arithmetic task, JSONL / Parquet
files, checked), `sources` (any source string: files, `datasets` folders and hub names,
mixtures, a held-out split), `prompts` (chat rendering, prompts too long for the model, the
prompt sampler)."""
