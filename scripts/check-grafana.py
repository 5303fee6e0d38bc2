#!/usr/bin/env python3
"""Structural check of Grafana provisioning (Grafana itself cannot run on these machines).

Usage: check-grafana.py PROMTOOL

Checks grafana/provisioning/datasources/*.yaml, grafana/provisioning/dashboards/*.yaml and
grafana/dashboards/*.json for what Grafana would reject or silently break on: unique names and
uids, references between datasources (exemplar -> traces, traces -> metrics, service map ->
metrics), `$` escaping (Grafana expands $VAR in provisioning files, so PromQL's $__x must be
written $$__x), the dashboard path being mounted by deploy/docker-compose.yml, and every PromQL
query in the provisioning parsing in the real PromQL parser (promtool check rules on a generated
file).
"""
import json
import pathlib
import re
import subprocess
import sys
import tempfile

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
PROV = ROOT / "grafana" / "provisioning"
DASHBOARDS = ROOT / "grafana" / "dashboards"
COMPOSE = ROOT / "deploy" / "docker-compose.yml"

KNOWN_TYPES = {"prometheus", "jaeger", "tempo", "alertmanager", "loki", "zipkin"}
errors = []


def err(msg):
    errors.append(msg)


def unescaped_dollars(path):
    """Lines where a single `$__` would be eaten by Grafana's env expansion."""
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if line.lstrip().startswith("#"):
            continue
        if re.search(r"(?<!\$)\$__", line):
            err(f"{path.relative_to(ROOT)}:{n}: write $$__ for a literal $__ (Grafana expands $VAR)")


def grafana_unescape(s):
    return s.replace("$$", "$")


def check_datasources():
    files = sorted((PROV / "datasources").glob("*.y*ml"))
    if not files:
        err("no datasource provisioning files")
        return {}, []
    by_uid, queries = {}, []
    names = set()
    for f in files:
        unescaped_dollars(f)
        doc = yaml.safe_load(f.read_text())
        if doc.get("apiVersion") != 1:
            err(f"{f.name}: apiVersion must be 1")
        defaults = 0
        for ds in doc.get("datasources") or []:
            name, uid, typ = ds.get("name"), ds.get("uid"), ds.get("type")
            if not name or not uid or not typ:
                err(f"{f.name}: datasource without name/uid/type: {ds}")
                continue
            if name in names or uid in by_uid:
                err(f"{f.name}: duplicate datasource name or uid: {name}/{uid}")
            names.add(name)
            by_uid[uid] = ds
            if typ not in KNOWN_TYPES:
                err(f"{f.name}: {name}: unexpected type {typ}")
            if not re.match(r"^https?://[^/\s]+", str(ds.get("url", ""))):
                err(f"{f.name}: {name}: url must be http(s)://host[:port]")
            if ds.get("access", "proxy") != "proxy":
                err(f"{f.name}: {name}: access must be proxy (the browser cannot reach the stack)")
            defaults += bool(ds.get("isDefault"))
        if defaults != 1:
            err(f"{f.name}: exactly one datasource must be isDefault (found {defaults})")

    trace_types = {"jaeger", "tempo", "zipkin"}
    for uid, ds in by_uid.items():
        jd = ds.get("jsonData") or {}
        if ds["type"] == "prometheus":
            dests = jd.get("exemplarTraceIdDestinations") or []
            if not dests:
                err(f"{uid}: no exemplarTraceIdDestinations: exemplars would not link to traces")
            for d in dests:
                if not d.get("name"):
                    err(f"{uid}: exemplar destination without the trace-id label name")
                if "url" in d:
                    # A plain link: must put the trace id (the exemplar label's raw value) in
                    # an http(s) URL, `$` escaped as `$$` for Grafana's env expansion.
                    url = d["url"]
                    if not url.startswith(("http://", "https://")) or "$${__value.raw}" not in url:
                        err(f"{uid}: exemplar URL {url!r} must be http(s) and contain $${{__value.raw}}")
                    continue
                target = by_uid.get(d.get("datasourceUid"))
                if target is None or target["type"] not in trace_types:
                    err(f"{uid}: exemplar destination {d.get('datasourceUid')} is not a trace datasource")
            kinds = {"url" if "url" in d else "datasource" for d in dests}
            if dests and kinds != {"url", "datasource"}:
                err(f"{uid}: exemplars need both a trace-datasource link and a plain URL link "
                    f"(Grafana's internal link is reported broken upstream)")
        if ds["type"] in trace_types:
            t2m = jd.get("tracesToMetrics")
            if not t2m:
                err(f"{uid}: no tracesToMetrics")
            else:
                target = by_uid.get(t2m.get("datasourceUid"))
                if target is None or target["type"] != "prometheus":
                    err(f"{uid}: tracesToMetrics.datasourceUid is not a Prometheus datasource")
                if not t2m.get("queries"):
                    err(f"{uid}: tracesToMetrics has no queries")
                for q in t2m.get("queries") or []:
                    queries.append((f"{uid} tracesToMetrics '{q.get('name')}'", q.get("query", "")))
            if not (jd.get("nodeGraph") or {}).get("enabled"):
                err(f"{uid}: nodeGraph not enabled")
            # Tempo's service graph reads the metrics-generator's series from Prometheus.
            if "serviceMap" in jd:
                target = by_uid.get((jd.get("serviceMap") or {}).get("datasourceUid"))
                if target is None or target["type"] != "prometheus":
                    err(f"{uid}: serviceMap.datasourceUid is not a Prometheus datasource")
        if ds["type"] == "alertmanager":
            if jd.get("implementation") not in {"prometheus", "mimir", "cortex"}:
                err(f"{uid}: alertmanager implementation must be set (prometheus)")
    return by_uid, queries


def compose_mounts():
    doc = yaml.safe_load(COMPOSE.read_text())
    vols = doc["services"]["grafana"].get("volumes") or []
    mounts = {}
    for v in vols:
        if isinstance(v, str):
            parts = v.split(":")
            mounts[parts[1]] = parts[0]
    return mounts


def check_dashboard_provider(mounts):
    files = sorted((PROV / "dashboards").glob("*.y*ml"))
    if not files:
        err("no dashboard provider file")
    for f in files:
        doc = yaml.safe_load(f.read_text())
        if doc.get("apiVersion") != 1:
            err(f"{f.name}: apiVersion must be 1")
        for p in doc.get("providers") or []:
            if p.get("type", "file") != "file":
                err(f"{f.name}: provider {p.get('name')}: type must be file")
            path = (p.get("options") or {}).get("path")
            if not path:
                err(f"{f.name}: provider {p.get('name')}: no options.path")
            elif mounts.get(path) != "../grafana/dashboards":
                err(f"{f.name}: {path} is not where deploy/docker-compose.yml mounts grafana/dashboards")
    if mounts.get("/etc/grafana/provisioning") != "../grafana/provisioning":
        err("deploy/docker-compose.yml does not mount grafana/provisioning at /etc/grafana/provisioning")
    if not DASHBOARDS.is_dir():
        err("grafana/dashboards/ is missing")


def check_dashboards(by_uid):
    uids = set()
    for f in sorted(DASHBOARDS.glob("*.json")):
        try:
            d = json.loads(f.read_text())
        except json.JSONDecodeError as e:
            err(f"{f.name}: invalid JSON: {e}")
            continue
        uid = d.get("uid")
        if not uid or not d.get("title"):
            err(f"{f.name}: dashboard needs uid and title")
        if uid in uids:
            err(f"{f.name}: duplicate dashboard uid {uid}")
        uids.add(uid)
        for ref in re.findall(r'"datasource"\s*:\s*\{[^}]*"uid"\s*:\s*"([^"$]+)"', f.read_text()):
            if ref not in by_uid and ref not in {"grafana", "-- Grafana --", "-- Mixed --", "-- Dashboard --"}:
                err(f"{f.name}: references unknown datasource uid {ref}")


def check_promql(promtool, queries):
    """Parse every query with the real PromQL parser via a throwaway rules file."""
    if not queries:
        return
    rules = []
    for i, (where, q) in enumerate(queries):
        q = grafana_unescape(q)
        q = q.replace("$__tags", 'service_name="x"').replace("$__rate_interval", "1m")
        q = q.replace("$__interval", "1m").replace("$__range", "1h")
        if "$" in q:
            err(f"{where}: unexpected variable left in query: {q}")
            continue
        rules.append({"record": f"grafana_check:q{i}", "expr": q})
    with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as t:
        yaml.safe_dump({"groups": [{"name": "grafana-provisioning", "rules": rules}]}, t)
    res = subprocess.run([promtool, "check", "rules", t.name], capture_output=True, text=True)
    pathlib.Path(t.name).unlink()
    if res.returncode != 0:
        err("PromQL in provisioning does not parse:\n" + res.stdout + res.stderr)


def main():
    if len(sys.argv) != 2:
        print(__doc__)
        return 2
    by_uid, queries = check_datasources()
    mounts = compose_mounts()
    check_dashboard_provider(mounts)
    check_dashboards(by_uid)
    check_promql(sys.argv[1], queries)
    for e in errors:
        print("error:", e)
    if not errors:
        print(f"grafana provisioning ok: datasources {sorted(by_uid)}, {len(queries)} PromQL queries parsed")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
