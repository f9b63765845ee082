"""The `rlvr` command line: `main.py` parses it (train, plot, serve, status) and registers the
other commands, one module each: `validate` (the recipe, its plugins' options, its data),
`rewards`, `evaluate` (eval, sample), `doctor`, `export`."""
