"""The deploy files, validated without Docker or a cluster: Compose renders the compose file (and refuses a broken
one), kubernetes-validate --strict checks every manifest, KEDA's ScaledObjects are checked against KEDA's
specification here (kubernetes-validate has no schema for them), and every probe command of the Dockerfile, the
compose file and k8s/ runs through the image's entry point. tests/e2e/test_compose_processes.py runs the compose
file's api and worker commands for real."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.settings import Settings
from tests.deploy_files import (
    COMPOSE_FILE,
    COMPOSE_REQUIRED,
    K8S,
    ROOT,
    compose,
    compose_model,
    dockerfile_env,
    dockerfile_exec_form,
    dockerfile_final_stage,
    entry_point_argv,
    k8s_docs,
    k8s_files,
    pod_specs,
)
from worker.factory import create_celery
from worker.queues import QUEUES

KUBERNETES_VALIDATE = Path(sys.executable).parent / "kubernetes-validate"


# --- compose ----------------------------------------------------------------------------------------------------

def test_compose_file_is_valid() -> None:
    done = compose("config", "-q")
    assert done.returncode == 0, done.stderr


def test_compose_refuses_to_start_without_the_secrets_it_requires() -> None:
    for missing in COMPOSE_REQUIRED:
        done = compose("config", "-q", env={k: v for k, v in COMPOSE_REQUIRED.items() if k != missing})
        assert done.returncode != 0
        assert missing in done.stderr


@pytest.mark.parametrize("breakage", [
    ("    image: redis:7.4-alpine\n", "    image: redis:7.4-alpine\n    restart_policy: always\n"),  # no such key
    ("        condition: service_healthy\n", "        condition: service_happy\n"),  # no such condition
    ("  flower:\n", "  flower:\n    depends_on: [no-such-service]\n"),
])
def test_a_broken_compose_file_fails_validation(tmp_path: Path, breakage: tuple[str, str]) -> None:
    text = COMPOSE_FILE.read_text()
    assert breakage[0] in text
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(text.replace(breakage[0], breakage[1], 1))
    done = compose("config", "-q", file=broken)
    assert done.returncode != 0, f"Compose accepted {breakage[1]!r}"


def test_compose_services_are_wired_for_durability_and_scale() -> None:
    services = compose_model()["services"]
    assert {"redis", "s3", "s3-bucket", "api", "worker", "flower"} <= set(services)
    redis_cmd = services["redis"]["command"]
    assert redis_cmd[redis_cmd.index("--appendonly") + 1] == "yes"
    assert any(v["target"] == "/data" for v in services["redis"]["volumes"])
    worker = services["worker"]
    assert "container_name" not in worker and "ports" not in worker  # so `--scale worker=N` can run N of them
    assert worker["deploy"]["replicas"] >= 2
    assert services["api"]["command"][:3] == ["gunicorn", "--config", "python:api.gunicorn_conf"]
    assert services["flower"]["environment"]["FLOWER_BASIC_AUTH"] == COMPOSE_REQUIRED["FLOWER_BASIC_AUTH"]
    for name, service in services.items():
        for dep, how in service.get("depends_on", {}).items():
            wanted = "service_completed_successfully" if dep == "s3-bucket" else "service_healthy"
            assert how["condition"] == wanted, (name, dep)
            assert "disable" not in services[dep].get("healthcheck", {}) or dep == "s3-bucket"
        if name != "s3-bucket":
            assert service["healthcheck"]["test"][0] == "CMD", name


def test_flower_api_is_never_opened_without_credentials() -> None:
    names = set(dockerfile_env())
    for service in compose_model()["services"].values():
        names |= set(service.get("environment", {}))
    for _, spec in pod_specs():
        names |= {e["name"] for c in spec["containers"] for e in c.get("env", [])}
    names |= {k for _, d in k8s_docs() if d["kind"] in ("ConfigMap", "Secret")
              for k in {**d.get("data", {}), **d.get("stringData", {})}}
    assert "FLOWER_BASIC_AUTH" in names
    assert "FLOWER_UNAUTHENTICATED_API" not in names


def test_worker_grace_periods_cover_the_hard_time_limit() -> None:
    configmap = next(d for _, d in k8s_docs() if d["kind"] == "ConfigMap")
    hard_limit = Settings.from_env(configmap["data"]).hard_time_limit_s
    grace = compose_model()["services"]["worker"]["stop_grace_period"]
    assert _seconds(grace) > hard_limit
    for name, spec in pod_specs():
        if name.startswith("Deployment/worker-"):
            assert spec["terminationGracePeriodSeconds"] > hard_limit, name


def _seconds(duration: str) -> float:
    m = re.fullmatch(r"(?:(\d+)m)?(?:(\d+)s)?", duration)
    assert m and duration, duration
    return int(m.group(1) or 0) * 60 + int(m.group(2) or 0)


# --- Dockerfile -------------------------------------------------------------------------------------------------

def test_dockerfile_runs_non_root_exec_form_with_a_healthcheck() -> None:
    stage = dockerfile_final_stage()
    base = next(rest for name, rest in stage if name == "FROM")
    assert "-slim" in base
    user = [rest for name, rest in stage if name == "USER"]
    assert user and user[-1].split(":")[0] not in ("0", "root")
    assert dockerfile_exec_form("CMD") == compose_model()["services"]["api"]["command"]
    assert dockerfile_exec_form("HEALTHCHECK")[:2] == ["repobuild", "probe"]
    assert not [rest for name, rest in stage if name == "ENTRYPOINT"]  # the command is PID 1, no shell in between
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    assert "*" in ignored and "!pipeline/" in ignored


# --- Kubernetes -------------------------------------------------------------------------------------------------

def _validate(*paths: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(KUBERNETES_VALIDATE), "--strict", "--quiet", *map(str, paths)],
                          capture_output=True, text=True, timeout=120)


def test_every_manifest_passes_kubernetes_validate_strict() -> None:
    done = _validate(*k8s_files())
    assert done.returncode == 0, done.stdout + done.stderr


def test_kubernetes_validate_strict_fails_on_an_unknown_field(tmp_path: Path) -> None:
    broken = tmp_path / "api.yaml"
    broken.write_text((K8S / "api.yaml").read_text().replace("      terminationGracePeriodSeconds: 40\n",
                                                               "      terminationGracePeriodSecond: 40\n", 1))
    done = _validate(broken)
    assert done.returncode != 0
    assert "terminationGracePeriodSecond" in done.stdout + done.stderr


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl renders the kustomization; the files are "
                    "validated one by one above without it")
def test_the_kustomization_renders_and_validates(tmp_path: Path) -> None:
    listed = yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"]
    assert set(listed) | {"secret.template.yaml", "hpa.yaml"} == {p.name for p in k8s_files()}
    rendered = subprocess.run(["kubectl", "kustomize", str(K8S)], capture_output=True, text=True, timeout=60)
    assert rendered.returncode == 0, rendered.stderr
    out = tmp_path / "rendered.yaml"
    out.write_text(rendered.stdout)
    done = _validate(out)
    assert done.returncode == 0, done.stdout + done.stderr


def _worker_queue(spec: dict[str, Any]) -> str:
    command = spec["containers"][0]["command"]
    assert command[:2] == ["repobuild", "worker"], command
    return str(command[command.index("-Q") + 1])


def test_workers_prefetch_one_message_per_process_and_ack_late() -> None:
    # what makes a queue's list length the backlog KEDA should scale on, and a SIGTERM'd or killed pod lose nothing
    conf = create_celery(Settings(redis_url="redis://127.0.0.1:1/0")).conf
    assert conf.worker_prefetch_multiplier == 1
    assert conf.task_acks_late and conf.task_reject_on_worker_lost


def test_one_worker_deployment_per_queue_with_probes_limits_and_a_budget() -> None:
    workers = {name: spec for name, spec in pod_specs() if name.startswith("Deployment/worker-")}
    assert sorted(_worker_queue(spec) for spec in workers.values()) == sorted(QUEUES)
    for name, spec in workers.items():
        container = spec["containers"][0]
        assert container["livenessProbe"]["exec"]["command"][:3] == ["repobuild", "probe", "worker"], name
        assert {"requests", "limits"} <= set(container["resources"]), name
        assert container["resources"]["limits"]["memory"], name
    budgets = {d["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"] for _, d in k8s_docs()
               if d["kind"] == "PodDisruptionBudget"}
    assert {name.split("/")[1] for name in workers} | {"api"} <= budgets


# KEDA's ScaledObject specification (keda.sh/docs/<version>/reference/scaledobject-spec) and its `redis` scaler
# (…/scalers/redis-lists): the fields each takes, and which are required.
SCALED_OBJECT_SPEC = {"scaleTargetRef", "pollingInterval", "cooldownPeriod", "initialCooldownPeriod",
                      "idleReplicaCount", "minReplicaCount", "maxReplicaCount", "fallback", "advanced", "triggers"}
SCALE_TARGET_REF = {"apiVersion", "kind", "name", "envSourceContainerName"}
ADVANCED = {"restoreToOriginalReplicaCount", "horizontalPodAutoscalerConfig", "scalingModifiers"}
HPA_CONFIG = {"name", "behavior"}
TRIGGER = {"type", "metadata", "name", "useCachedMetrics", "authenticationRef", "metricType"}
REDIS_LIST_METADATA = {"address", "host", "port", "usernameFromEnv", "passwordFromEnv", "listName", "listLength",
                       "activationListLength", "enableTLS", "unsafeSsl", "databaseIndex", "addressFromEnv",
                       "hostFromEnv", "portFromEnv"}


def keda_problems(doc: dict[str, Any], deployments: dict[str, dict[str, Any]], services: set[str]) -> list[str]:
    """What is wrong with one ScaledObject, by KEDA's specification and by what it must scale here."""
    problems = []
    spec = doc.get("spec", {})
    if doc.get("apiVersion") != "keda.sh/v1alpha1":
        problems.append(f"apiVersion {doc.get('apiVersion')}")
    for where, given, allowed in (("spec", spec, SCALED_OBJECT_SPEC),
                                  ("scaleTargetRef", spec.get("scaleTargetRef", {}), SCALE_TARGET_REF),
                                  ("advanced", spec.get("advanced", {}), ADVANCED),
                                  ("horizontalPodAutoscalerConfig",
                                   spec.get("advanced", {}).get("horizontalPodAutoscalerConfig", {}), HPA_CONFIG)):
        problems += [f"unknown field {where}.{k}" for k in set(given) - allowed]
    for k in ("pollingInterval", "cooldownPeriod", "minReplicaCount", "maxReplicaCount"):
        if k in spec and not isinstance(spec[k], int):
            problems.append(f"{k} must be an integer")
    if spec.get("minReplicaCount", 0) > spec.get("maxReplicaCount", 100):
        problems.append("minReplicaCount above maxReplicaCount")
    target = spec.get("scaleTargetRef", {}).get("name")
    if target not in deployments:
        problems.append(f"scaleTargetRef.name {target!r} is no Deployment in k8s/")
    triggers = spec.get("triggers") or []
    if not triggers:
        problems.append("no triggers")
    for t in triggers:
        problems += [f"unknown trigger field {k}" for k in set(t) - TRIGGER]
        meta = t.get("metadata", {})
        if t.get("type") != "redis":
            problems.append(f"trigger type {t.get('type')}: the queues are Redis lists")
        problems += [f"unknown redis trigger metadata {k}" for k in set(meta) - REDIS_LIST_METADATA]
        problems += [f"redis trigger metadata {k} is required" for k in ("listName", "listLength") if k not in meta]
        problems += [f"redis trigger metadata {k} must be a string" for k, v in meta.items() if not isinstance(v, str)]
        if not str(meta.get("listLength", "")).isdigit():
            problems.append("listLength must be a whole number")
        host, _, port = str(meta.get("address", "")).rpartition(":")
        # a Service name, or a pod of a headless one (redis-0.redis.<namespace>.svc…)
        if not port.isdigit() or not any(label in services for label in host.split(".")[:2]):
            problems.append(f"address {meta.get('address')!r} is not host:port of the Redis Service")
        if target in deployments and meta.get("listName") != _worker_queue(deployments[target]):
            problems.append(f"listName {meta.get('listName')!r} is not the queue Deployment {target} consumes")
    return problems


def _keda_inputs() -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]], set[str]]:
    docs = [d for _, d in k8s_docs()]
    scaled = [d for d in docs if d["kind"] == "ScaledObject"]
    deployments = {n.split("/")[1]: s for n, s in pod_specs() if n.startswith("Deployment/worker-")}
    services = {d["metadata"]["name"] for d in docs if d["kind"] == "Service"}
    return scaled, deployments, services


def test_keda_scaled_objects_follow_the_keda_spec_and_scale_each_queue() -> None:
    scaled, deployments, services = _keda_inputs()
    assert sorted(d["spec"]["triggers"][0]["metadata"]["listName"] for d in scaled) == sorted(QUEUES)
    for doc in scaled:
        assert keda_problems(doc, deployments, services) == [], doc["metadata"]["name"]


def test_the_keda_check_catches_what_keda_would_refuse() -> None:
    scaled, deployments, services = _keda_inputs()
    doc = yaml.safe_load(yaml.safe_dump(scaled[0]))
    doc["spec"]["pollingIntervall"] = 15
    meta = doc["spec"]["triggers"][0]["metadata"]
    meta["listLength"] = 2
    meta["listName"] = "celery"
    del meta["address"]
    problems = keda_problems(doc, deployments, services)
    assert "unknown field spec.pollingIntervall" in problems
    assert "redis trigger metadata listLength must be a string" in problems
    assert any(p.startswith("listName 'celery'") for p in problems)
    assert any(p.startswith("address") for p in problems)


# --- probe commands through the image's entry point ---------------------------------------------------------------

def probe_commands() -> dict[str, list[str]]:
    """Every health check command of the deploy files that runs the image (Redis' and SeaweedFS' are theirs)."""
    found = {"Dockerfile HEALTHCHECK": dockerfile_exec_form("HEALTHCHECK")}
    for name, service in compose_model()["services"].items():
        test = service.get("healthcheck", {}).get("test")
        if test and service.get("image", "").startswith("repobuild"):
            found[f"compose {name}"] = test[1:]
    for workload, spec in pod_specs():
        for c in spec["containers"]:
            for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
                command = c.get(kind, {}).get("exec", {}).get("command")
                if command and c["image"].startswith("repobuild"):
                    found[f"{workload} {kind}"] = command
    return found


def test_every_probe_command_exists_in_the_image_entry_point() -> None:
    commands = probe_commands()
    assert {"compose worker", "compose api", "compose flower", "Deployment/worker-cpu livenessProbe"} <= set(commands)
    for where, argv in commands.items():
        assert argv[:2] == ["repobuild", "probe"], where
        done = subprocess.run([*entry_point_argv(argv), "--help"], capture_output=True, text=True, timeout=60,
                              env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)})
        assert done.returncode == 0 and "usage: repobuild probe" in done.stdout, (where, done.stderr)


def test_the_api_command_loads_its_gunicorn_config_and_app() -> None:
    argv = compose_model()["services"]["api"]["command"]
    done = subprocess.run([*entry_point_argv(argv[:-1]), "--check-config", argv[-1]], capture_output=True,
                          text=True, timeout=120, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT),
                                                       **{k: v for k, v in dockerfile_env().items() if k != "PATH"},
                                                       "REPOBUILD_REDIS_URL": "redis://127.0.0.1:1/0"})
    assert done.returncode == 0, done.stdout + done.stderr
