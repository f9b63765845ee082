"""The `code` verifier and its sandbox: scoring, and containment of runaway programs.

Limits are kept tight (2 s, 16 processes) so a failure here cannot hurt the shared
machine. Each containment test checks afterwards that nothing the sandbox started
is still running.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time

import pytest

from rlvr.reward.builtin.code import CodeVerifier, extract_code
from rlvr.reward.sandbox import run_python
from rlvr.types import RewardInput

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="sandbox limits are Linux-only")

LIMITS = dict(timeout_s=2.0, cpu_s=2.0, memory_mb=256, max_file_mb=1, max_procs=16)
ADD_TESTS = json.dumps([{"input": "2 3\n", "output": "5\n"}, {"input": "10 -4\n", "output": "6"},
                        {"input": "0 0\n", "output": "0"}, {"input": "1 1\n", "output": "2"}])


def _sandbox_processes() -> list[str]:
    """Command lines of live processes running a sandboxed script (cwd rlvr-sandbox-*)."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            if "rlvr-sandbox-" in os.readlink(f"/proc/{pid}/cwd"):
                with open(f"/proc/{pid}/stat") as f:
                    if f.read().split(") ")[-1][0] != "Z":
                        found.append(pid)
        except OSError:
            pass
    return found


@pytest.fixture(autouse=True)
def no_leftovers():
    yield
    deadline = time.monotonic() + 2
    while _sandbox_processes() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _sandbox_processes() == []


def _score(code: str, answer: str = ADD_TESTS, **options):
    check = CodeVerifier(**{"timeout_s": 2.0, "max_procs": 16, **options})
    return check(RewardInput(prompt="", completion=code, answer=answer))


def test_correct_wrong_partial():
    good = "<think>read two ints</think>\n```python\na, b = map(int, input().split())\nprint(a + b)\n```"
    score = _score(good)
    assert (score.value, score.parts["passed"], score.parts["total"], score.failure) == (1.0, 4.0, 4.0, None)
    assert _score("```python\nprint(a)\n```").value == 0.0  # NameError: every case fails
    partial = "a, b = map(int, input().split())\nprint(abs(a) + abs(b))"  # wrong only on "10 -4"
    assert _score(partial).parts["passed"] == 3.0 and _score(partial).value == 0.75


def test_assert_mode():
    tests = "assert add(2, 3) == 5\nassert add(-1, 1) == 0\n"
    assert _score("```py\ndef add(a, b):\n    return a + b\n```", tests, mode="assert").value == 1.0
    assert _score("def add(a, b):\n    return a - b\n", tests, mode="assert").value == 0.0


def test_extraction():
    assert extract_code("```\nx\n```\n```python\ny\n```\n```\nz\n```") == "y\n"  # last python block wins
    assert extract_code("text\n```\nz\n```") == "z\n"
    assert extract_code("<think>```python\nthought\n```</think>print(1)") == "print(1)"
    assert extract_code("<think>never closed") is None
    assert _score("<think>never closed").parts == {"unclosed_think": 1.0}


@pytest.mark.parametrize("answer", ["not json", "[]", '{"input": "1"}', '[{"input": "1", "output": 2}]'])
def test_malformed_spec_is_a_failure(answer):
    score = _score("print(1)", answer)
    assert score.value == 0.0 and score.failure


def test_bad_options_fail_at_construction():
    with pytest.raises(ValueError):
        CodeVerifier(mode="java")
    with pytest.raises(TypeError):
        CodeVerifier(timeout_s=0)
    with pytest.raises(TypeError):
        CodeVerifier(max_procs=2.5)


def test_infinite_loop_times_out_and_scores_zero():
    t0 = time.monotonic()
    score = _score("while True: pass", json.dumps([{"input": "", "output": "1"}]), timeout_s=1.0)
    assert time.monotonic() - t0 < 3
    assert score.value == 0.0 and score.failure is None and score.parts["timed_out"] == 1.0


def test_total_timeout_skips_remaining_cases():
    cases = json.dumps([{"input": "", "output": "1"}] * 5)
    score = _score("while True: pass", cases, timeout_s=0.5, total_timeout_s=1.0)
    assert score.value == 0.0 and score.parts["skipped"] >= 2 and score.failure is None


def test_fork_bomb_is_contained():
    r = run_python("import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n", **LIMITS)
    assert r.returncode != 0 and r.wall_s < 4
    if r.proc_limit == "cgroup":  # the pids cgroup refused forks past max_procs
        assert r.timed_out  # the bomb kept retrying until the wall-clock kill
    score = _score("import os\nwhile True: os.fork()", json.dumps([{"input": "", "output": "1"}]))
    assert score.value == 0.0 and score.failure is None


def test_children_that_leave_the_group_are_killed():
    # setsid() escapes a process-group kill; the pids cgroup (when available) still catches it.
    r = run_python("import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(60)\nprint('done')", **LIMITS)
    assert r.stdout == "done\n" and not r.timed_out
    if r.proc_limit != "cgroup":
        pytest.skip("no pids cgroup here: a setsid() child is only bounded by the reward pool's kill")


def test_memory_hog_fails_contained():
    r = run_python("x = bytearray(2 * 1024 ** 3)\nprint('allocated')", **LIMITS)
    assert r.returncode != 0 and "MemoryError" in r.stderr and "allocated" not in r.stdout
    assert _score("x = bytearray(2 * 1024 ** 3)\nprint(1)", json.dumps([{"input": "", "output": "1"}])).value == 0.0


def test_huge_output_is_capped():
    r = run_python("import sys\nwhile True: sys.stdout.write('x' * 65536)", **LIMITS, max_output_bytes=100_000)
    assert r.killed_reason == "output limit" and len(r.stdout) == 100_000 and r.wall_s < 2


def test_file_size_limit():
    r = run_python("open('big', 'w').write('x' * (2 << 20))", **LIMITS)  # max_file_mb=1
    assert r.returncode != 0 and "File too large" in r.stderr


@pytest.mark.parametrize("isolation", ["auto", "fallback"])
def test_temp_dir_is_removed_and_outside_writes_only_fail_under_bwrap(tmp_path, isolation):
    src = (f"import os\nopen('inside.txt', 'w').write('x')\nprint(os.getcwd())\n"
           f"open({str(tmp_path / 'outside.txt')!r}, 'w').write('y')\n")
    r = run_python(src, **LIMITS, isolation=isolation)
    assert "rlvr-sandbox-" in r.stdout and not os.path.exists(r.stdout.strip())  # cwd gone with its files
    if r.isolation == "bwrap":  # the host's /tmp is not in the sandbox
        assert r.returncode != 0 and not (tmp_path / "outside.txt").exists()
    else:  # documented hole of the fallback (see the sandbox docstring): same user, same files
        assert r.returncode == 0, r.stderr
        assert (tmp_path / "outside.txt").read_text() == "y"


@pytest.mark.parametrize("isolation", ["auto", "fallback"])
def test_environment_is_scrubbed(isolation):
    r = run_python("import os, sys\nprint(sorted(os.environ))\nprint(sys.flags.isolated, sys.flags.no_site)",
                   **LIMITS, isolation=isolation)
    names = ["HOME", "LANG", "PATH", "PYTHONIOENCODING", "TMPDIR"]
    if r.isolation == "bwrap":
        names.insert(3, "PWD")  # bwrap always sets PWD to the work dir
    assert r.stdout.splitlines() == [str(names), "1 1"]


@pytest.mark.parametrize("isolation", ["auto", "fallback"])
def test_network_is_isolated_when_the_os_allows(isolation):
    with socket.socket() as server:  # a live listener on the host's loopback
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        src = f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1).close()\nprint('connected')"
        r = run_python(src, **LIMITS, isolation=isolation)
    if r.net_isolated:
        assert r.returncode != 0 and "connected" not in r.stdout
    else:  # unshare not permitted (not root): documented fallback, network reachable
        assert r.stdout == "connected\n"
    if isolation == "auto":  # the verifier runs the same mechanism
        score = _score(src, json.dumps([{"input": "", "output": "connected"}]))
        assert score.parts["net_isolated"] == float(r.net_isolated)
