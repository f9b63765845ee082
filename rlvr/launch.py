"""What the driver sets up around the loop: the status service, signal handlers, and
the prompts a model cannot take."""

from __future__ import annotations

import threading

from rlvr.config import Config


def stop_gracefully_on_signals(run_dir: str):
    """SIGTERM (`ray job stop`, a scheduler) or the first Ctrl-C: finish the step, write a
    checkpoint, exit cleanly (a `stop` control request, as the API sends). A second Ctrl-C
    interrupts at once. Returns a function that restores the previous handlers."""
    import signal

    from rlvr.runstate import request_control

    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}

    def handler(signum, frame):
        print(f"[rlvr] {signal.Signals(signum).name}: stopping after this step with a checkpoint "
              "(Ctrl-C again to interrupt now)", flush=True)
        request_control(run_dir, "stop")
        signal.signal(signal.SIGINT, signal.default_int_handler)

    for sig in previous:
        signal.signal(sig, handler)
    return lambda: [signal.signal(sig, h) for sig, h in previous.items()]


def start_service(cfg: Config, status):
    """The status/control API over every run in `run.output_dir`, while this run is active."""
    if not cfg.service.enabled:
        return None
    from rlvr.service.server import resolve_token, start_in_thread

    token = resolve_token(cfg.service.token_env, cfg.service.token_file)
    server = start_in_thread(cfg.run.output_dir, cfg.service.host, cfg.service.port, token)
    status.update(service_url=server.url)
    print(f"[rlvr] status API and dashboard: {server.url}/"
          + ("" if token else f" (control endpoints off: set {cfg.service.token_env} or service.token_file)"), flush=True)
    return server


def model_max_len(cfg: Config, model_path: str) -> int | None:
    """The engines' max sequence length: the model's, or `rollout.engine_kwargs.max_model_len`."""
    from transformers import AutoConfig

    limits = [getattr(AutoConfig.from_pretrained(model_path), "max_position_embeddings", None),
              cfg.rollout.engine_kwargs.get("max_model_len")]
    return min((x for x in limits if x), default=None)


def drop_prompts_too_long(cfg: Config, model_path: str, train_prompts, eval_prompts):
    """Prompts with no room for the completion within the model's max length are skipped
    (counted in `data/skipped_too_long`, with a warning); all of them too long is an error."""
    from rlvr.data import drop_too_long

    max_len = model_max_len(cfg, model_path)
    skipped = {"data/skipped_too_long": 0, "data/eval_skipped_too_long": 0}
    if max_len:
        train_prompts, skipped["data/skipped_too_long"] = drop_too_long(
            train_prompts, cfg.rollout.max_tokens, max_len, cfg.data.train_path)
        eval_prompts, skipped["data/eval_skipped_too_long"] = drop_too_long(
            eval_prompts, cfg.eval.max_tokens or cfg.rollout.max_tokens, max_len, str(cfg.data.eval_path),
            tokens_key="eval.max_tokens" if cfg.eval.max_tokens else "rollout.max_tokens")
        for key, n in skipped.items():
            if n:
                print(f"[rlvr] warning: skipped {n} prompt(s) too long for the model's max length {max_len} "
                      f"with room for the completion ({key})", flush=True)
    return train_prompts, eval_prompts, skipped
