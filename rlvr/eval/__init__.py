"""Evaluation: held-out sets during training (`sets.Evaluator`), the `rlvr eval` / `rlvr sample`
runner (`offline`), and pass@k / maj@k / final answers (`metrics`, pure)."""
