"""Built-in verifiers, registered like any plugin (entry-point group `rlvr.rewards`).

- `math` (`rlvr.reward.builtin.math:MathVerifier`): is the final answer equal to the reference,
  checked with math-verify.
- `format` (`rlvr.reward.builtin.format:FormatVerifier`): is the completion shaped as asked
  (a closed `<think>` block, an answer matching a regex).

A verifier is a plain callable: `verifier(RewardInput) -> Score | float`. It can be
used without rlvr's trainer, Ray or a GPU; see each class's doctest. Importing this
package imports nothing heavy: math-verify is only loaded with `rlvr.reward.builtin.math`.
"""
