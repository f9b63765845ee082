"""Prompts for training and evaluation: `rows` (the built-in arithmetic task, JSONL / Parquet
files, checked), `lines` (a file's lines read with a byte cap), `sources` (any source string:
files, `datasets` folders and hub names, mixtures, a held-out split), `scan` (what `rlvr
validate` reads of the data), `prompts` (chat rendering, prompts too long for the model, the
prompt sampler)."""
