#!/usr/bin/env python3
"""What promtool does not check in deploy/alerts.yml: every alert has a runbook section
(its runbook_url ends in an anchor of docs/runbook.md), and deploy/alerts.test.yml has, for
every alert, a case where it fires and one where it stays quiet, each scenario with at least
two services side by side. Run from the repository root: python3 deploy/check_alerts.py"""
import re
import sys
from pathlib import Path

import yaml  # PyYAML, a dependency of kubernetes-validate

ROOT = Path(__file__).resolve().parents[1]
BASE = "https://example.com/user-sync/docs/runbook.md#"
problems = []


def anchor(heading):
    """GitHub's anchor for a heading: lower case, punctuation gone, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


runbook = (ROOT / "docs" / "runbook.md").read_text()
anchors = {anchor(h) for h in re.findall(r"^#{1,6} (.+)$", runbook, re.M)}
rules = [r for g in yaml.safe_load((ROOT / "deploy" / "alerts.yml").read_text())["groups"]
         for r in g["rules"] if "alert" in r]
for rule in rules:
    url = rule.get("annotations", {}).get("runbook_url", "")
    if not url.startswith(BASE) or url[len(BASE):] not in anchors:
        problems.append(f"{rule['alert']}: runbook_url {url!r} names no section of docs/runbook.md")

def services(test):
    """The (namespace, vhost, queue) of the user-sync series a scenario feeds."""
    found = set()
    for series in (s["series"] for s in test["input_series"]):
        labels = dict(re.findall(r'(\w+)="([^"]*)"', series))
        if series.startswith("user_sync_") or "queue" in labels and series.startswith("up{"):
            found.add((labels.get("namespace"), labels.get("vhost"), labels.get("queue")))
    return found


tests = yaml.safe_load((ROOT / "deploy" / "alerts.test.yml").read_text())["tests"]
fires, quiet = set(), set()
for i, test in enumerate(tests):
    if len(services(test)) < 2:
        problems.append(f"test {i + 1}: one service only; put a healthy one beside it")
    for case in test.get("alert_rule_test", []):
        (fires if case.get("exp_alerts") else quiet).add(case["alertname"])
for rule in rules:
    for kind, seen in (("firing", fires), ("non-firing", quiet)):
        if rule["alert"] not in seen:
            problems.append(f"{rule['alert']}: no {kind} case in deploy/alerts.test.yml")

print("\n".join(problems) or f"{len(rules)} alerts: each has a runbook section and firing and "
      "non-firing cases with two services")
sys.exit(1 if problems else 0)
