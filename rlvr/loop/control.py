"""How a running loop is told to pause, resume, checkpoint or stop: control requests from the
status API (`rlvr.run.control`), and SIGTERM / Ctrl-C turned into a stop request."""

from __future__ import annotations

import threading
import time


class StopRequested(Exception):
    """SIGTERM or Ctrl-C while the run was still starting (no step to finish yet)."""

    def __init__(self, signum: int):
        import signal

        self.signum = signum
        super().__init__(f"{signal.Signals(signum).name} while starting: stopped before the first step")


def stop_at_once_on_signals():
    """Until the first step there is nothing to finish: SIGTERM / Ctrl-C raise StopRequested
    where the driver is (waiting for actors or resources), and the caller's clean-up frees what
    started. Later signals during that clean-up are ignored. Returns a function that restores
    the previous handlers."""
    import signal

    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}

    def handler(signum, frame):
        for sig in previous:
            signal.signal(sig, signal.SIG_IGN)
        print(f"[rlvr] {signal.Signals(signum).name}: stopping now (the run had not started a step)", flush=True)
        raise StopRequested(signum)

    for sig in previous:
        signal.signal(sig, handler)
    return lambda: [signal.signal(sig, h) for sig, h in previous.items()]


def stop_request_in(error: BaseException) -> StopRequested | None:
    """The StopRequested behind `error` (Ray's C++ wait re-raises a handler's exception as a
    SystemError caused by it), or None."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, StopRequested):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def stop_gracefully_on_signals(run_dir: str):
    """SIGTERM (`ray job stop`, a scheduler) or the first Ctrl-C: finish the step, write a
    checkpoint, exit cleanly (a `stop` control request, as the API sends). A second Ctrl-C
    interrupts at once. Returns a function that restores the previous handlers."""
    import signal

    from rlvr.run.control import request_control

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


def obey_control(inbox, status, checkpoint_now) -> bool:
    """Carry out the control requests that arrived during the step; while paused, wait
    for `resume` (checkpoints and stop still work). Returns True to stop the run."""
    paused = False
    while True:
        for action in inbox.take():
            print(f"[rlvr] control: {action}", flush=True)
            status.update(control=action)
            if action == "stop":
                return True
            if action == "checkpoint":
                checkpoint_now()
            paused = {"pause": True, "resume": False}.get(action, paused)
            status.update(state="paused" if paused else "running", phase="paused" if paused else "between steps")
        if not paused:
            return False
        time.sleep(0.5)
