"""Built-in verifiers, registered like any plugin (entry-point group `rlvr.rewards`).

- `math` (`rlvr.reward.builtin.math:MathVerifier`): is the final answer equal to the reference,
  checked with math-verify.
- `format` (`rlvr.reward.builtin.format:FormatVerifier`): is the completion shaped as asked
  (a closed `<think>` block, an answer matching a regex).
- `length`, `http`, `code`: DAPO's overlong penalty, a remote scoring service, code run against tests.
- `reward_model` (`rlvr.reward.builtin.reward_model:RewardModelVerifier`): a sequence-classification
  reward model's score (batched; torch and transformers load only in the verifier process).
- `judge` (`rlvr.reward.builtin.judge:JudgeVerifier`): an LLM judge behind an OpenAI-compatible
  endpoint, by default the judge engine the run starts (`reward.judge`, `rlvr.agent.judge`).

A verifier is a plain callable: `verifier(RewardInput) -> Score | float`. It can be
used without rlvr's trainer, Ray or a GPU; see each class's doctest. Importing this
package imports nothing heavy: math-verify is only loaded with `rlvr.reward.builtin.math`.
"""
