#!/usr/bin/env python3
"""Lint the rollout-controller Helm chart with the real Helm engine (helm-sdkpy) and check what it renders.

Run through scripts/lint-chart.sh, which provides a venv with helm-sdkpy and PyYAML.

helm-sdkpy exposes `helm lint` but no `helm template`, so the rendered manifests are obtained
through lint itself: a copy of the chart gets one extra template that `include`s every other
template and hands the result to `fail`, base64-encoded. In lint mode Helm 4 does not abort on
`fail`/`required`; it logs them ("funcMap fail message=..."), so the child process that runs the
lint captures that log on stderr and the rendered YAML is decoded from it. The chart's own guard
(`fail` on a missing Redis or admin token) is observed the same way.

Cases (one line each, then "N passed, M failed"):
  a. the chart as shipped: lint clean; renders the secure defaults (preStop sleep, the `helm test`
     pod running `rollout doctor`; no Ingress, HTTPRoute, HPA or NetworkPolicy); refuses to install
     until a Redis and an admin token are chosen;
  a2. Ingress + HTTPRoute + HPA + NetworkPolicy on: each rendered as its API wants, the Deployment
     leaving replicas to the HPA, the policy letting in only http and out only DNS, Redis and the
     notification targets;
  a3. the README's values table, values.yaml and values.schema.json name the same settings, and
     the table's single-literal defaults equal values.yaml's;
  b. bundled Redis + ServiceMonitor + PrometheusRule;
  c. existingSecret + external Redis (URL in that Secret);
  d. external Redis Cluster: redis.clusterUrls joined with commas into the chart's Secret;
  e. external Redis over TLS with a private CA (redis.caSecret): the Secret's key is mounted
     read-only and ROLLOUT_REDIS_CA_FILE names that very file;
  f. bad values are rejected (schema errors, and the chart's own guards), while a valid base and
     other valid combinations (no Redis auth/persistence, existingSecret with bundled Redis,
     existingSecret holding cluster URLs, a CA with Redis Cluster seeds or existingSecret, one
     in-memory replica, a NetworkPolicy with an external Redis, no preStop hook, digest-pinned
     image) render cleanly.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import copy
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path
from typing import Any, Callable

LINT_TIMEOUT_SECS = 60
RELEASE = "test-release"  # the release name helm lint renders with
FULLNAME = f"{RELEASE}-rollout-controller"
ERROR = 3  # helm lint severities: 1 info, 2 warning, 3 error

DUMP_TEMPLATE = "zz-lint-dump.yaml"
NOTES_TEMPLATE = "zz-lint-notes.yaml"

ADMIN = "ann:an-admin-token-for-lint"
ALERT = "alertmanager:an-alert-token-for-lint"
METRICS = "prometheus:a-metrics-token-for-lint"
CLUSTER_URLS = ["redis://:a-cluster-password@10.0.0.1:7000", "redis://:a-cluster-password@10.0.0.2:7000",
                "rediss://:a-cluster-password@redis-cluster.example:7000"]
CA_SECRET = "redis-private-ca"
CA_DIR = "/etc/rollout-redis-ca"

SAMPLE_TOML = """\
default_flag = "checkout"

[flags.checkout]
salt = "checkout"
internal_users = ["ann@example.com", "qa-bot"]

[[flags.checkout.stages]]
name = "internal"
internal_only = true
soak_secs = 3600

[[flags.checkout.stages]]
name = "10%"
percent = 10
soak_secs = 3600
"""


# ---------------------------------------------------------------------------------------------
# The child: one lint, result as JSON on stdout, Helm's log on stderr.


def lint_one(chart_dir: str) -> int:
    import helm_sdkpy  # noqa: PLC0415 (only the child needs the native library)

    result = asyncio.run(helm_sdkpy.Lint(helm_sdkpy.Configuration()).run(chart_dir))
    sys.stdout.write(json.dumps(result))
    sys.stdout.flush()
    return 0


# ---------------------------------------------------------------------------------------------
# The parent.


class Lint:
    """The outcome of one `helm lint` of a chart directory."""

    def __init__(self, messages: list[dict[str, Any]], log: str):
        self.messages = messages
        self.log = log

    @property
    def errors(self) -> list[str]:
        # helm-sdkpy serialises Go errors as {}, so only the severity and the path survive.
        return [m.get("Path", "?") for m in self.messages if m.get("Severity", 0) >= ERROR]

    @property
    def fails(self) -> list[str]:
        """Messages of `fail` and `required` calls (Helm logs them in lint mode), deduplicated."""
        found = []
        for line in self.log.splitlines():
            m = re.search(r"(funcMap fail|missing required value) message=(.*)$", line)
            if not m or "LINTDUMP:" in line or "NOTESDUMP:" in line:
                continue
            msg = m.group(2)
            if msg.startswith('"'):
                try:
                    msg = json.loads(msg)
                except json.JSONDecodeError:
                    msg = msg.strip('"')
            if msg not in found:
                found.append(msg)
        return found

    def _dump(self, marker: str) -> str:
        m = re.search(marker + r":([A-Za-z0-9+/=]*):END", self.log)
        if not m:
            raise AssertionError(f"no {marker} in the lint log (did the templates render?)")
        return base64.b64decode(m.group(1)).decode("utf-8")

    def manifests(self) -> list[dict[str, Any]]:
        import yaml  # noqa: PLC0415

        return [d for d in yaml.safe_load_all(self._dump("LINTDUMP")) if d]

    def notes(self) -> str:
        return self._dump("NOTESDUMP")


def run_lint(chart_dir: Path) -> Lint:
    proc = subprocess.run(
        [sys.executable, __file__, "--lint-one", str(chart_dir)],
        capture_output=True,
        text=True,
        timeout=LINT_TIMEOUT_SECS,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"helm lint crashed (exit {proc.returncode}): {proc.stderr.strip()[-2000:]}")
    result = json.loads(proc.stdout or "{}")
    return Lint(result.get("Messages") or [], proc.stderr)


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def chart_copy(chart: Path, workdir: Path, name: str, overrides: dict[str, Any] | None) -> Path:
    """A copy of the chart whose values.yaml is the shipped one merged with `overrides`, plus the
    two dump templates."""
    import yaml  # noqa: PLC0415

    dest = workdir / name / chart.name
    shutil.copytree(chart, dest)
    if overrides is not None:
        values = yaml.safe_load((chart / "values.yaml").read_text()) or {}
        (dest / "values.yaml").write_text(yaml.safe_dump(deep_merge(values, overrides), sort_keys=False))
    templates = sorted(
        str(p.relative_to(chart / "templates"))
        for p in (chart / "templates").rglob("*")
        if p.is_file() and not p.name.startswith("_") and p.name != "NOTES.txt"
    )
    names = " ".join(json.dumps(t) for t in templates)
    (dest / "templates" / DUMP_TEMPLATE).write_text(
        "{{- $out := \"\" }}\n"
        f"{{{{- range list {names} }}}}\n"
        "{{- $out = print $out \"\\n---\\n# Source: \" . \"\\n\" (include (print $.Template.BasePath \"/\" .) $) }}\n"
        "{{- end }}\n"
        "{{- fail (printf \"LINTDUMP:%s:END\" (b64enc $out)) }}\n"
    )
    (dest / "templates" / NOTES_TEMPLATE).write_text(
        "{{- fail (printf \"NOTESDUMP:%s:END\" (include (print $.Template.BasePath \"/NOTES.txt\") . | b64enc)) }}\n"
    )
    return dest


# ---------------------------------------------------------------------------------------------
# Checks on rendered manifests.


class Checks:
    def __init__(self, manifests: list[dict[str, Any]]):
        self.docs = manifests
        self.problems: list[str] = []

    def check(self, ok: bool, what: str) -> None:
        if not ok:
            self.problems.append(what)

    def find(self, kind: str, name: str | None = None) -> list[dict[str, Any]]:
        return [
            d
            for d in self.docs
            if d.get("kind") == kind and (name is None or d.get("metadata", {}).get("name") == name)
        ]

    def one(self, kind: str, name: str | None = None) -> dict[str, Any]:
        found = self.find(kind, name)
        if len(found) != 1:
            self.problems.append(f"expected one {kind} {name or ''}, found {len(found)}")
            return {}
        return found[0]


def rendered_checks(lint: Lint, problems: list[str]) -> Checks | None:
    """The rendered manifests to check, or None (with the reason added to problems)."""
    try:
        return Checks(lint.manifests())
    except Exception as e:  # noqa: BLE001
        problems.append(f"cannot read the rendered manifests: {type(e).__name__}: {' '.join(str(e).split())}")
        return None


def dig(obj: Any, *path: Any) -> Any:
    for key in path:
        try:
            obj = obj[key]
        except (KeyError, IndexError, TypeError):
            return None
    return obj


def controller(c: Checks) -> tuple[dict[str, Any], dict[str, Any], dict[str, dict[str, Any]]]:
    dep = c.one("Deployment", FULLNAME)
    pod = dig(dep, "spec", "template", "spec") or {}
    ctr = (pod.get("containers") or [{}])[0]
    env = {e["name"]: e for e in ctr.get("env") or []}
    return dep, ctr, env


def check_secure_controller(c: Checks, replicas: int, pdb: tuple[str, Any] = ("maxUnavailable", 1)) -> None:
    dep, ctr, env = controller(c)
    pod = dig(dep, "spec", "template", "spec") or {}
    c.check(dig(dep, "spec", "replicas") == replicas, f"Deployment replicas != {replicas}")
    c.check(ctr.get("command") == ["/usr/local/bin/rollout"], "command is not /usr/local/bin/rollout")
    c.check(ctr.get("args") == ["serve", "--listen", "0.0.0.0:8080"], "args are not serve --listen 0.0.0.0:8080")
    c.check(dig(ctr, "ports", 0) == {"name": "http", "containerPort": 8080, "protocol": "TCP"}, "port http/8080")
    c.check(dig(ctr, "livenessProbe", "httpGet") == {"path": "/healthz", "port": "http"}, "liveness GET /healthz")
    c.check(dig(ctr, "readinessProbe", "httpGet") == {"path": "/readyz", "port": "http"}, "readiness GET /readyz")
    c.check(bool(dig(ctr, "resources", "requests")) and bool(dig(ctr, "resources", "limits")), "resources")
    psc, sc = pod.get("securityContext") or {}, ctr.get("securityContext") or {}
    for where, ctx in (("pod", psc), ("container", sc)):
        c.check(ctx.get("runAsNonRoot") is True, f"{where} runAsNonRoot")
        c.check(ctx.get("runAsUser") == 65532, f"{where} runAsUser 65532")
        c.check(dig(ctx, "seccompProfile", "type") == "RuntimeDefault", f"{where} seccompProfile RuntimeDefault")
    c.check(sc.get("readOnlyRootFilesystem") is True, "readOnlyRootFilesystem")
    c.check(sc.get("allowPrivilegeEscalation") is False, "allowPrivilegeEscalation false")
    c.check(dig(sc, "capabilities", "drop") == ["ALL"], "capabilities drop ALL")
    c.check(pod.get("automountServiceAccountToken") is False, "pod automountServiceAccountToken false")
    ann = dig(dep, "spec", "template", "metadata", "annotations") or {}
    c.check(re.fullmatch(r"[0-9a-f]{64}", str(ann.get("checksum/config"))) is not None, "checksum/config annotation")
    c.check(dig(env, "ROLLOUT_CONFIG", "value") == "/etc/rollout/config.toml", "ROLLOUT_CONFIG")
    c.check(dig(env, "ROLLOUT_LOG_FORMAT", "value") == "json", "ROLLOUT_LOG_FORMAT json")
    c.check(dig(env, "ROLLOUT_LISTEN", "value") == "0.0.0.0:8080", "ROLLOUT_LISTEN")
    c.check("RUST_LOG" in env, "RUST_LOG")
    c.check(dig(env, "ROLLOUT_DRAIN_SECS", "value") == "5", "ROLLOUT_DRAIN_SECS 5")
    c.check(dig(env, "ROLLOUT_SHUTDOWN_GRACE_SECS", "value") == "10", "ROLLOUT_SHUTDOWN_GRACE_SECS 10")
    ready = ctr.get("readinessProbe") or {}
    c.check(ready.get("periodSeconds", 99) * ready.get("failureThreshold", 99) <= 5,
            "the readiness probe notices a draining pod within the 5 s drain")
    c.check(dig(pod, "terminationGracePeriodSeconds") == 30,
            "terminationGracePeriodSeconds 30 (> preStop 3 + drain 5 + grace 10)")
    c.check(dig(ctr, "lifecycle", "preStop") == {"sleep": {"seconds": 3}},
            f"preStop sleeps 3 s before SIGTERM (the image has no shell): {dig(ctr, 'lifecycle')}")
    mounts = {m["mountPath"]: m for m in ctr.get("volumeMounts") or []}
    c.check(dig(mounts, "/etc/rollout", "readOnly") is True, "config mounted read-only at /etc/rollout")
    c.check(len(pod.get("topologySpreadConstraints") or []) == 2, "default topology spread (hostname, zone)")
    admin = dig(env, "ROLLOUT_ADMIN_TOKENS", "valueFrom", "secretKeyRef") or {}
    c.check(admin.get("optional") is False, "ROLLOUT_ADMIN_TOKENS is required")
    for key in ("READ_TOKENS", "METRICS_TOKENS", "ALERT_TOKENS", "CIO_SIGNING_KEYS", "NOTIFY_URLS"):
        ref = dig(env, f"ROLLOUT_{key}", "valueFrom", "secretKeyRef") or {}
        c.check(ref.get("key") == f"ROLLOUT_{key}" and ref.get("optional") is True, f"ROLLOUT_{key} optional ref")

    svc = c.one("Service", FULLNAME)
    c.check(dig(svc, "spec", "type") == "ClusterIP", "Service type ClusterIP")
    c.check(
        dig(svc, "spec", "ports") == [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}],
        "Service port 80 -> http",
    )
    budget = dig(c.one("PodDisruptionBudget", FULLNAME), "spec") or {}
    c.check(budget.get(pdb[0]) == pdb[1] and len(budget) == 2, f"PDB {pdb[0]}: {pdb[1]} (and nothing else)")
    sa = c.one("ServiceAccount", FULLNAME)
    c.check(sa.get("automountServiceAccountToken") is False, "ServiceAccount automount false")
    cm = c.one("ConfigMap", FULLNAME)
    try:
        tomllib.loads(dig(cm, "data", "config.toml") or "")
    except tomllib.TOMLDecodeError as e:
        c.problems.append(f"config.toml is not TOML: {e}")


def case_shipped(chart: Path, work: Path) -> list[str]:
    problems: list[str] = []
    pristine = run_lint(chart)
    problems += [f"lint error in {p}" for p in pristine.errors]
    rendered = run_lint(chart_copy(chart, work, "shipped", None))
    problems += [f"lint error in {p}" for p in rendered.errors if p not in pristine.errors]
    c = rendered_checks(rendered, problems)
    if c is None:
        return problems
    check_secure_controller(c, replicas=3)
    c.check(not c.find("StatefulSet") and not c.find("ServiceMonitor") and not c.find("PrometheusRule"),
            "optional resources are off by default")
    for kind in ("Ingress", "HTTPRoute", "HorizontalPodAutoscaler", "NetworkPolicy"):
        c.check(not c.find(kind), f"no {kind} by default")
    check_test_pod(c, token_secret=FULLNAME)
    dep, _, env = controller(c)
    c.check("ROLLOUT_REDIS_URL" not in env, "no Redis URL by default")
    c.check("ROLLOUT_REDIS_CA_FILE" not in env, "no Redis CA file by default")
    c.check([v.get("name") for v in dig(dep, "spec", "template", "spec", "volumes") or []] == ["config", "tmp"],
            "no volume beyond config and tmp by default")
    fails = rendered.fails
    c.check(any("no Redis configured" in f for f in fails), "the default render does not refuse a missing Redis")
    c.check(any("no admin token" in f for f in fails), "the default render does not refuse a missing admin token")
    c.check(len(fails) == 2, f"unexpected render failures: {fails}")
    return problems + c.problems


def check_test_pod(c: Checks, token_secret: str) -> None:
    """The `helm test` pod: `rollout doctor` against the Service, with a bare admin token."""
    pod = c.one("Pod", f"{FULLNAME}-test-doctor")
    ann = dig(pod, "metadata", "annotations") or {}
    c.check(ann.get("helm.sh/hook") == "test", "the doctor pod is a helm test hook")
    spec = pod.get("spec") or {}
    ctr = (spec.get("containers") or [{}])[0]
    c.check(spec.get("restartPolicy") == "Never", "test pod restartPolicy Never")
    c.check(ctr.get("command") == ["/usr/local/bin/rollout"] and (ctr.get("args") or [None])[0] == "doctor",
            f"test pod runs rollout doctor: {ctr.get('command')} {ctr.get('args')}")
    env = {e["name"]: e for e in ctr.get("env") or []}
    c.check(dig(env, "ROLLOUT_SERVER", "value") == f"http://{FULLNAME}..svc.cluster.local:80",
            f"ROLLOUT_SERVER is the Service: {dig(env, 'ROLLOUT_SERVER', 'value')}")
    c.check(dig(env, "ROLLOUT_TOKEN", "valueFrom", "secretKeyRef") == {"name": token_secret, "key": "doctor-token"},
            f"ROLLOUT_TOKEN from {token_secret}/doctor-token")
    sc = ctr.get("securityContext") or {}
    c.check(sc.get("readOnlyRootFilesystem") is True and sc.get("runAsNonRoot") is True, "test pod locked down")
    c.check(spec.get("automountServiceAccountToken") is False, "test pod mounts no API token")


def case_exposed(chart: Path, work: Path) -> list[str]:
    """Ingress, HTTPRoute, HPA and NetworkPolicy on (with the bundled Redis)."""
    lint = run_lint(chart_copy(chart, work, "exposed", {
        "secrets": {"adminTokens": [ADMIN]},
        "redis": {"bundled": {"enabled": True}},
        "ingress": {"enabled": True, "className": "nginx",
                    "tls": [{"secretName": "rollouts-tls", "hosts": ["rollouts.example.com"]}]},
        "httpRoute": {"enabled": True, "parentRefs": [{"name": "shared", "namespace": "gateway-system"}],
                      "hostnames": ["rollouts.example.com"]},
        "autoscaling": {"enabled": True, "minReplicas": 2, "maxReplicas": 6, "targetMemoryUtilizationPercentage": 80},
        "networkPolicy": {"enabled": True, "ingress": {"from": [
            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}]},
            "egress": {"notify": {"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["169.254.169.254/32"]}}],
                                  "ports": [443]}}},
    }))
    problems = [f"lint error in {p}" for p in lint.errors] + [f"render failed: {f}" for f in lint.fails]
    c = rendered_checks(lint, problems)
    if c is None:
        return problems
    dep, ctr, _ = controller(c)
    c.check("replicas" not in (dep.get("spec") or {}), "with the HPA on, the Deployment leaves replicas to it")
    ing = c.one("Ingress", FULLNAME)
    c.check(dig(ing, "apiVersion") == "networking.k8s.io/v1", "Ingress networking.k8s.io/v1")
    c.check(dig(ing, "spec", "ingressClassName") == "nginx", "Ingress class")
    c.check(dig(ing, "spec", "rules", 0, "host") == "rollouts.example.com", "Ingress host")
    path = dig(ing, "spec", "rules", 0, "http", "paths", 0) or {}
    c.check(path.get("path") == "/" and path.get("pathType") == "Prefix", "Ingress path / Prefix")
    c.check(dig(path, "backend", "service") == {"name": FULLNAME, "port": {"name": "http"}},
            f"Ingress backend is the Service's http port: {dig(path, 'backend')}")
    c.check(dig(ing, "spec", "tls", 0, "secretName") == "rollouts-tls", "Ingress TLS")
    route = c.one("HTTPRoute", FULLNAME)
    c.check(dig(route, "apiVersion") == "gateway.networking.k8s.io/v1", "HTTPRoute gateway.networking.k8s.io/v1")
    c.check(dig(route, "spec", "parentRefs") == [{"name": "shared", "namespace": "gateway-system"}], "parentRefs")
    c.check(dig(route, "spec", "hostnames") == ["rollouts.example.com"], "hostnames")
    rule = dig(route, "spec", "rules", 0) or {}
    c.check(dig(rule, "matches", 0, "path") == {"type": "PathPrefix", "value": "/"}, "HTTPRoute PathPrefix /")
    c.check(dig(rule, "backendRefs") == [{"name": FULLNAME, "port": 80}], "HTTPRoute to the Service port 80")
    hpa = c.one("HorizontalPodAutoscaler", FULLNAME)
    c.check(dig(hpa, "apiVersion") == "autoscaling/v2", "HPA autoscaling/v2")
    c.check(dig(hpa, "spec", "scaleTargetRef") == {"apiVersion": "apps/v1", "kind": "Deployment", "name": FULLNAME},
            "HPA scales the Deployment")
    c.check((dig(hpa, "spec", "minReplicas"), dig(hpa, "spec", "maxReplicas")) == (2, 6), "HPA 2..6")
    targets = {dig(m, "resource", "name"): dig(m, "resource", "target", "averageUtilization")
               for m in dig(hpa, "spec", "metrics") or []}
    c.check(targets == {"cpu": 70, "memory": 80}, f"HPA targets cpu 70 %, memory 80 %: {targets}")
    np = c.one("NetworkPolicy", FULLNAME)
    spec = np.get("spec") or {}
    c.check(dig(spec, "podSelector", "matchLabels", "app.kubernetes.io/component") == "controller",
            "NetworkPolicy selects the controller pods")
    c.check(spec.get("policyTypes") == ["Ingress", "Egress"], "NetworkPolicy restricts ingress and egress")
    ingress = spec.get("ingress") or []
    c.check(len(ingress) == 1 and dig(ingress, 0, "ports") == [{"port": "http", "protocol": "TCP"}],
            "ingress only to port http")
    sources = dig(ingress, 0, "from") or []
    c.check(dig(sources, 0, "namespaceSelector", "matchLabels", "kubernetes.io/metadata.name") == "ingress-nginx",
            "ingress from the given peers")
    c.check(dig(sources, 1, "podSelector", "matchLabels", "app.kubernetes.io/component") == "test",
            "ingress from the helm test pod")
    egress = spec.get("egress") or []
    ports = [sorted((p.get("port"), p.get("protocol")) for p in e.get("ports") or []) for e in egress]
    c.check(ports[:1] == [[(53, "TCP"), (53, "UDP")]], f"egress to DNS: {ports}")
    c.check(dig(egress, 0, "to", 0, "podSelector", "matchLabels", "k8s-app") == "kube-dns", "DNS to kube-dns")
    c.check([(6379, "TCP")] in ports and any(
        dig(e, "to", 0, "podSelector", "matchLabels", "app.kubernetes.io/component") == "redis" for e in egress),
        "egress to the bundled Redis pods on 6379")
    c.check(any(dig(e, "to", 0, "ipBlock", "cidr") == "0.0.0.0/0" and e.get("ports") == [{"port": 443, "protocol": "TCP"}]
                for e in egress), "egress to the notification receivers as given")
    c.check(len(egress) == 3, f"nothing else goes out: {len(egress)} egress rules")
    check_test_pod(c, token_secret=FULLNAME)
    c.check("(autoscaled, 2–6 replicas)" in lint.notes(), "NOTES.txt says the replicas are autoscaled")
    c.check(f"helm test {RELEASE}" in lint.notes(), "NOTES.txt names helm test")
    secret = c.one("Secret", FULLNAME)
    token = base64.b64decode(dig(secret, "data", "doctor-token") or "").decode()
    c.check(token == ADMIN.split(":", 1)[1], "doctor-token is the bare first admin token")
    return problems + c.problems


def case_bundled(chart: Path, work: Path) -> list[str]:
    lint = run_lint(chart_copy(chart, work, "bundled", {
        "config": SAMPLE_TOML,
        "secrets": {"adminTokens": [ADMIN], "alertTokens": [ALERT], "metricsTokens": [METRICS]},
        "redis": {"bundled": {"enabled": True}},
        "metrics": {"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True}},
    }))
    problems = [f"lint error in {p}" for p in lint.errors] + [f"render failed: {f}" for f in lint.fails]
    c = rendered_checks(lint, problems)
    if c is None:
        return problems
    check_secure_controller(c, replicas=3)
    redis = f"{FULLNAME}-redis"
    sts = c.one("StatefulSet", redis)
    pod = dig(sts, "spec", "template", "spec") or {}
    ctr = (pod.get("containers") or [{}])[0]
    c.check(ctr.get("image") == "redis:7-alpine", "redis image redis:7-alpine")
    args = ctr.get("args") or []
    c.check("--appendonly" in args and args[args.index("--appendonly") + 1] == "yes", "redis --appendonly yes")
    c.check("--requirepass" in args, "redis requirepass")
    c.check(dig(sts, "spec", "volumeClaimTemplates", 0, "spec", "resources", "requests", "storage") == "1Gi",
            "redis PVC via volumeClaimTemplates")
    c.check(dig(pod, "securityContext", "runAsNonRoot") is True, "redis pod runAsNonRoot")
    c.check(dig(ctr, "securityContext", "readOnlyRootFilesystem") is True, "redis readOnlyRootFilesystem")
    c.check(dig(ctr, "securityContext", "capabilities", "drop") == ["ALL"], "redis drops ALL capabilities")
    c.check(dig(c.one("Service", redis), "spec", "clusterIP") == "None", "redis Service is headless")
    c.check(bool(c.one("Secret", redis)), "redis password Secret")
    _, _, env = controller(c)
    names = list(env)
    url = dig(env, "ROLLOUT_REDIS_URL", "value") or ""
    c.check(url.startswith(f"redis://:$(REDIS_PASSWORD)@{redis}."), f"ROLLOUT_REDIS_URL points at bundled Redis: {url}")
    c.check("REDIS_PASSWORD" in names and names.index("REDIS_PASSWORD") < names.index("ROLLOUT_REDIS_URL"),
            "REDIS_PASSWORD is defined before ROLLOUT_REDIS_URL uses it")
    secret = c.one("Secret", FULLNAME)
    data = {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}
    c.check(data.get("ROLLOUT_ADMIN_TOKENS") == ADMIN, "admin tokens in the Secret")
    c.check(data.get("metrics-scrape-token") == METRICS.split(":", 1)[1], "bare metrics scrape token")
    c.check("ROLLOUT_REDIS_URL" not in data, "no external Redis URL in the Secret")
    dep = c.one("Deployment", FULLNAME)
    c.check("checksum/secret" in (dig(dep, "spec", "template", "metadata", "annotations") or {}), "checksum/secret")
    c.check(dig(c.one("ConfigMap", FULLNAME), "data", "config.toml") == SAMPLE_TOML, "config.toml is the TOML given")
    sm = c.one("ServiceMonitor", FULLNAME)
    ep = dig(sm, "spec", "endpoints", 0) or {}
    c.check(ep.get("port") == "http" and ep.get("path") == "/metrics", "ServiceMonitor scrapes /metrics on http")
    c.check(dig(ep, "authorization", "credentials") == {"name": FULLNAME, "key": "metrics-scrape-token"},
            "ServiceMonitor bearer token")
    rules = [r for g in dig(c.one("PrometheusRule", FULLNAME), "spec", "groups") or [] for r in g.get("rules", [])]
    c.check(len(rules) >= 2, "PrometheusRule has the example guards")
    c.check(all(dig(r, "labels", "flag") for r in rules if "alert" in r), "every guard alert is labelled flag")
    notes = lint.notes()
    for needle in ("webhook_configs:", f"url: http://{FULLNAME}.", "/alerts/alertmanager", "send_resolved: true",
                   "group_by: [alertname, flag]", "group_wait: 1s", "authorization:", "credentials:"):
        c.check(needle in notes, f"NOTES.txt lacks {needle!r}")
    return problems + c.problems


def case_existing_secret(chart: Path, work: Path) -> list[str]:
    lint = run_lint(chart_copy(chart, work, "existing", {
        "existingSecret": "rollout-secrets",
        "settings": {"defaultFlag": "checkout", "keyPrefix": "rollout-prod"},
        "podDisruptionBudget": {"minAvailable": 2},
    }))
    problems = [f"lint error in {p}" for p in lint.errors] + [f"render failed: {f}" for f in lint.fails]
    c = rendered_checks(lint, problems)
    if c is None:
        return problems
    check_secure_controller(c, replicas=3, pdb=("minAvailable", 2))
    c.check(not c.find("Secret"), "no chart-managed Secret when existingSecret is set")
    c.check(not c.find("StatefulSet"), "no bundled Redis")
    dep, _, env = controller(c)
    refs = [e["valueFrom"]["secretKeyRef"] for e in env.values() if dig(e, "valueFrom", "secretKeyRef")]
    c.check(len(refs) == 7 and all(r["name"] == "rollout-secrets" for r in refs), "all 7 keys from rollout-secrets")
    c.check(dig(env, "ROLLOUT_REDIS_URL", "valueFrom", "secretKeyRef", "optional") is False, "Redis URL required")
    c.check(dig(env, "ROLLOUT_DEFAULT_FLAG", "value") == "checkout", "ROLLOUT_DEFAULT_FLAG")
    c.check(dig(env, "ROLLOUT_KEY_PREFIX", "value") == "rollout-prod", "ROLLOUT_KEY_PREFIX")
    c.check("checksum/secret" not in (dig(dep, "spec", "template", "metadata", "annotations") or {}),
            "no checksum of a Secret the chart does not render")
    return problems + c.problems


def case_cluster(chart: Path, work: Path) -> list[str]:
    lint = run_lint(chart_copy(chart, work, "cluster", {
        "secrets": {"adminTokens": [ADMIN]},
        "redis": {"clusterUrls": CLUSTER_URLS},
    }))
    problems = [f"lint error in {p}" for p in lint.errors] + [f"render failed: {f}" for f in lint.fails]
    c = rendered_checks(lint, problems)
    if c is None:
        return problems
    check_secure_controller(c, replicas=3)
    c.check(not c.find("StatefulSet"), "no bundled Redis")
    secret = c.one("Secret", FULLNAME)
    data = {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}
    c.check(data.get("ROLLOUT_REDIS_CLUSTER_URLS") == ",".join(CLUSTER_URLS),
            f"cluster seed URLs comma-joined in the Secret: {data.get('ROLLOUT_REDIS_CLUSTER_URLS')!r}")
    c.check("ROLLOUT_REDIS_URL" not in data, "no single-node Redis URL in the Secret")
    _, _, env = controller(c)
    c.check(dig(env, "ROLLOUT_REDIS_CLUSTER_URLS", "valueFrom", "secretKeyRef")
            == {"name": FULLNAME, "key": "ROLLOUT_REDIS_CLUSTER_URLS", "optional": False},
            "ROLLOUT_REDIS_CLUSTER_URLS required from the chart's Secret")
    c.check("ROLLOUT_REDIS_URL" not in env, "no ROLLOUT_REDIS_URL next to the cluster URLs (the service refuses both)")
    c.check(f"Redis Cluster seed URLs from Secret {FULLNAME} (key ROLLOUT_REDIS_CLUSTER_URLS)" in lint.notes(),
            "NOTES.txt names the Redis Cluster store")
    return problems + c.problems


def redis_ca_file(c: Checks) -> tuple[str | None, str | None, str | None]:
    """Where the CA lands: the file ROLLOUT_REDIS_CA_FILE names, the file the redis-ca volume
    mounts, and the Secret key it comes from (None where missing)."""
    dep, ctr, env = controller(c)
    volumes = {v["name"]: v for v in dig(dep, "spec", "template", "spec", "volumes") or []}
    mounts = {m["name"]: m for m in ctr.get("volumeMounts") or []}
    items = dig(volumes, "redis-ca", "secret", "items") or []
    mount = mounts.get("redis-ca") or {}
    mounted = None
    if len(items) == 1 and mount.get("mountPath") and mount.get("readOnly") is True:
        mounted = f"{mount['mountPath'].rstrip('/')}/{items[0].get('path')}"
    return dig(env, "ROLLOUT_REDIS_CA_FILE", "value"), mounted, dig(items, 0, "key")


def case_redis_ca(chart: Path, work: Path) -> list[str]:
    lint = run_lint(chart_copy(chart, work, "redis-ca", {
        "secrets": {"adminTokens": [ADMIN]},
        "redis": {"url": "rediss://:a-password@redis.example.internal:6380/0",
                  "caSecret": {"name": CA_SECRET, "key": "private-ca.pem"}},
    }))
    problems = [f"lint error in {p}" for p in lint.errors] + [f"render failed: {f}" for f in lint.fails]
    c = rendered_checks(lint, problems)
    if c is None:
        return problems
    check_secure_controller(c, replicas=3)
    dep, ctr, env = controller(c)
    volumes = {v["name"]: v for v in dig(dep, "spec", "template", "spec", "volumes") or []}
    c.check(dig(volumes, "redis-ca", "secret") == {"secretName": CA_SECRET,
                                                     "items": [{"key": "private-ca.pem", "path": "ca.crt"}]},
            f"redis-ca volume holds only the CA key of {CA_SECRET}: {dig(volumes, 'redis-ca')}")
    mounts = [m for m in ctr.get("volumeMounts") or [] if m.get("name") == "redis-ca"]
    c.check(mounts == [{"name": "redis-ca", "mountPath": CA_DIR, "readOnly": True}],
            f"redis-ca mounted read-only at {CA_DIR}: {mounts}")
    named, mounted, key = redis_ca_file(c)
    c.check(named is not None and named == mounted == f"{CA_DIR}/ca.crt",
            f"ROLLOUT_REDIS_CA_FILE ({named}) is the mounted file ({mounted})")
    c.check(key == "private-ca.pem", f"the CA comes from the key given: {key}")
    c.check(dig(env, "ROLLOUT_REDIS_URL", "valueFrom", "secretKeyRef", "key") == "ROLLOUT_REDIS_URL",
            "the Redis URL still comes from the Secret")
    c.check(f"TLS CA from Secret {CA_SECRET} (key private-ca.pem)" in lint.notes(), "NOTES.txt names the CA")
    return problems + c.problems


def value_leaves(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Every setting of values.yaml by its dotted path; a non-empty mapping is walked into."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(value_leaves(value, path + "."))
        else:
            out[path] = value
    return out


def schema_properties(schema: dict[str, Any], prefix: str = "") -> dict[str, dict[str, Any]]:
    """Every property the schema declares (through `properties`, not into array items), by dotted path."""
    out: dict[str, dict[str, Any]] = {}
    for key, sub in (schema.get("properties") or {}).items():
        path = f"{prefix}{key}"
        out[path] = sub
        out.update(schema_properties(sub, path + "."))
    return out


def readme_value_rows(readme: str) -> list[tuple[list[str], str, int]]:
    """The rows of the chart README's values table: the keys each names, its default cell, its line.
    Keys after the first are relative to the first one's parent (`a.b.c`, `d` names `a.b.d`)."""
    rows = []
    lines = readme.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "## Values")
    for number, line in enumerate(lines[start + 1:], start + 2):
        if line.startswith("## "):
            break
        if not line.startswith("| `"):
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split(" | ")]
        names = re.findall(r"`([^`]+)`", cells[0])
        parent = names[0].rsplit(".", 1)[0] + "." if "." in names[0] else ""
        keys = [names[0]] + [n if n.startswith(parent) else parent + n for n in names[1:]]
        rows.append((keys, cells[1] if len(cells) > 1 else "", number))
    return rows


# Values passed through as Kubernetes objects: their schema mirrors the API's optional fields,
# which values.yaml need not set.
KUBERNETES_OBJECTS = tuple(f"{p}." for p in ("podSecurityContext", "securityContext", "redis.bundled.podSecurityContext",
                                              "redis.bundled.securityContext"))


def case_readme_values(chart: Path, work: Path) -> list[str]:
    """values.yaml, values.schema.json and the README's values table describe the same settings,
    with the same defaults, so that none of the three drifts from the others."""
    import yaml  # noqa: PLC0415

    del work
    problems: list[str] = []
    leaves = value_leaves(yaml.safe_load((chart / "values.yaml").read_text()) or {})
    schema = schema_properties(json.loads((chart / "values.schema.json").read_text()))
    rows = readme_value_rows((chart / "README.md").read_text())

    def free_form(path: str) -> bool:
        """Under a schema object that declares no properties (resources, annotations, …)."""
        parts = path.split(".")
        return any(".".join(parts[:i]) in schema and not schema[".".join(parts[:i])].get("properties")
                   for i in range(1, len(parts)))

    for path in leaves:
        if path not in schema and not free_form(path):
            problems.append(f"values.yaml has {path}, values.schema.json does not")
    for path in schema:
        if path == "global" or path.startswith("global.") or path.startswith(KUBERNETES_OBJECTS):
            continue
        if path not in leaves and not any(leaf.startswith(path + ".") for leaf in leaves):
            problems.append(f"values.schema.json declares {path}, values.yaml does not set it")

    def covers(key: str, path: str) -> bool:
        key = key.removesuffix(".*")
        return path == key or path.startswith(key + ".")

    documented = [key for keys, _, _ in rows for key in keys]
    for path in leaves:
        if not any(covers(key, path) for key in documented):
            problems.append(f"the README's values table lacks {path}")
    for keys, default, line in rows:
        for key in keys:
            if not any(covers(key, path) for path in leaves):
                problems.append(f"README line {line}: {key} is not in values.yaml")
        literal = re.fullmatch(r"`([^`]*)`", default)
        if len(keys) == 1 and keys[0] in leaves and literal:
            said = yaml.safe_load(literal.group(1)) if literal.group(1) != '""' else ""
            if said != leaves[keys[0]]:
                problems.append(f"README line {line}: {keys[0]} defaults to {leaves[keys[0]]!r}, not {said!r}")
    return problems


# A valid base for the bad-values checks, so each one breaks exactly one thing.
VALID = {"secrets": {"adminTokens": [ADMIN]}, "redis": {"url": "redis://redis.example:6379/0"}}
BAD_VALUES: list[tuple[str, dict[str, Any], Callable[[Lint], bool]]] = [
    ("replicaCount: \"three\"", {"replicaCount": "three"}, lambda lint: bool(lint.errors)),
    ("unknown top-level key", {"replicas": 3}, lambda lint: bool(lint.errors)),
    ("unknown nested key", {"image": {"name": "x"}}, lambda lint: bool(lint.errors)),
    ("image.pullPolicy enum", {"image": {"pullPolicy": "Sometimes"}}, lambda lint: bool(lint.errors)),
    ("token shorter than 8", {"secrets": {"adminTokens": ["ann:short"]}}, lambda lint: bool(lint.errors)),
    ("settings.logFormat enum", {"settings": {"logFormat": "xml"}}, lambda lint: bool(lint.errors)),
    ("redis.url scheme", {"redis": {"url": "http://redis:6379"}}, lambda lint: bool(lint.errors)),
    ("in-memory store with 3 replicas",
     {"redis": {"url": "", "allowInMemory": True}},
     lambda lint: any("allowInMemory needs replicaCount=1" in f for f in lint.fails)),
    ("existingSecret together with secrets.*", {"existingSecret": "mine"},
     lambda lint: any("existingSecret is set" in f for f in lint.fails)),
    ("redis.url together with bundled Redis", {"redis": {"bundled": {"enabled": True}}},
     lambda lint: any("both set" in f for f in lint.fails)),
    ("redis.clusterUrls scheme", {"redis": {"url": "", "clusterUrls": ["http://10.0.0.1:7000"]}},
     lambda lint: bool(lint.errors)),
    ("redis.existingSecretKey enum", {"redis": {"existingSecretKey": "REDIS_URL"}}, lambda lint: bool(lint.errors)),
    ("redis.clusterUrls together with redis.url", {"redis": {"clusterUrls": CLUSTER_URLS}},
     lambda lint: any("redis.url and redis.clusterUrls are both set" in f for f in lint.fails)),
    ("redis.clusterUrls together with bundled Redis",
     {"redis": {"url": "", "clusterUrls": CLUSTER_URLS, "bundled": {"enabled": True}}},
     lambda lint: any("redis.clusterUrls and redis.bundled.enabled are both set" in f for f in lint.fails)),
    ("existingSecret together with redis.clusterUrls",
     {"existingSecret": "mine", "secrets": {"adminTokens": []}, "redis": {"url": "", "clusterUrls": CLUSTER_URLS}},
     lambda lint: any("existingSecret is set" in f for f in lint.fails)),
    ("redis.caSecret.key empty", {"redis": {"url": "rediss://redis.example:6380/0", "caSecret": {"key": ""}}},
     lambda lint: bool(lint.errors)),
    ("unknown key under redis.caSecret", {"redis": {"caSecret": {"path": "/ca.crt"}}}, lambda lint: bool(lint.errors)),
    ("redis.caSecret.name not a Secret name", {"redis": {"url": "rediss://redis.example:6380/0",
                                                         "caSecret": {"name": "My_CA"}}},
     lambda lint: bool(lint.errors)),
    ("redis.caSecret with bundled Redis",
     {"redis": {"url": "", "caSecret": {"name": CA_SECRET}, "bundled": {"enabled": True}}},
     lambda lint: any("redis.caSecret.name and redis.bundled.enabled are both set" in f for f in lint.fails)),
    ("redis.caSecret with the in-memory store",
     {"replicaCount": 1, "redis": {"url": "", "allowInMemory": True, "caSecret": {"name": CA_SECRET}}},
     lambda lint: any("no Redis is configured (in-memory store)" in f for f in lint.fails)),
    ("redis.caSecret with a plain redis:// URL", {"redis": {"caSecret": {"name": CA_SECRET}}},
     lambda lint: any("redis.url is not rediss://" in f for f in lint.fails)),
    ("terminationGracePeriodSeconds not above preStop + drain + grace", {"terminationGracePeriodSeconds": 18},
     lambda lint: any("must be above shutdown.preStopSleepSeconds + shutdown.drainSeconds" in f for f in lint.fails)),
    ("shutdown.preStopSleepSeconds negative", {"shutdown": {"preStopSleepSeconds": -1}}, lambda lint: bool(lint.errors)),
    ("ingress pathType enum", {"ingress": {"enabled": True, "hosts": [{"host": "a.example", "paths": [
        {"path": "/", "pathType": "Regex"}]}]}}, lambda lint: bool(lint.errors)),
    ("ingress path not absolute", {"ingress": {"enabled": True, "hosts": [{"host": "a.example", "paths": [
        {"path": "ui", "pathType": "Prefix"}]}]}}, lambda lint: bool(lint.errors)),
    ("ingress without hosts", {"ingress": {"enabled": True, "hosts": []}},
     lambda lint: any("ingress.enabled needs at least one entry in ingress.hosts" in f for f in lint.fails)),
    ("unknown key under ingress", {"ingress": {"host": "a.example"}}, lambda lint: bool(lint.errors)),
    ("httpRoute without parentRefs", {"httpRoute": {"enabled": True}},
     lambda lint: any("httpRoute.enabled needs httpRoute.parentRefs" in f for f in lint.fails)),
    ("httpRoute parentRef without a name", {"httpRoute": {"enabled": True, "parentRefs": [{"namespace": "gw"}]}},
     lambda lint: bool(lint.errors)),
    ("autoscaling minReplicas above maxReplicas", {"autoscaling": {"enabled": True, "minReplicas": 5, "maxReplicas": 2}},
     lambda lint: any("is above autoscaling.maxReplicas" in f for f in lint.fails)),
    ("autoscaling without a target",
     {"autoscaling": {"enabled": True, "targetCPUUtilizationPercentage": None}},
     lambda lint: any("needs autoscaling.targetCPUUtilizationPercentage" in f for f in lint.fails)),
    ("autoscaling on the in-memory store",
     {"replicaCount": 1, "redis": {"url": "", "allowInMemory": True}, "autoscaling": {"enabled": True}},
     lambda lint: any("autoscaling.enabled with redis.allowInMemory" in f for f in lint.fails)),
    ("autoscaling maxReplicas 0", {"autoscaling": {"maxReplicas": 0}}, lambda lint: bool(lint.errors)),
    ("networkPolicy peer with an unknown key", {"networkPolicy": {"enabled": True, "ingress": {"from": [
        {"podSelectr": {}}]}}}, lambda lint: bool(lint.errors)),
    ("networkPolicy ipBlock without cidr", {"networkPolicy": {"enabled": True, "egress": {"redis": {"to": [
        {"ipBlock": {}}]}}}}, lambda lint: bool(lint.errors)),
    ("networkPolicy redis port out of range", {"networkPolicy": {"egress": {"redis": {"ports": [70000]}}}},
     lambda lint: bool(lint.errors)),
    ("tests.tokenSecretKey not a Secret key", {"tests": {"tokenSecretKey": "a token"}}, lambda lint: bool(lint.errors)),
    ("readiness probe slower than the drain", {"probes": {"readiness": {"periodSeconds": 5}}},
     lambda lint: any("longer than shutdown.drainSeconds" in f for f in lint.fails)),
    ("shutdown.drainSeconds negative", {"shutdown": {"drainSeconds": -1}}, lambda lint: bool(lint.errors)),
    ("redis.caSecret with only redis:// cluster seeds",
     {"redis": {"url": "", "clusterUrls": CLUSTER_URLS[:2], "caSecret": {"name": CA_SECRET}}},
     lambda lint: any("no URL in redis.clusterUrls is rediss://" in f for f in lint.fails)),
]


# Other valid combinations, which must render cleanly: name, values, check on the manifests.
GOOD_VALUES: list[tuple[str, dict[str, Any], Callable[[Checks], bool]]] = [
    ("bundled Redis without auth or persistence",
     {"redis": {"bundled": {"enabled": True, "auth": {"enabled": False}, "persistence": {"enabled": False}}},
      "secrets": {"adminTokens": [ADMIN]}},
     lambda c: dig(controller(c)[2], "ROLLOUT_REDIS_URL", "value") == (
         f"redis://{FULLNAME}-redis..svc.cluster.local:6379/0")  # lint renders with an empty namespace
     and not dig(c.one("StatefulSet", f"{FULLNAME}-redis"), "spec", "volumeClaimTemplates")
     and not c.find("Secret", f"{FULLNAME}-redis")),
    ("existingSecret with bundled Redis",
     {"existingSecret": "mine", "redis": {"bundled": {"enabled": True, "auth": {"password": "s3cret-pw"}}}},
     lambda c: dig(controller(c)[2], "ROLLOUT_REDIS_URL", "value").startswith("redis://:$(REDIS_PASSWORD)@")
     and base64.b64decode(dig(c.one("Secret", f"{FULLNAME}-redis"), "data", "redis-password")) == b"s3cret-pw"),
    ("existingSecret holding Redis Cluster seed URLs",
     {"existingSecret": "mine", "redis": {"existingSecretKey": "ROLLOUT_REDIS_CLUSTER_URLS"}},
     lambda c: dig(controller(c)[2], "ROLLOUT_REDIS_CLUSTER_URLS", "valueFrom", "secretKeyRef")
     == {"name": "mine", "key": "ROLLOUT_REDIS_CLUSTER_URLS", "optional": False}
     and "ROLLOUT_REDIS_URL" not in controller(c)[2]),
    ("Redis Cluster seeds with a CA (default key ca.crt)",
     {"secrets": {"adminTokens": [ADMIN]}, "redis": {"clusterUrls": CLUSTER_URLS, "caSecret": {"name": CA_SECRET}}},
     lambda c: redis_ca_file(c) == (f"{CA_DIR}/ca.crt", f"{CA_DIR}/ca.crt", "ca.crt")
     and "ROLLOUT_REDIS_CLUSTER_URLS" in controller(c)[2]),
    ("existingSecret with a CA (URL scheme not visible to the chart)",
     {"existingSecret": "mine", "redis": {"caSecret": {"name": CA_SECRET}}},
     lambda c: redis_ca_file(c)[0] == redis_ca_file(c)[1] == f"{CA_DIR}/ca.crt"),
    ("one replica on the in-memory store",
     {"replicaCount": 1, "redis": {"allowInMemory": True}, "secrets": {"adminTokens": [ADMIN]}},
     lambda c: "ROLLOUT_REDIS_URL" not in controller(c)[2] and dig(controller(c)[0], "spec", "replicas") == 1),
    ("NetworkPolicy with an external Redis, open ingress, no notification egress, no test pod",
     {**VALID, "tests": {"enabled": False},
      "networkPolicy": {"enabled": True, "egress": {"redis": {"to": [{"ipBlock": {"cidr": "10.0.0.0/24"}}],
                                                              "ports": [6379, 6380]},
                                                    "notify": {"enabled": False}}}},
     lambda c: dig(c.one("NetworkPolicy", FULLNAME), "spec", "ingress") == [
         {"ports": [{"port": "http", "protocol": "TCP"}]}]
     and dig(c.one("NetworkPolicy", FULLNAME), "spec", "egress", 1) == {
         "ports": [{"port": 6379, "protocol": "TCP"}, {"port": 6380, "protocol": "TCP"}],
         "to": [{"ipBlock": {"cidr": "10.0.0.0/24"}}]}
     and len(dig(c.one("NetworkPolicy", FULLNAME), "spec", "egress")) == 2
     and not c.find("Pod") and "doctor-token" not in (dig(c.one("Secret", FULLNAME), "data") or {})),
    ("existingSecret: the test pod reads doctor-token from it; no preStop hook",
     {"existingSecret": "mine", "shutdown": {"preStopSleepSeconds": 0}},
     lambda c: dig(c.one("Pod", f"{FULLNAME}-test-doctor"), "spec", "containers", 0, "env", 2, "valueFrom",
                   "secretKeyRef") == {"name": "mine", "key": "doctor-token"}
     and "lifecycle" not in controller(c)[1]),
    ("digest-pinned image, raw topology constraints, no PDB",
     {"image": {"digest": "sha256:" + "a" * 64}, "podDisruptionBudget": {"enabled": False},
      "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                                     "whenUnsatisfiable": "DoNotSchedule"}], **VALID},
     lambda c: dig(controller(c)[1], "image") == "ghcr.io/example/rollout-controller@sha256:" + "a" * 64
     and not c.find("PodDisruptionBudget")
     and dig(controller(c)[0], "spec", "template", "spec", "topologySpreadConstraints", 0,
             "whenUnsatisfiable") == "DoNotSchedule"),
]


def case_bad_values(chart: Path, work: Path) -> list[str]:
    problems = []
    base = run_lint(chart_copy(chart, work, "valid-base", VALID))
    if base.errors or base.fails:
        problems.append(f"the valid base is not accepted: errors {base.errors}, failures {base.fails}")
    for i, (label, values, ok) in enumerate(GOOD_VALUES):
        lint = run_lint(chart_copy(chart, work, f"good-{i}", values))
        c = rendered_checks(lint, problems)
        if lint.errors or lint.fails or c is None:
            problems.append(f"valid values refused: {label} (errors {lint.errors}, failures {lint.fails})")
            continue
        try:
            good = ok(c) and not c.problems
        except Exception as e:  # noqa: BLE001
            good, c.problems = False, c.problems + [f"{type(e).__name__}: {e}"]
        if not good:
            problems.append(f"unexpected render for {label}: {c.problems or 'check failed'}")
    for i, (label, override, rejected) in enumerate(BAD_VALUES):
        lint = run_lint(chart_copy(chart, work, f"bad-{i}", deep_merge(VALID, override)))
        if not rejected(lint):
            problems.append(f"not rejected: {label} (errors {lint.errors}, failures {lint.fails})")
    return problems


CASES = [
    ("chart as shipped", case_shipped),
    ("Ingress + HTTPRoute + HPA + NetworkPolicy + helm test pod", case_exposed),
    ("README values table matches values.yaml and values.schema.json", case_readme_values),
    ("bundled Redis + ServiceMonitor + PrometheusRule", case_bundled),
    ("existingSecret + external Redis", case_existing_secret),
    ("external Redis Cluster (redis.clusterUrls)", case_cluster),
    ("external Redis over TLS with a private CA (redis.caSecret)", case_redis_ca),
    (f"bad values are rejected ({len(BAD_VALUES)} kinds; {len(GOOD_VALUES)} other valid sets render)",
     case_bad_values),
]


def render(chart: Path, values_file: str) -> int:
    import yaml  # noqa: PLC0415

    overrides = None if values_file == "-" else (yaml.safe_load(Path(values_file).read_text()) or {})
    with tempfile.TemporaryDirectory(prefix="rollout-chart-render-") as tmp:
        lint = run_lint(chart_copy(chart, Path(tmp), "render", overrides))
        for path in lint.errors:
            print(f"lint error in {path}", file=sys.stderr)
        for msg in lint.fails:
            print(f"render failure: {msg}", file=sys.stderr)
        try:
            sys.stdout.write(lint._dump("LINTDUMP") + "\n")
        except AssertionError as e:
            print(e, file=sys.stderr)
            return 1
    return 1 if lint.errors or lint.fails else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("chart", nargs="?", default=str(Path(__file__).resolve().parent.parent / "charts" / "rollout-controller"))
    parser.add_argument("--lint-one", metavar="DIR", help=argparse.SUPPRESS)
    parser.add_argument("--render", metavar="VALUES_YAML",
                        help="instead of the checks, print the manifests rendered with these values merged over "
                             "the chart's (a stand-in for `helm template`; '-' = no overrides)")
    args = parser.parse_args()
    if args.lint_one:
        return lint_one(args.lint_one)
    if args.render:
        return render(Path(args.chart).resolve(), args.render)

    chart = Path(args.chart).resolve()
    if not (chart / "Chart.yaml").is_file():
        print(f"no chart at {chart}", file=sys.stderr)
        return 2
    passed = failed = 0
    with tempfile.TemporaryDirectory(prefix="rollout-chart-lint-") as tmp:
        for label, case in CASES:
            try:
                problems = case(chart, Path(tmp))
            except Exception as e:  # noqa: BLE001 (a crash is a failed case, reported as such)
                problems = [f"{type(e).__name__}: {' '.join(str(e).split())}"]
            if problems:
                failed += 1
                print(f"FAIL {label}")
                for p in problems:
                    print(f"     - {p}")
            else:
                passed += 1
                print(f"PASS {label}")
            sys.stdout.flush()
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
