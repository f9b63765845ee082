"""Agent training runs through the real stack on the tiny tool-calling model:

* out of process: `rollout.agent: external`; two separate Python processes take episodes
  over HTTP (`GET /v1/episodes/next`), one runs them with the `openai` client (model name
  `rlvr:<episode>`) and posts rewards, the other takes three episodes, never posts and exits. The run
  trains on the first one's episodes; the second one's are dropped at the deadline and
  counted, and the run goes on;
* untrusted agent code in process (engine and trainer colocated): an agent that raises, hangs
  past the deadline, blocks its event loop, returns garbage or never calls the endpoint fails
  only its episodes (each counted by kind); the blocked worker is replaced; the run completes.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from rlvr.run.metrics import read_metrics
from tests.helpers.runs import REPO, read_status, run_short

pytestmark = pytest.mark.timeout(900)

AGENT_RECIPE = os.path.join(REPO, "recipes", "tiny-agent-cpu.yaml")
SMALL = ["data.prompts_per_step=4", "rollout.n=4", "eval.num_prompts=0", "logging.samples_per_step=4",
         "checkpoint.save_final=false"]

OUTSIDE_AGENT = textwrap.dedent("""
    import json, sys, threading, time
    import httpx, openai
    from rlvr.agent.examples import CALC

    status_file, mode = sys.argv[1], sys.argv[2]
    url = None
    while url is None:  # the run writes its endpoint's URL into status.json
        try:
            status = json.load(open(status_file))
            url = status.get("agent_url")
            if status.get("state") in ("completed", "failed", "stopped"):
                sys.exit(0)
        except (OSError, ValueError):
            pass
        time.sleep(0.2)
    http = httpx.Client(base_url=url, timeout=60)
    client = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0)
    done = []

    def worker():  # an agent loop: take an episode, run it, post its reward
        while True:
            try:
                r = http.get("/v1/episodes/next")
            except httpx.TransportError:  # the run has stopped its endpoint
                return
            if r.status_code == 204:
                try:
                    if json.load(open(status_file))["state"] != "running":
                        return
                except (OSError, ValueError, KeyError):
                    pass
                time.sleep(0.05)
                continue
            episode = r.json()
            done.append(episode["episode_id"])
            if mode == "silent":  # takes three episodes, never posts their rewards, and is gone
                if len(done) == 3:
                    return
                continue
            try:
                reply = client.chat.completions.create(model=episode["model"], messages=episode["row"]["messages"],
                                                       tools=[CALC])
                reward = 1.0 if reply.choices[0].message.tool_calls else 0.0  # this agent rewards using the tool
                http.post(f"/v1/episodes/{episode['episode_id']}/reward", json={"reward": reward})
            except (httpx.TransportError, openai.APIConnectionError):
                return

    threads = [threading.Thread(target=worker) for _ in range(8 if mode == "answer" else 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print("episodes", len(done))
""")


def start_agent(tmp_path, run_dir: str, mode: str) -> subprocess.Popen:
    script = tmp_path / "outside_agent.py"
    script.write_text(OUTSIDE_AGENT)
    return subprocess.Popen([sys.executable, str(script), os.path.join(run_dir, "status.json"), mode],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_outside_agents_train_the_run_and_silent_ones_are_dropped(ray_cluster, tools_model_dir, tmp_path):
    run_dir = os.path.join(str(tmp_path), "external")
    agents: list[subprocess.Popen] = []

    def launch():  # once the run folder exists, as a user's agent would be started beside it
        while not os.path.isdir(run_dir):
            time.sleep(0.1)
        agents.extend([start_agent(tmp_path, run_dir, "answer"), start_agent(tmp_path, run_dir, "silent")])

    starter = threading.Thread(target=launch, daemon=True)
    starter.start()
    try:
        summary = run_short(tmp_path, "external", [*SMALL, "trainer.total_steps=3", "rollout.agent=external",
                                                   "rollout.agent_timeout_s=8"], recipe=AGENT_RECIPE)
    finally:
        starter.join(timeout=5)
        outputs = []
        for p in agents:
            try:
                outputs.append(p.communicate(timeout=60)[0])
            except subprocess.TimeoutExpired:
                p.kill()
                outputs.append(p.communicate()[0])
    print("outside agents:", outputs)
    assert read_status(summary["run_dir"])["state"] == "completed"
    assert "episodes" in outputs[0] and int(outputs[0].split()[-1]) > 0, outputs
    assert outputs[1].split()[-2:] == ["episodes", "3"], outputs
    steps = [r for r in read_metrics(summary["run_dir"]) if r.get("step", 0) >= 1]
    print([{k: v for k, v in r.items() if k.startswith(("agent/", "timing/generate"))} for r in steps])
    assert len(steps) == 3
    assert sum(r["agent/dropped"] for r in steps) == sum(r["agent/failures/timeout"] for r in steps) == 3
    assert sum(r["agent/episodes"] for r in steps) == 3 * 16 - 3
    assert any(r["samples/trained"] > 0 for r in steps)
    assert all(r["agent/episodes"] + r["agent/dropped"] == 16 for r in steps)


def test_broken_agent_code_fails_only_its_episodes(ray_cluster, tools_model_dir, tmp_path):
    from tests.helpers.agents import BLOCK_FLAG

    if os.path.exists(BLOCK_FLAG):
        os.remove(BLOCK_FLAG)
    summary = run_short(tmp_path, "chaos", [*SMALL, "data.prompts_per_step=16", "trainer.total_steps=2",
                                            "rollout.agent=tests.helpers.agents:chaos", "rollout.agent_timeout_s=6",
                                            "rollout.agent_workers=2", "cluster.placement=colocate"],
                        recipe=AGENT_RECIPE)
    assert read_status(summary["run_dir"])["state"] == "completed"
    steps = [r for r in read_metrics(summary["run_dir"]) if r.get("step", 0) >= 1]
    total = {k: sum(r[k] for r in steps) for k in steps[0] if k.startswith("agent/failures/")}
    print("agent failures over the run:", total)
    assert all(v > 0 for v in total.values()), total  # timeout, exception, invalid, no_calls
    assert sum(r["agent/episodes"] for r in steps) > 0 and any(r["samples/trained"] > 0 for r in steps)
    assert steps[-1]["faults/agent_restarts"] >= 1  # the worker whose event loop was blocked
