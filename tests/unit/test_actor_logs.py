"""Actors' output goes to the run folder (`rlvr.cluster.logs`), checked in a child process
(the redirect rewires file descriptors 1 and 2 of the process that makes the actor)."""

from __future__ import annotations

import os
import subprocess
import sys

from rlvr.cluster import logs

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

CHILD = """
import os, sys
from rlvr.cluster import logs

class Engine:
    def __init__(self, x):
        print("python print", x)
        os.system("echo from a subprocess")
        print("to stderr", file=sys.stderr)

logs.send_actor_output_to(sys.argv[1])
cls = logs.actor_class(Engine, "engine")
assert cls.__name__ == "Engine" and issubclass(cls, Engine)
cls(7)
"""


def test_actor_output_lands_in_the_run_logs_not_the_console(tmp_path):
    proc = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path / "logs")], capture_output=True, text=True,
                          cwd=REPO, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "" and proc.stderr == ""
    (name,) = os.listdir(tmp_path / "logs")
    assert name.startswith("engine-") and name.endswith(".log")
    text = (tmp_path / "logs" / name).read_text()
    assert "python print 7" in text and "from a subprocess" in text and "to stderr" in text


def test_no_log_folder_keeps_the_class_and_an_unwritable_one_changes_nothing(tmp_path):
    class Worker:
        pass

    logs.send_actor_output_to(None)
    assert logs.actor_class(Worker, "worker") is Worker
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert logs.redirect_output(str(blocker / "logs"), "worker") is None  # a file where the folder should be
