"""Static checks of the cluster and container files (cluster/, docker/).

No network, no Ray cluster, no Docker: the files are parsed and checked against what the
tools that read them accept (Ray's launcher schema, KubeRay's required fields, bash) and
against this repo (recipes, pyproject extras, the default service port).
"""

from __future__ import annotations

import copy
import glob
import json
import os
import re
import shlex
import subprocess

import pytest
import yaml

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CLUSTER = os.path.join(REPO, "cluster")
DOCKER = os.path.join(REPO, "docker")
DOCKERFILES = ["Dockerfile", "Dockerfile.cpu"]
IMAGE_REPO_DIR = "/home/rlvr/rlvr"  # where the images keep the repo (their WORKDIR)

# RayJobSpec / RayClusterSpec fields of KubeRay's ray.io/v1 API (v1.7, apis/ray/v1/*_types.go):
# a misspelt key would be dropped by the API server, not rejected.
RAYJOB_SPEC_KEYS = {
    "activeDeadlineSeconds", "backoffLimit", "rayClusterSpec", "submitterPodTemplate", "metadata",
    "clusterSelector", "submitterConfig", "managedBy", "deletionStrategy", "entrypoint",
    "runtimeEnvYAML", "jobId", "submissionMode", "entrypointResources", "entrypointNumCpus",
    "entrypointNumGpus", "ttlSecondsAfterFinished", "preRunningDeadlineSeconds",
    "shutdownAfterJobFinishes", "suspend",
}
RAYCLUSTER_SPEC_KEYS = {
    "upgradeStrategy", "authOptions", "suspend", "managedBy", "autoscalerOptions",
    "headServiceAnnotations", "enableInTreeAutoscaling", "gcsFaultToleranceOptions",
    "historyServerOptions", "networkPolicy", "tlsOptions", "headGroupSpec", "rayVersion",
    "workerGroupSpecs",
}


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def _yaml(name: str):
    return yaml.safe_load(_read(os.path.join(CLUSTER, name)))


def _pyproject_extras() -> set[str]:
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        return set(tomllib.load(f)["project"]["optional-dependencies"])


def _extras_named(text: str) -> set[str]:
    """Extras in `pip install -e '.[a,b]'`-style requirements."""
    return {e.strip() for group in re.findall(r"\.\[([\w,\- ]+)\]", text) for e in group.split(",")}


def _dockerfile(name: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs: continuations joined, comment lines dropped."""
    out, buf = [], ""
    for line in _read(os.path.join(DOCKER, name)).splitlines():
        if line.lstrip().startswith("#"):
            continue  # comments, also those between continuation lines
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        if buf.strip():
            word, _, rest = buf.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
        buf = ""
    assert not buf, f"{name}: dangling line continuation"
    return out


def _args(instructions) -> dict[str, str]:
    return dict(a.split("=", 1) for k, a in instructions if k == "ARG" and "=" in a)


def test_every_yaml_parses():
    files = sorted(glob.glob(os.path.join(CLUSTER, "*.yaml")))
    assert {os.path.basename(f) for f in files} >= {"aws.yaml", "kuberay-rayjob.yaml"}
    for path in files:
        assert isinstance(yaml.safe_load(_read(path)), dict), path


def test_aws_yaml_validates_against_installed_rays_schema():
    ray = pytest.importorskip("ray")
    cfg = _yaml("aws.yaml")
    with open(os.path.join(os.path.dirname(ray.__file__), "autoscaler", "ray-schema.json")) as f:
        schema = json.load(f)
    try:
        import jsonschema
    except ImportError:  # Ray depends on jsonschema, but just in case: the top-level keys by hand
        assert set(schema["required"]) <= set(cfg) <= set(schema["properties"])
    else:
        jsonschema.validate(cfg, schema)
        with pytest.raises(jsonschema.ValidationError):  # the schema does reject unknown keys
            jsonschema.validate({**cfg, "setup_command": []}, schema)
        # and what `ray up` runs before launching anything: defaults merged, then checked
        from ray.autoscaler._private.util import prepare_config, validate_config

        validate_config(prepare_config(copy.deepcopy(cfg)))
    assert cfg["head_node_type"] in cfg["available_node_types"]
    assert any(t["resources"].get("GPU", 0) > 0 for t in cfg["available_node_types"].values())


def test_aws_yaml_syncs_the_repo_installs_gpu_extra_and_uses_token_auth():
    cfg = _yaml("aws.yaml")
    assert cfg["file_mounts"]["~/rlvr"] == "."  # `ray up` runs from the repo root
    excluded = {p.strip("/") for p in cfg["rsync_exclude"]}
    assert {".venv", "runs", ".cache"} <= excluded
    setup = " ".join(cfg["setup_commands"])
    assert "pip install -e '.[gpu]'" in setup
    assert _extras_named(setup) <= _pyproject_extras()
    for cmd in (cfg["head_start_ray_commands"][-1], cfg["worker_start_ray_commands"][-1]):
        assert "RAY_AUTH_MODE=token ray start" in cmd
    assert "~/.ray/auth_token" in cfg["file_mounts"]
    assert cfg["docker"]["image"] == _rayjob_image()  # the same pushed docker/Dockerfile image


def _rayjob_image() -> str:
    spec = _yaml("kuberay-rayjob.yaml")["spec"]["rayClusterSpec"]
    return spec["headGroupSpec"]["template"]["spec"]["containers"][0]["image"]


def test_rayjob_has_what_kuberay_requires():
    job = _yaml("kuberay-rayjob.yaml")
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    assert job["metadata"]["name"]
    spec = job["spec"]
    assert set(spec) <= RAYJOB_SPEC_KEYS, set(spec) - RAYJOB_SPEC_KEYS
    assert spec["entrypoint"].startswith("rlvr train ")
    assert spec["shutdownAfterJobFinishes"] is True
    cluster = spec["rayClusterSpec"]
    assert set(cluster) <= RAYCLUSTER_SPEC_KEYS, set(cluster) - RAYCLUSTER_SPEC_KEYS
    assert cluster["authOptions"]["mode"] == "token"
    head = cluster["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert head["image"]
    ports = {p["containerPort"]: p["name"] for p in head["ports"]}
    assert ports[_default_service_port()]  # the head Service exposes rlvr's status API
    for name in ports.values():  # Kubernetes port names: <= 15 chars, lowercase, digits, '-'
        assert re.fullmatch(r"[a-z0-9]([a-z0-9-]{0,13}[a-z0-9])?", name), name
    groups = cluster["workerGroupSpecs"]
    assert groups and all(g["groupName"] and g["template"]["spec"]["containers"][0]["image"] for g in groups)
    gpus = [g["template"]["spec"]["containers"][0]["resources"]["limits"].get("nvidia.com/gpu") for g in groups]
    assert any(int(n or 0) > 0 for n in gpus)
    # the Ray in the image is the version the operator is told about
    assert cluster["rayVersion"] == _args(_dockerfile("Dockerfile"))["RAY_VERSION"]


def test_rayjob_entrypoint_is_a_valid_recipe_command():
    from rlvr.config import load_recipe

    argv = shlex.split(_yaml("kuberay-rayjob.yaml")["spec"]["entrypoint"])
    assert argv[:2] == ["rlvr", "train"]
    recipe = argv[2]
    assert recipe.startswith(IMAGE_REPO_DIR + "/")  # absolute: the job's cwd is not the repo
    assert ("WORKDIR", IMAGE_REPO_DIR) in _dockerfile("Dockerfile")
    cfg = load_recipe(os.path.join(REPO, os.path.relpath(recipe, IMAGE_REPO_DIR)), argv[3:])
    assert os.path.isabs(cfg.run.output_dir) and os.path.isabs(cfg.model.cache_dir)  # shared storage
    assert cfg.service.enabled


def test_every_recipe_named_exists():
    files = glob.glob(os.path.join(CLUSTER, "*")) + glob.glob(os.path.join(DOCKER, "*"))
    named = {m for path in files for m in re.findall(r"recipes/[\w.-]+\.ya?ml", _read(path))}
    assert "recipes/tiny-cpu.yaml" in named
    for recipe in named:
        assert os.path.isfile(os.path.join(REPO, recipe)), recipe


def test_slurm_script_is_valid_bash_and_runs_the_recipe():
    path = os.path.join(CLUSTER, "slurm.sbatch")
    proc = subprocess.run(["bash", "-n", path], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    text = _read(path)
    lines = text.splitlines()
    assert lines[0].startswith("#!")
    # sbatch reads #SBATCH lines only up to the first command
    first_cmd = next(i for i, line in enumerate(lines) if line.strip() and not line.startswith("#"))
    assert [i for i, line in enumerate(lines) if line.startswith("#SBATCH")][-1] < first_cmd
    assert "ray start --head" in text and "--block &" in text
    assert 'export RAY_ADDRESS=' in text and "export RAY_AUTH_MODE=token" in text
    assert re.search(r'rlvr train "\$RECIPE" .*"\$@"', text)
    assert "ray stop" not in text.replace("never `ray stop`", "")  # it would kill every Ray on a node


@pytest.mark.parametrize("name", DOCKERFILES)
def test_dockerfile_uses_real_extras_and_exposes_the_service_port(name):
    instructions = _dockerfile(name)
    kinds = [k for k, _ in instructions]
    assert kinds[0] in ("FROM", "ARG") and "FROM" in kinds
    runs = " ".join(a for k, a in instructions if k == "RUN")
    extras = _extras_named(runs)
    assert extras and extras <= _pyproject_extras(), extras - _pyproject_extras()
    exposed = {int(p.split("/")[0]) for k, a in instructions if k == "EXPOSE" for p in a.split()}
    assert _default_service_port() in exposed
    user = [a for k, a in instructions if k == "USER"]
    assert user and user[-1] not in ("root", "0")
    assert json.loads(dict(instructions)["CMD"]) == ["rlvr", "--help"]
    ignore = _read(os.path.join(DOCKER, name + ".dockerignore")).split()
    assert {".venv", "runs", ".cache"} <= set(ignore)


def test_gpu_dockerfile_is_cuda_with_the_gpu_extra():
    instructions = _dockerfile("Dockerfile")
    base = dict(instructions)["FROM"]
    base = re.sub(r"\$\{(\w+)\}", lambda m: _args(instructions)[m.group(1)], base)
    assert base.startswith("nvidia/cuda:")
    assert "gpu" in _extras_named(" ".join(a for k, a in instructions if k == "RUN"))


def test_cpu_dockerfile_mirrors_make_setup():
    run_args = [a for k, a in _dockerfile("Dockerfile.cpu") if k == "RUN"]
    runs = " ".join(run_args)
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        cpu_extra = tomllib.load(f)["project"]["optional-dependencies"]["cpu"]
    torch_pin = next(r for r in cpu_extra if r.replace(" ", "").startswith("torch=="))
    # the CPU torch wheel (the pin the cpu extra uses), from PyTorch's CPU index, before the extra
    m = re.search(r"pip install (torch==\S+) --index-url https://download\.pytorch\.org/whl/cpu", runs)
    assert m and m.group(1) == torch_pin.replace(" ", "")
    assert m.start() < runs.index("pip install -e '.[cpu]'")
    # and the same CUDA leftovers removed as the Makefile's setup target removes
    make = re.search(r"pip uninstall -y ([\w ]+)", _read(os.path.join(REPO, "Makefile"))).group(1).split()
    commands = [c.strip() for a in run_args for c in a.split("&&")]
    docker = next(c for c in commands if c.startswith("pip uninstall -y")).split()[3:]
    assert set(docker) == set(make)


def test_ray_version_pinned_alike_in_both_images():
    versions = {_args(_dockerfile(n)).get("RAY_VERSION") for n in DOCKERFILES}
    assert len(versions) == 1 and None not in versions


def _default_service_port() -> int:
    from rlvr.config import Config

    return Config().service.port
