"""Rewards: the verifier worker (`worker`: a child process with hard timeouts), the group of
workers a run scores with (`group`), the `code` sandbox, the plugin conformance kit, and the
built-in verifiers (`builtin/`, registered like any plugin; names resolve in `rlvr.plugins`)."""
