#!/usr/bin/env python3
"""Checks of the Helm chart's rendered manifests, run by scripts/check-helm.sh.

  check-helm.py render --chart deploy/helm/infermon --otelcol BIN --jaeger BIN --amtool BIN
                       --work DIR RENDER.yaml...
      Checks of `helm template` output against the repository's sources, the chart's
      hardening rules and the programs that read the shipped configs (each listed in
      check_render's docstring).

  check-helm.py schema --chart deploy/helm/infermon
      values.schema.json and values.yaml describe the same keys (check_schema's docstring),
      with controls: a key added to values.yaml, a property dropped from or added to the
      schema must each be caught, so the check cannot pass by comparing nothing.

  check-helm.py apiserver --kube-apiserver BIN --etcd BIN --crds DIR --work DIR RENDER.yaml...
      Starts etcd and kube-apiserver on loopback, installs the prometheus-operator CRDs the
      renders use, and POSTs every rendered object with ?dryRun=All&fieldValidation=Strict, in
      a namespace labelled to warn on PodSecurity "restricted" violations. Fails on any
      rejected object and on any PodSecurity warning not listed in EXPECTED_POD_SECURITY.

Exit status 0 when every check passed; each failure is printed with the object it concerns.
"""

import argparse
import base64
import glob
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKLOADS = {"Deployment", "DaemonSet", "StatefulSet"}


class Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
    """Safe loading (libyaml when present: the CRDs are megabytes) where a plain `=` is the
    string "=", as in YAML 1.2 and Kubernetes' own parser (PyYAML's YAML 1.1 makes it a
    'value' tag; the CRDs' enums contain it)."""


Loader.add_constructor("tag:yaml.org,2002:value", lambda loader, node: loader.construct_scalar(node))

# The chart's files/ copies and the repository sources their objects must carry verbatim:
# (component label, kind, data key) -> source path.
VERBATIM = {
    ("collector-agent", "ConfigMap", "agent.yaml"): "otel-collector/agent.yaml",
    ("collector-gateway", "ConfigMap", "gateway.yaml"): "otel-collector/gateway.yaml",
    ("jaeger", "ConfigMap", "config.yaml"): "deploy/jaeger/config.yaml",
    ("alertmanager", "ConfigMap", "infermon.tmpl"): "deploy/alertmanager/templates/infermon.tmpl",
}

# PodSecurity "restricted" violations that are the point of a component, by component label:
# the collector agent reads the node's /proc and mounts (host metrics) through a hostPath; the
# gpu-agent, with gpuAgent.hostPID, names the node's GPU processes. Anything else fails.
EXPECTED_POD_SECURITY = {
    "collector-agent": {"hostPath volumes", "restricted volume types"},
    "gpu-agent": {"host namespaces"},
}


def load_docs(path):
    with open(path) as f:
        return [d for d in yaml.load_all(f, Loader=Loader) if d]


def ident(doc):
    m = doc.get("metadata", {})
    return f"{doc.get('kind')}/{m.get('name')}"


def component(doc):
    return doc.get("metadata", {}).get("labels", {}).get("app.kubernetes.io/component", "")


def read(rel):
    with open(os.path.join(ROOT, rel)) as f:
        return f.read()


def norm(v):
    """JSON-comparable form: Helm's fromYaml turns every number into a float."""
    if isinstance(v, dict):
        return {k: norm(x) for k, x in v.items()}
    if isinstance(v, list):
        return [norm(x) for x in v]
    if isinstance(v, bool):
        return v
    if isinstance(v, (int, float)):
        return float(v)
    return v


# ---- render ----------------------------------------------------------------------------------
def check_pod(doc, errs):
    """Hardening of one workload's pod template."""
    spec = doc["spec"]["template"]["spec"]
    psc = spec.get("securityContext", {})
    who = ident(doc)
    if psc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
        errs.append(f"{who}: pod seccompProfile is not RuntimeDefault")
    if spec.get("hostNetwork"):
        errs.append(f"{who}: hostNetwork")
    for c in spec.get("initContainers", []) + spec.get("containers", []):
        cw = f"{who} container {c['name']}"
        image = c.get("image", "")
        name, _, tag = image.rpartition(":")
        if not name or "/" in tag or not tag:
            errs.append(f"{cw}: image {image!r} has no tag")
        elif tag == "latest":
            errs.append(f"{cw}: image {image!r} uses latest")
        res = c.get("resources", {})
        for kind in ("requests", "limits"):
            for r in ("cpu", "memory"):
                if r not in res.get(kind, {}):
                    errs.append(f"{cw}: no {kind}.{r}")
        csc = c.get("securityContext", {})
        eff = {**psc, **csc}
        if eff.get("runAsNonRoot") is not True:
            errs.append(f"{cw}: runAsNonRoot is not true")
        if eff.get("runAsUser", 1) == 0:
            errs.append(f"{cw}: runs as uid 0")
        if csc.get("readOnlyRootFilesystem") is not True:
            errs.append(f"{cw}: root filesystem is not read-only")
        if csc.get("allowPrivilegeEscalation") is not False:
            errs.append(f"{cw}: allowPrivilegeEscalation is not false")
        if csc.get("privileged"):
            errs.append(f"{cw}: privileged")
        if "ALL" not in csc.get("capabilities", {}).get("drop", []):
            errs.append(f"{cw}: capabilities are not all dropped")
        if csc.get("capabilities", {}).get("add"):
            errs.append(f"{cw}: adds capabilities")


def check_collector_env(doc, chart, errs):
    """The chart sets only variables the collector's config reads, and every variable the config
    reads without a default."""
    for c in doc["spec"]["template"]["spec"]["containers"]:
        cfg = next((a.split("=", 1)[1] for a in c.get("args", [])
                    if a.startswith("--config=") and not a.startswith("--config=yaml:")), None)
        if not cfg:
            continue
        text = open(os.path.join(chart, "files/otel-collector", os.path.basename(cfg))).read()
        reads = set(re.findall(r"\$\{env:([A-Za-z0-9_]+)", text))
        required = set(re.findall(r"\$\{env:([A-Za-z0-9_]+)\}", text))
        sets = {e["name"] for e in c.get("env", [])}
        # Read by the collector runtime itself, or only feeding other variables ($(K8S_...)).
        runtime = {"GOMEMLIMIT", "OTEL_RESOURCE_ATTRIBUTES"}
        for name in sorted(sets - reads - runtime):
            if not name.startswith("K8S_"):
                errs.append(f"{ident(doc)}: sets {name}, which {os.path.basename(cfg)} does not read")
        for name in sorted(required - sets):
            errs.append(f"{ident(doc)}: {os.path.basename(cfg)} needs {name} (no default), not set")


def container_env(c):
    """The container's environment as Kubernetes would set it: $(VAR) expanded from earlier
    entries; downward-API values get stand-ins."""
    env = {}
    for e in c.get("env", []):
        if "value" in e:
            env[e["name"]] = re.sub(r"\$\(([A-Za-z0-9_]+)\)", lambda m: env.get(m.group(1), m.group(0)),
                                    str(e["value"]))
        elif "valueFrom" in e:
            env[e["name"]] = "stand-in-" + e["name"].lower().replace("_", "-")
    return env


def run_program(cmd, env, work):
    out = subprocess.run(cmd, env={"PATH": os.environ.get("PATH", ""), "HOME": work, **env},
                         capture_output=True, text=True, cwd=work, timeout=120)
    return out.returncode, (out.stdout + out.stderr).strip()


def check_programs(docs, programs, work, name):
    """Each config the render ships, validated by the program that reads it, with the
    environment the chart gives that program: the collector's and Jaeger's `validate`,
    `amtool check-config`. Returns (errors, count)."""
    errs, n = [], 0
    cms = {(component(d), k): v for d in docs if d.get("kind") == "ConfigMap"
           for k, v in d.get("data", {}).items()}
    os.makedirs(work, exist_ok=True)
    for doc in docs:
        if doc.get("kind") not in WORKLOADS:
            continue
        comp = component(doc)
        for c in doc["spec"]["template"]["spec"]["containers"]:
            args = c.get("args", [])
            env = container_env(c)
            # A value naming a hostPath mount (the agent's /hostfs) is the host's path here.
            vols = {v["name"]: v for v in doc["spec"]["template"]["spec"].get("volumes", [])}
            for m in c.get("volumeMounts", []):
                hp = vols.get(m["name"], {}).get("hostPath")
                if hp:
                    env = {k: (hp["path"] if v == m["mountPath"] else v) for k, v in env.items()}
            if comp.startswith("collector-"):
                key = os.path.basename(args[0].split("=", 1)[1])
                path = os.path.join(work, f"{comp}-{key}")
                with open(path, "w") as f:
                    f.write(cms[(comp, key)])
                cmd = [programs["otelcol"], "validate", f"--config={path}"] + args[1:]
            elif comp == "jaeger":
                path = os.path.join(work, "jaeger-config.yaml")
                with open(path, "w") as f:
                    f.write(cms[("jaeger", "config.yaml")])
                cmd = [programs["jaeger"], "validate", "--config", path]
            else:
                continue
            n += 1
            rc, out = run_program(cmd, env, work)
            if rc != 0:
                errs.append(f"{name}: {ident(doc)}: {os.path.basename(cmd[0])} validate failed: {out[-600:]}")
    for doc in docs:
        if doc.get("kind") == "Secret" and component(doc) == "alertmanager":
            d = os.path.join(work, "alertmanager")
            os.makedirs(os.path.join(d, "templates"), exist_ok=True)
            with open(os.path.join(d, "alertmanager.yml"), "wb") as f:
                f.write(base64.b64decode(doc["data"]["alertmanager.yml"]))
            with open(os.path.join(d, "templates", "infermon.tmpl"), "w") as f:
                f.write(cms[("alertmanager", "infermon.tmpl")])
            n += 1
            rc, out = run_program([programs["amtool"], "check-config", os.path.join(d, "alertmanager.yml")], {}, d)
            if rc != 0:
                errs.append(f"{name}: {ident(doc)}: amtool check-config failed: {out[-600:]}")
    return errs, n


def rule_groups():
    groups = []
    for path in sorted(glob.glob(os.path.join(ROOT, "deploy/prometheus/rules/*.yml"))):
        with open(path) as f:
            groups += yaml.load(f, Loader=Loader)["groups"]
    return groups


def check_render(chart, paths, programs, work):
    """Per rendered object: workloads hardened (pinned images, requests and limits, non-root,
    read-only root FS, no escalation, capabilities dropped, seccomp RuntimeDefault); collector
    env agrees with its config; config copies verbatim; PrometheusRule groups equal the rule
    files; dashboard ConfigMaps equal grafana/dashboards/*.json; the collector, Jaeger and
    Alertmanager configs validated by their programs with the chart's environment. Each kind
    of comparison must happen at least once over all renders, or the check fails (nothing
    vacuous)."""
    errs, counts = [], {"workloads": 0, "verbatim": 0, "rules": 0, "dashboards": 0, "programs": 0}
    dashboards = {os.path.basename(p): open(p).read()
                  for p in glob.glob(os.path.join(ROOT, "grafana/dashboards/*.json"))}
    for path in paths:
        name = os.path.basename(path)
        docs = load_docs(path)
        seen_dash = set()
        for doc in docs:
            kind, comp = doc.get("kind"), component(doc)
            who = f"{name}: {ident(doc)}"
            if kind in WORKLOADS:
                counts["workloads"] += 1
                e = []
                check_pod(doc, e)
                if comp.startswith("collector-"):
                    check_collector_env(doc, chart, e)
                errs += [f"{name}: {x}" for x in e]
            if kind == "ConfigMap":
                for key, value in doc.get("data", {}).items():
                    src = VERBATIM.get((comp, kind, key))
                    if src:
                        counts["verbatim"] += 1
                        if value != read(src):
                            errs.append(f"{who}: data[{key}] differs from {src}")
                    if comp == "grafana-dashboards":
                        base = key.removeprefix("infermon-")
                        seen_dash.add(base)
                        counts["dashboards"] += 1
                        if base not in dashboards:
                            errs.append(f"{who}: {key} has no grafana/dashboards/{base}")
                        elif value != dashboards[base]:
                            errs.append(f"{who}: {key} differs from grafana/dashboards/{base}")
                        else:
                            json.loads(value)
            if kind == "Secret" and comp == "alertmanager" and "alertmanager.yml" in doc.get("data", {}):
                counts["verbatim"] += 1
                got = base64.b64decode(doc["data"]["alertmanager.yml"]).decode()
                if got != read("deploy/alertmanager/alertmanager.yml"):
                    # Only a config given in values may differ; the check's examples give none.
                    errs.append(f"{who}: alertmanager.yml differs from deploy/alertmanager/alertmanager.yml")
            if kind == "PrometheusRule":
                counts["rules"] += 1
                want = norm(rule_groups())
                got = norm(doc["spec"]["groups"])
                if got != want:
                    gn = [g["name"] for g in got]
                    wn = [g["name"] for g in want]
                    diff = [w["name"] for g, w in zip(got, want) if g != w]
                    detail = f"groups {gn} vs {wn}" if gn != wn else f"group(s) {diff} differ"
                    errs.append(f"{who}: spec.groups differ from deploy/prometheus/rules/*.yml ({detail})")
        e, n = check_programs(docs, programs, os.path.join(work, name), name)
        errs += e
        counts["programs"] += n
        if seen_dash and seen_dash != set(dashboards):
            errs.append(f"{name}: dashboards {sorted(seen_dash)} != grafana/dashboards {sorted(dashboards)}")
        print(f"{name}: {len(docs)} objects")
    for what, n in counts.items():
        if n == 0:
            errs.append(f"no {what} were compared in any render: the check would be vacuous")
    print("compared: " + ", ".join(f"{n} {w}" for w, n in counts.items()))
    for e in errs:
        print("FAIL " + e)
    return not errs


# ---- schema ----------------------------------------------------------------------------------
# Schema properties values.yaml does not set, each with the reason it may be absent there.
SCHEMA_ONLY = {
    "global": "Helm gives a chart used as a dependency its parent's `global` values; this chart "
              "reads none, but must not refuse them",
    "collector.gateway.tailSampling.slowModelA.model": "slowModelA defaults to null (the config's "
                                                       "own model); the schema describes the map a user sets",
    "collector.gateway.tailSampling.slowModelA.ms": "as slowModelA.model",
    "collector.gateway.tailSampling.slowModelB.model": "as slowModelA.model",
    "collector.gateway.tailSampling.slowModelB.ms": "as slowModelA.model",
}

JSON_TYPES = {bool: "boolean", int: "integer", float: "number", str: "string", list: "array",
              dict: "object", type(None): "null"}


def schema_errors(values, schema, path=""):
    """Differences between values.yaml (parsed) and the schema node describing it."""
    errs = []
    props = schema.get("properties", {})
    if schema.get("additionalProperties") is not False:
        errs.append(f"{path or '<top>'}: an infermon object without additionalProperties: false "
                    "(a misspelt key would be ignored)")
    for key, value in (values or {}).items():
        where = f"{path}.{key}" if path else key
        prop = props.get(key)
        if prop is None:
            errs.append(f"{where}: in values.yaml, not in values.schema.json")
            continue
        if not str(prop.get("description", "")).strip():
            errs.append(f"{where}: no description in the schema")
        types = prop.get("type")
        types = types if isinstance(types, list) else [types]
        have = JSON_TYPES[type(value)]
        if have not in types and not (have == "integer" and "number" in types):
            errs.append(f"{where}: values.yaml's default is {have}, the schema says {types}")
        if "properties" in prop:
            errs += schema_errors(value if isinstance(value, dict) else {}, prop, where)
        elif isinstance(value, dict) and prop.get("additionalProperties") is False:
            errs.append(f"{where}: closed in the schema but lists no properties")
    for key, prop in props.items():
        where = f"{path}.{key}" if path else key
        if key not in (values or {}):
            if where not in SCHEMA_ONLY:
                errs.append(f"{where}: in values.schema.json, not in values.yaml (nor in SCHEMA_ONLY)")
            if not str(prop.get("description", "")).strip():
                errs.append(f"{where}: no description in the schema")
            if "properties" in prop:
                errs += schema_errors({}, prop, where)
    return errs


def check_schema(chart):
    """values.schema.json against values.yaml: every key of values.yaml is a property of the
    schema (recursing into infermon's own objects; a Kubernetes-typed value such as resources
    or affinity is one leaf), with a description and a type its default fits; every infermon
    object is closed (additionalProperties: false); the schema has no property values.yaml
    lacks unless SCHEMA_ONLY gives the reason; draft-07, the version Helm validates. Controls:
    three mutations of the pair must each be reported."""
    with open(os.path.join(chart, "values.yaml")) as f:
        values = yaml.load(f, Loader=Loader)
    with open(os.path.join(chart, "values.schema.json")) as f:
        schema = json.load(f)
    errs = []
    if schema.get("$schema") != "http://json-schema.org/draft-07/schema#":
        errs.append(f"$schema is {schema.get('$schema')!r}, not draft-07")
    for where in SCHEMA_ONLY:
        node = schema
        for key in where.split("."):
            node = node.get("properties", {}).get(key, {})
        if not node:
            errs.append(f"SCHEMA_ONLY lists {where}, which the schema does not have")
    errs += schema_errors(values, schema)

    def count(node):
        return sum(1 + count(p) for p in node.get("properties", {}).values())
    # Controls: each mutation must be caught, or the comparison is vacuous.
    added = json.loads(json.dumps(values))
    added["collector"]["agent"]["resoures"] = {}
    dropped = json.loads(json.dumps(schema))
    del dropped["properties"]["relay"]["properties"]["queueSpans"]
    extra = json.loads(json.dumps(schema))
    extra["properties"]["jaeger"]["properties"]["replicas"] = {"type": "integer", "description": "x"}
    for what, (v, s), needle in [
        ("a key added to values.yaml", (added, schema), "collector.agent.resoures"),
        ("a property dropped from the schema", (values, dropped), "relay.queueSpans"),
        ("a property added to the schema", (values, extra), "jaeger.replicas"),
    ]:
        found = [e for e in schema_errors(v, s) if e.startswith(needle + ":")]
        if not found:
            errs.append(f"control: {what} ({needle}) was not reported")
        else:
            print(f"control: {what} reported: {found[0]}")
    print(f"values.schema.json: {count(schema)} properties, {len(SCHEMA_ONLY)} of them not in values.yaml")
    for e in errs:
        print("FAIL " + e)
    return not errs


# ---- apiserver -------------------------------------------------------------------------------
def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Api:
    def __init__(self, base, token, cafile):
        self.base, self.token = base, token
        self.ctx = ssl.create_default_context(cafile=cafile)
        # The self-signed serving certificate names localhost; we connect by IP.
        self.ctx.check_hostname = False

    def call(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method)
        req.add_header("Authorization", "Bearer " + self.token)
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, context=self.ctx, timeout=60) as r:
                raw = r.read()
                try:
                    payload = json.loads(raw or b"{}")
                except ValueError:  # /readyz and friends answer plain text
                    payload = {"message": raw.decode(errors="replace")}
                return r.status, payload, r.headers.get_all("Warning") or []
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                payload = json.loads(raw)
            except ValueError:
                payload = {"message": raw.decode(errors="replace")}
            return e.code, payload, e.headers.get_all("Warning") or []


def wait_for(what, fn, timeout, proc_logs):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        for proc, log in proc_logs:
            if proc.poll() is not None:
                raise SystemExit(f"{what}: {proc.args[0]} exited ({proc.returncode}); log tail:\n"
                                 + "".join(open(log).readlines()[-30:]))
        try:
            if fn():
                return
        except (OSError, urllib.error.URLError) as e:
            last = e
        time.sleep(0.5)
    raise SystemExit(f"timed out after {timeout}s waiting for {what} (last error: {last})")


def pod_security_violations(warning):
    """Names of the PodSecurity checks a `would violate PodSecurity ...` warning lists."""
    _, _, rest = warning.partition('": ')
    return set(re.findall(r'(?:^|\), )([a-zA-Z][a-zA-Z ]*?) \(', rest))


def check_apiserver(args):
    os.makedirs(args.work, exist_ok=True)
    token = base64.b16encode(os.urandom(16)).decode().lower()
    with open(f"{args.work}/tokens.csv", "w") as f:
        f.write(f'{token},infermon-check,infermon-check,"system:masters"\n')
    key = f"{args.work}/sa.key"
    subprocess.run(["openssl", "genrsa", "-out", key, "2048"], check=True, capture_output=True)
    etcd_port, peer_port, api_port = free_port(), free_port(), free_port()
    procs = []

    def start(cmd, log):
        f = open(log, "w")
        p = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
        procs.append((p, log))
        return p

    try:
        t0 = time.monotonic()
        start([args.etcd, "--name", "check", "--data-dir", f"{args.work}/etcd",
               "--listen-client-urls", f"http://127.0.0.1:{etcd_port}",
               "--advertise-client-urls", f"http://127.0.0.1:{etcd_port}",
               "--listen-peer-urls", f"http://127.0.0.1:{peer_port}",
               "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer_port}",
               "--initial-cluster", f"check=http://127.0.0.1:{peer_port}",
               # Throwaway data: fsync buys nothing here and costs seconds on a busy disk.
               "--unsafe-no-fsync", "--log-level", "warn"], f"{args.work}/etcd.log")
        start([args.kube_apiserver,
               f"--etcd-servers=http://127.0.0.1:{etcd_port}",
               "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
               f"--secure-port={api_port}", f"--cert-dir={args.work}/certs",
               f"--token-auth-file={args.work}/tokens.csv", "--authorization-mode=AlwaysAllow",
               "--anonymous-auth=false",
               "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
               f"--service-account-key-file={key}", f"--service-account-signing-key-file={key}",
               "--service-cluster-ip-range=10.96.0.0/16", "--profiling=false"],
              f"{args.work}/kube-apiserver.log")
        cert = f"{args.work}/certs/apiserver.crt"
        wait_for("the serving certificate", lambda: os.path.exists(cert), 180, procs)
        api = Api(f"https://127.0.0.1:{api_port}", token, cert)
        wait_for("kube-apiserver /readyz", lambda: api.call("GET", "/readyz")[0] == 200, 300, procs)
        _, ver, _ = api.call("GET", "/version")
        print(f"kube-apiserver {ver.get('gitVersion')} ready on 127.0.0.1:{api_port} "
              f"(etcd 127.0.0.1:{etcd_port}) in {time.monotonic() - t0:.0f}s")
        return dry_run_all(api, args)
    finally:
        for p, _ in reversed(procs):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p, _ in reversed(procs):
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()


def dry_run_all(api, args):
    renders = {os.path.basename(p): load_docs(p) for p in args.renders}
    errs = []

    # CRDs for the custom kinds the renders use, from prometheus-operator's module.
    kinds = {(d["apiVersion"].split("/")[0], d["kind"]) for docs in renders.values() for d in docs
             if "." in d["apiVersion"].split("/")[0] and "/" in d["apiVersion"]}
    crds = {}
    for path in glob.glob(os.path.join(args.crds, "*.yaml")):
        with open(path) as f:
            crd = yaml.load(f, Loader=Loader)
        crds[(crd["spec"]["group"], crd["spec"]["names"]["kind"])] = crd
    for key in sorted(kinds):
        if key[0] == "apps" or key[0].endswith(".k8s.io"):
            continue
        crd = crds.get(key)
        if not crd:
            errs.append(f"no CRD for {key[1]} ({key[0]}) in {args.crds}")
            continue
        code, body, _ = api.call("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)
        if code not in (200, 201):
            errs.append(f"installing CRD {crd['metadata']['name']}: {code} {body.get('message')}")
            continue
        name = crd["metadata"]["name"]

        def established(name=name):
            _, b, _ = api.call("GET", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}")
            return any(c["type"] == "Established" and c["status"] == "True"
                       for c in (b.get("status") or {}).get("conditions") or [])
        wait_for(f"CRD {name} established", established, 120, [])
        print(f"installed CRD {name} (prometheus-operator)")
    if errs:
        print("\n".join("FAIL " + e for e in errs))
        return False

    # Discovery: kind -> (collection path prefix, namespaced), as the server says.
    resources = {}

    def discover(gv, prefix):
        code, body, _ = api.call("GET", prefix)
        if code != 200:
            return
        for r in body.get("resources", []):
            if "/" not in r["name"] and "create" in r.get("verbs", []):
                resources[(gv, r["kind"])] = (prefix, r["name"], r["namespaced"])
    discover("v1", "/api/v1")
    _, groups, _ = api.call("GET", "/apis")
    for g in groups.get("groups", []):
        for v in g["versions"]:
            discover(v["groupVersion"], f"/apis/{v['groupVersion']}")

    # Namespaces the objects go to, warning (not refusing) on PodSecurity "restricted".
    namespaces = {d.get("metadata", {}).get("namespace") for docs in renders.values() for d in docs} - {None}
    for ns in sorted(namespaces):
        code, body, _ = api.call("POST", "/api/v1/namespaces", {
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": ns, "labels": {
                "pod-security.kubernetes.io/warn": "restricted",
                "pod-security.kubernetes.io/warn-version": "latest"}}})
        if code not in (200, 201):
            errs.append(f"creating namespace {ns}: {code} {body.get('message')}")

    def post(doc):
        gv, kind = doc["apiVersion"], doc["kind"]
        if (gv, kind) not in resources:
            return None, {"message": f"the server serves no {kind} in {gv}"}, []
        prefix, plural, namespaced = resources[(gv, kind)]
        ns = doc.get("metadata", {}).get("namespace")
        path = f"{prefix}/namespaces/{ns}/{plural}" if namespaced else f"{prefix}/{plural}"
        return api.call("POST", path + "?dryRun=All&fieldValidation=Strict", doc)

    # The check must be able to fail: a misspelt field must be refused by strict validation.
    code, body, _ = post({"apiVersion": "v1", "kind": "ConfigMap",
                          "metadata": {"name": "strict-probe", "namespace": sorted(namespaces)[0]},
                          "data": {"a": "b"}, "dta": {"a": "b"}})
    if code in (200, 201):
        errs.append("control: a ConfigMap with an unknown field `dta` was accepted: validation is not strict")
    else:
        print(f"control: unknown field refused as expected ({code}: {body.get('message', '')[:160]})")

    total = 0
    for name, docs in renders.items():
        ok = 0
        for doc in docs:
            total += 1
            code, body, warnings = post(doc)
            who = f"{name}: {ident(doc)}"
            if code not in (200, 201):
                errs.append(f"{who}: {code} {body.get('message')}")
                continue
            ok += 1
            for w in warnings:
                text = w.split(" ", 2)[-1].strip('"').replace('\\"', '"')
                if "would violate PodSecurity" in text:
                    allowed = EXPECTED_POD_SECURITY.get(component(doc), set())
                    extra = pod_security_violations(text) - allowed
                    if extra or not pod_security_violations(text):
                        errs.append(f"{who}: unexpected PodSecurity warning: {text}")
                    else:
                        print(f"{who}: expected PodSecurity warning: {text}")
                else:
                    errs.append(f"{who}: server warning: {text}")
        print(f"{name}: {ok}/{len(docs)} objects accepted by server-side dry-run")
    if total == 0:
        errs.append("no objects to dry-run")
    for e in errs:
        print("FAIL " + e)
    return not errs


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("render")
    r.add_argument("--chart", required=True)
    r.add_argument("--otelcol", required=True, help="the collector binary (validate)")
    r.add_argument("--jaeger", required=True, help="the Jaeger binary (validate)")
    r.add_argument("--amtool", required=True)
    r.add_argument("--work", required=True, help="scratch directory")
    r.add_argument("renders", nargs="+")
    s = sub.add_parser("schema")
    s.add_argument("--chart", required=True)
    a = sub.add_parser("apiserver")
    a.add_argument("--kube-apiserver", required=True)
    a.add_argument("--etcd", required=True)
    a.add_argument("--crds", required=True)
    a.add_argument("--work", required=True)
    a.add_argument("renders", nargs="+")
    args = ap.parse_args()
    if args.cmd == "render":
        programs = {"otelcol": args.otelcol, "jaeger": args.jaeger, "amtool": args.amtool}
        ok = check_render(args.chart, args.renders, programs, args.work)
    elif args.cmd == "schema":
        ok = check_schema(args.chart)
    else:
        ok = check_apiserver(args)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
