#!/usr/bin/env python3
"""What the schema check cannot see: the manifests agree with the image and with the
settings they carry, no manifest holds a Secret (applying one would replace the real Secret
with placeholders; `kubectl apply -f deploy/kubernetes/` applies every .yaml, .yml and .json
file of the folder, so the Secret's example ends in .example), no example turns signature
checking on, the scrape annotation names the queue the worker consumes, and a worker's
memory limit holds its worst case: the measured baseline plus the bodies its prefetch window
may hold.
Run from the repository root: python3 deploy/kubernetes/check.py"""
import re
import sys
from pathlib import Path

import yaml  # PyYAML, a dependency of kubernetes-validate

ROOT = Path(__file__).resolve().parents[2]
user = re.search(r"^USER (\d+):(\d+)$", (ROOT / "Dockerfile").read_text(), re.M)
UID, GID = int(user[1]), int(user[2])
HERE = Path(__file__).parent
SECRET_EXAMPLE = "secret.yaml.example"
# What `kubectl apply -f deploy/kubernetes/` reads: every file with one of these endings.
APPLIED = [p for p in sorted(HERE.iterdir()) if p.suffix in (".yaml", ".yml", ".json")]
# Peak RSS draining ordinary events at the default PREFETCH/BATCH_SIZE/PIPELINE_DEPTH
# (BENCHMARKS.md, Pipeline: 36-38 MiB), rounded up.
BASELINE_MIB = 40
DEFAULTS = (ROOT / "src" / "settings" / "defaults.rs").read_text()
DEFAULT_HELD = int(re.search(r'\("max_held_bytes", "(\d+)"\)', DEFAULTS)[1])
DEFAULT_BODY = 256 * 1024  # event::DEFAULT_MAX_BODY_BYTES
UNITS = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024}
problems = []
secrets = {}
for path in APPLIED + [HERE / SECRET_EXAMPLE]:
    for doc in yaml.safe_load_all(path.read_text()):
        if doc and doc["kind"] == "Secret":
            if path.name != SECRET_EXAMPLE:
                problems.append(f"{path.name}: a Secret, which a folder apply would put over "
                                f"the real one; it belongs in {SECRET_EXAMPLE}")
            keys = {**doc.get("data", {}), **doc.get("stringData", {})}
            if "EVENT_SIGNING_KEYS" in keys:
                problems.append(f"{path.name}: sets EVENT_SIGNING_KEYS, which turns signature "
                                "checking on: leave it commented out")
            secrets[doc["metadata"]["name"]] = set(keys) | {"EVENT_SIGNING_KEYS"}


def secret_refs(where, container):
    for env in container.get("env", []):
        ref = env.get("valueFrom", {}).get("secretKeyRef")
        if not ref:
            continue
        if env["name"] == "EVENT_SIGNING_KEYS" and not ref.get("optional"):
            problems.append(f"{where}: EVENT_SIGNING_KEYS must stay optional: true")
        if ref["key"] not in secrets.get(ref["name"], set()):
            problems.append(f"{where}: Secret {ref['name']} key {ref['key']} is not in "
                            f"{SECRET_EXAMPLE}")


def memory_mib(quantity):
    number, unit = re.fullmatch(r"(\d+)(Ki|Mi|Gi)", str(quantity)).groups()
    return int(number) * UNITS[unit]


def memory_fits(where, container, settings):
    """The window holds up to MAX_HELD_BYTES of bodies (src/worker/window.rs); it must hold
    one body of MAX_BODY_BYTES, and with the baseline fit under the limit."""
    held = int(settings.get("MAX_HELD_BYTES", DEFAULT_HELD))
    body = int(settings.get("MAX_BODY_BYTES", DEFAULT_BODY))
    if held < body:
        problems.append(f"{where}: MAX_HELD_BYTES {held} cannot hold one body of "
                        f"MAX_BODY_BYTES ({body}); the worker refuses to start")
    limit = container.get("resources", {}).get("limits", {}).get("memory")
    if limit is None:
        problems.append(f"{where}: no memory limit")
    elif BASELINE_MIB + held / 2**20 > memory_mib(limit):
        problems.append(f"{where}: memory limit {limit} is below the worst case: baseline "
                        f"{BASELINE_MIB} MiB + MAX_HELD_BYTES {held / 2**20:g} MiB")


for path in APPLIED:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    config = {d["metadata"]["name"]: d.get("data", {}) for d in docs if d["kind"] == "ConfigMap"}
    for doc in docs:
        if doc["kind"] not in ("Deployment", "Job"):
            continue
        pod = doc["spec"]["template"]["spec"]
        where = f"{path.name}: {doc['kind']} {doc['metadata']['name']}"
        for c in pod.get("initContainers", []) + pod["containers"]:
            if "/user-sync:" not in c["image"]:
                continue
            ctx = {**pod.get("securityContext", {}), **c.get("securityContext", {})}
            if (ctx.get("runAsUser"), ctx.get("runAsGroup")) != (UID, GID):
                problems.append(f"{where}/{c['name']}: runs as {ctx.get('runAsUser')}:"
                                f"{ctx.get('runAsGroup')}, the image's user is {UID}:{GID}")
            secret_refs(f"{where}/{c['name']}", c)
            settings = {}
            for ref in c.get("envFrom", []):
                settings.update(config.get(ref.get("configMapRef", {}).get("name"), {}))
            grace = pod.get("terminationGracePeriodSeconds", 30)
            timeout_s = int(settings.get("SHUTDOWN_TIMEOUT_MS", "10000")) / 1000
            if c["args"] == ["run"] and grace <= timeout_s:
                problems.append(f"{where}: terminationGracePeriodSeconds {grace} is not above "
                                f"SHUTDOWN_TIMEOUT_MS ({timeout_s:g} s)")
            ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
            if c["args"] == ["run"]:
                addr_port = int(settings.get("HTTP_ADDR", ":0").rsplit(":", 1)[1])
                if ports.get("sync-http") != addr_port:
                    problems.append(f"{where}/{c['name']}: port sync-http is "
                                    f"{ports.get('sync-http')}, HTTP_ADDR says {addr_port}")
            if c["args"] == ["run"] and doc["kind"] == "Deployment":
                service = settings.get("SERVICE_NAME", "").lower()
                queue = settings.get("RABBITMQ_QUEUE", f"{service}_user_events")
                annotations = doc["spec"]["template"].get("metadata", {}).get("annotations", {})
                if annotations.get("user-sync/queue") != queue:
                    problems.append(f"{where}: annotation user-sync/queue is "
                                    f"{annotations.get('user-sync/queue')!r}, the worker "
                                    f"consumes {queue!r} (the alerts join on it)")
            if c["args"] == ["run"]:
                memory_fits(f"{where}/{c['name']}", c, settings)
            if c.get("restartPolicy") == "Always" and "readinessProbe" in c:
                problems.append(f"{where}/{c['name']}: a sidecar's readiness probe would "
                                "take the backend out of its Service")

print("\n".join(problems) or "manifests consistent with the Dockerfile, their settings, memory limits, "
      f"{SECRET_EXAMPLE} and the scrape")
sys.exit(1 if problems else 0)
