"""The `rlvr` command line: `main.py` parses it (train, validate, plot, serve, status) and
registers the other commands, one module each: `rewards`, `evaluate` (eval, sample),
`doctor`, `export`."""
