#!/usr/bin/env python3
"""What kubernetes-validate cannot check here: the PodMonitors' shape (custom resources),
and that both scrape configurations give every user-sync of deploy/kubernetes/*.yaml the
target labels deploy/alerts.yml groups by (namespace, job, queue, vhost), with the queue
its settings consume. The relabeling is replayed on the Pods of the manifests as Prometheus
would (full-match regexes, `;` separator, empty result removes the label). With promtool
on PATH, scrape.yml is also checked by `promtool check config`, its Kubernetes discovery
swapped for a static target (Debian's promtool is built without it).
Run from the repository root: python3 deploy/prometheus/check.py"""
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml  # PyYAML, a dependency of kubernetes-validate

HERE = Path(__file__).resolve().parent
MANIFESTS = HERE.parent / "kubernetes"
LABELS = ("namespace", "job", "queue", "vhost")
problems = []

# The PodMonitor fields this repository uses or may use; anything else is a typo.
SPEC = {"jobLabel", "namespaceSelector", "podMetricsEndpoints", "podTargetLabels",
        "sampleLimit", "selector", "targetLimit", "attachMetadata", "scrapeProtocols"}
ENDPOINT = {"port", "portNumber", "path", "scheme", "params", "interval", "scrapeTimeout",
            "honorLabels", "honorTimestamps", "relabelings", "metricRelabelings",
            "tlsConfig", "authorization", "basicAuth", "filterRunning", "enableHttp2",
            "followRedirects", "proxyUrl"}
RELABEL = {"sourceLabels", "separator", "targetLabel", "regex", "modulus", "replacement",
           "action"}
ACTIONS = {"replace", "keep", "drop", "hashmod", "labelmap", "labeldrop", "labelkeep",
           "lowercase", "uppercase", "keepequal", "dropequal"}
LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
DURATION = re.compile(r"([0-9]+(ms|s|m|h|d|w|y))+")


def extra(where, keys, known):
    for key in sorted(set(keys) - known):
        problems.append(f"{where}: unknown field {key}")


def check_rule(where, rule):
    extra(where, rule, RELABEL)
    if rule.get("action", "replace").lower() not in ACTIONS:
        problems.append(f"{where}: unknown action {rule['action']}")
    for name in rule.get("sourceLabels", []) + [rule.get("targetLabel", "x")]:
        if not LABEL_NAME.fullmatch(name):
            problems.append(f"{where}: {name!r} is not a label name")
    try:
        re.compile(rule.get("regex", "(.*)"))
    except re.error as e:
        problems.append(f"{where}: regex {rule['regex']!r}: {e}")


def check_podmonitor(doc):
    where = f"podmonitor.yaml: {doc.get('metadata', {}).get('name')}"
    if (doc.get("apiVersion"), doc.get("kind")) != ("monitoring.coreos.com/v1", "PodMonitor"):
        problems.append(f"{where}: not a monitoring.coreos.com/v1 PodMonitor")
    spec = doc.get("spec", {})
    extra(where, spec, SPEC)
    selector = spec.get("selector")
    if not isinstance(selector, dict) or set(selector) - {"matchLabels", "matchExpressions"}:
        problems.append(f"{where}: selector must be a label selector")
    for i, ep in enumerate(spec.get("podMetricsEndpoints", [])):
        extra(f"{where} endpoint {i}", ep, ENDPOINT)
        if "interval" in ep and not DURATION.fullmatch(ep["interval"]):
            problems.append(f"{where} endpoint {i}: interval {ep['interval']!r}")
        for key, values in ep.get("params", {}).items():
            if not (isinstance(values, list) and all(isinstance(v, str) for v in values)):
                problems.append(f"{where} endpoint {i}: params.{key} must be a list of text")
        for j, rule in enumerate(ep.get("relabelings", [])):
            check_rule(f"{where} endpoint {i} relabeling {j}", rule)
    if not spec.get("podMetricsEndpoints"):
        problems.append(f"{where}: no podMetricsEndpoints")


def relabel(labels, rules):
    """Prometheus's relabeling of one target; None when it is dropped."""
    labels = dict(labels)
    for r in rules:
        source = r.get("sourceLabels", r.get("source_labels", []))
        value = r.get("separator", ";").join(labels.get(s, "") for s in source)
        match = re.fullmatch(r.get("regex", "(.*)"), value)
        action = r.get("action", "replace").lower()
        if action == "keep" and not match or action == "drop" and match:
            return None
        if action == "replace" and match:
            target = r.get("targetLabel", r.get("target_label"))
            result = re.sub(r"\$\{?(\w+)\}?", lambda m: match.group(int(m[1])) or "",
                            r.get("replacement", "$1"))
            if result:
                labels[target] = result
            else:
                labels.pop(target, None)
    return labels


def sanitized(name):
    return re.sub(r"[^a-zA-Z0-9_]", "_", name)


def targets(pod_name, template):
    """The targets Prometheus's Pod discovery makes of a Pod: one per container port."""
    meta = template.get("metadata", {})
    spec = template["spec"]
    pod = {"__meta_kubernetes_namespace": "example", "__meta_kubernetes_pod_name": pod_name}
    for kind in ("annotation", "label"):
        for key, value in meta.get(f"{kind}s", {}).items():
            pod[f"__meta_kubernetes_pod_{kind}_{sanitized(key)}"] = value
            pod[f"__meta_kubernetes_pod_{kind}present_{sanitized(key)}"] = "true"
    for init, containers in ((True, spec.get("initContainers", [])), (False, spec["containers"])):
        for c in containers:
            for port in c.get("ports", []) or [{}]:
                yield c, {**pod, "__meta_kubernetes_pod_container_name": c["name"],
                          "__meta_kubernetes_pod_container_init": str(init).lower(),
                          "__meta_kubernetes_pod_container_port_name": port.get("name", ""),
                          "__address__": f"10.0.0.1:{port.get('containerPort', 80)}"}


def operator_rules(monitor, endpoint):
    """What the Operator puts before a PodMonitor's own relabelings (the parts used here)."""
    meta = monitor["metadata"]
    return [
        {"sourceLabels": ["__meta_kubernetes_pod_container_port_name"],
         "regex": endpoint["port"], "action": "keep"},
        {"sourceLabels": ["__meta_kubernetes_namespace"], "targetLabel": "namespace"},
        {"sourceLabels": ["__meta_kubernetes_pod_name"], "targetLabel": "pod"},
        {"targetLabel": "job", "replacement": f"{meta['namespace']}/{meta['name']}"},
    ] + endpoint.get("relabelings", [])


def expected_queue(settings):
    service = settings.get("SERVICE_NAME", "").lower()
    return settings.get("RABBITMQ_QUEUE", f"{service}_user_events")


def user_sync_pods():
    """(name, pod template, the queue its worker consumes) of every manifest's Deployment,
    and two Pods of our own: one without the annotation, one on another vhost."""
    for path in sorted(MANIFESTS.glob("*.yaml")):
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
        config = {d["metadata"]["name"]: d["data"] for d in docs if d["kind"] == "ConfigMap"}
        for d in docs:
            if d["kind"] != "Deployment":
                continue
            template = d["spec"]["template"]
            spec = template["spec"]
            for c in spec.get("initContainers", []) + spec["containers"]:
                if c.get("args") == ["run"]:
                    refs = [r["configMapRef"]["name"] for r in c.get("envFrom", [])]
                    settings = {k: v for r in refs for k, v in config.get(r, {}).items()}
                    yield f"{path.name}/{d['metadata']['name']}", template, expected_queue(settings), "/"
    port = {"name": "sync-http", "containerPort": 8791}
    bare = {"spec": {"containers": [{"name": "user-sync", "args": ["run"], "ports": [port]}]}}
    yield "a Pod without user-sync/queue", bare, None, None
    other = {"metadata": {"annotations": {"user-sync/queue": "x_user_events",
                                          "user-sync/vhost": "staging"}}, **bare}
    yield "a Pod on vhost staging", other, "x_user_events", "staging"


def check_scrape(name, rules_for, base):
    """`base`: the labels Prometheus sets before relabeling (a scrape config's job)."""
    for pod_name, template, queue, vhost in user_sync_pods():
        found = []
        for container, meta in targets(pod_name, template):
            labels = relabel({**base, **meta}, rules_for)
            if labels is not None:
                found.append((container["name"], labels))
        if queue is None:
            if found:
                problems.append(f"{name}: scrapes {pod_name}, which is not annotated")
            continue
        if len(found) != 1:
            problems.append(f"{name}: {len(found)} targets for {pod_name}, expected 1")
            continue
        container, labels = found[0]
        want = {"queue": queue, "vhost": vhost}
        for label in LABELS:
            if not labels.get(label) or label in want and labels[label] != want[label]:
                problems.append(f"{name}: {pod_name}/{container} gets {label}="
                                f"{labels.get(label)!r}, expected {want.get(label, 'a value')!r}")


def check_promtool(config_path):
    promtool = shutil.which("promtool")
    if not promtool:
        print("promtool not on PATH: scrape.yml not checked by it")
        return
    text = config_path.read_text().replace("../alerts.yml", str(HERE.parent / "alerts.yml"))
    text = re.sub(r"kubernetes_sd_configs:\n\s+- role: pod",
                  'static_configs:\n      - targets: ["10.0.0.1:8791"]', text)
    with tempfile.NamedTemporaryFile("w", suffix=".yml") as copy:
        copy.write(text)
        copy.flush()
        run = subprocess.run([promtool, "check", "config", copy.name],
                             capture_output=True, text=True)
        if run.returncode != 0:
            problems.append(f"scrape.yml: promtool check config: {run.stdout}{run.stderr}")


def finish():
    print("\n".join(problems) or "PodMonitors and scrape.yml label every user-sync of the manifests")
    sys.exit(1 if problems else 0)


monitors = [d for d in yaml.safe_load_all((HERE / "podmonitor.yaml").read_text()) if d]
for monitor in monitors:
    check_podmonitor(monitor)
config = yaml.safe_load((HERE / "scrape.yml").read_text())
jobs = {j["job_name"]: j for j in config["scrape_configs"]}
snake = {"source_labels": "sourceLabels", "target_label": "targetLabel"}
for rule in jobs["user-sync"]["relabel_configs"]:
    check_rule("scrape.yml user-sync", {snake.get(k, k): v for k, v in rule.items()})
if problems:  # replaying malformed rules would only add noise
    finish()

for monitor in monitors:
    for endpoint in monitor["spec"]["podMetricsEndpoints"]:
        if endpoint["port"] == "sync-http":
            check_scrape(f"PodMonitor {monitor['metadata']['name']}",
                         operator_rules(monitor, endpoint), {})
rabbit = [e for m in monitors for e in m["spec"]["podMetricsEndpoints"]
          if "queue_coarse_metrics" in e.get("params", {}).get("family", [])]
if not rabbit or any(e.get("path") != "/metrics/detailed" for e in rabbit):
    problems.append("podmonitor.yaml: no scrape of /metrics/detailed?family=queue_coarse_metrics")

check_scrape("scrape.yml job user-sync", jobs["user-sync"]["relabel_configs"],
             {"job": "user-sync"})
for target in jobs["user-sync-static"]["static_configs"]:
    if not all(target.get("labels", {}).get(label) for label in ("queue", "vhost")):
        problems.append(f"scrape.yml user-sync-static: {target['targets']} lacks queue or vhost")
queues = jobs["rabbitmq-queues"]
if queues.get("metrics_path") != "/metrics/detailed" or \
        "queue_coarse_metrics" not in queues.get("params", {}).get("family", []):
    problems.append("scrape.yml: rabbitmq-queues must ask /metrics/detailed?family=queue_coarse_metrics")
check_promtool(HERE / "scrape.yml")
finish()
