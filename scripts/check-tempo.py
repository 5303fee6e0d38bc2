#!/usr/bin/env python3
"""Check the Tempo option (compose profile `tempo`) without running Tempo or Grafana.

Usage: check-tempo.py              check the repository's files; exit 1 on any problem
       check-tempo.py --self-test  prove the check fails: apply known-bad edits (a misspelled
                                   key, a wrong type, a broken reference, ...) to in-memory
                                   copies of the real files, and fail unless each is caught

Tempo is AGPL: it is never built or run here, so nothing can parse tempo/tempo.yaml the way
Tempo does. Instead every key of tempo.yaml, with its value's type, must appear in
tempo/reference/<TEMPO_VERSION>-keys.yaml, which lists them from Tempo's configuration
reference at that release (each entry cites its page and line). Likewise the provisioned
Grafana datasource of type `tempo` against tempo/reference/grafana-<GRAFANA_VERSION>-tempo-
datasource-keys.yaml (Grafana's provisioning docs). Then the wiring between the pieces:

- deploy/docker-compose.yml's `tempo` service mounts tempo.yaml where its command reads it,
  and every path Tempo writes (set in tempo.yaml or Tempo's documented defaults) lies under one
  of its volumes or tmpfs mounts (its root filesystem is read-only);
- the metrics-generator's remote_write reaches the compose Prometheus, which runs the
  remote-write receiver (and exemplar storage, when exemplars are sent);
- the collector's trace exporter (OTLP gRPC, address from INFERMON_JAEGER_OTLP_ADDR, which
  compose takes from INFERMON_TRACES_OTLP_ADDR) can be pointed at Tempo's gRPC receiver port;
- the datasource's URL is the tempo service on Tempo's HTTP port; streaming is on in both or
  neither; the Prometheus datasource's exemplar links include Tempo under the exemplar label
  Tempo writes (trace_id_label_name);
- the metric names Tempo's processors generate collide with no metric that the dashboards,
  the Prometheus rules or the datasources' queries use.
"""
import copy
import json
import pathlib
import re
import sys
import urllib.parse

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
TEMPO_CONFIG = ROOT / "tempo" / "tempo.yaml"
REFERENCE_DIR = ROOT / "tempo" / "reference"
COMPOSE = ROOT / "deploy" / "docker-compose.yml"
DATASOURCES = ROOT / "grafana" / "provisioning" / "datasources"
DASHBOARDS = ROOT / "grafana" / "dashboards"
RULES = ROOT / "deploy" / "prometheus" / "rules"
COLLECTOR = ROOT / "otel-collector" / "config.yaml"
VERSIONS = ROOT / "scripts" / "versions.env"

# Go's time.ParseDuration (what Tempo's durations go through): 10s, 1m30s, 168h; no d or w.
GO_DURATION = re.compile(r"^(0|([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+)$")
# Grafana's time shifts: an optionally negative number and unit.
TIME_SHIFT = re.compile(r"^-?[0-9]+(ms|s|m|h|d|w|M|y)$")
LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
HOST_PORT = re.compile(r"^[A-Za-z0-9_.\-]*:([0-9]{1,5})$")


def versions():
    out = {}
    for line in VERSIONS.read_text().splitlines():
        m = re.match(r"^([A-Z_][A-Z0-9_]*)=(.*)$", line.strip())
        if m:
            out[m.group(1)] = m.group(2)
    return out


def load_yaml(path):
    return yaml.safe_load(path.read_text())


def is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def type_problem(spec, v):
    """None if v has the reference type, else what is wrong."""
    t = spec["type"]
    ok = {
        "map": lambda: isinstance(v, dict),
        "list_of_maps": lambda: isinstance(v, list) and all(isinstance(i, dict) for i in v),
        "string_map": lambda: isinstance(v, dict) and all(
            isinstance(k, str) and isinstance(x, str) for k, x in v.items()),
        "bool": lambda: isinstance(v, bool),
        "int": lambda: isinstance(v, int) and not isinstance(v, bool),
        "float": lambda: is_number(v),
        "string": lambda: isinstance(v, str),
        "duration": lambda: isinstance(v, str) and bool(GO_DURATION.match(v)),
        "time_shift": lambda: isinstance(v, str) and bool(TIME_SHIFT.match(v)),
        "path": lambda: isinstance(v, str) and v.startswith("/"),
        "host_port": lambda: isinstance(v, str) and bool(HOST_PORT.match(v))
        and int(HOST_PORT.match(v).group(1)) <= 65535,
        "url": lambda: isinstance(v, str) and urllib.parse.urlparse(v).scheme in ("http", "https")
        and bool(urllib.parse.urlparse(v).netloc),
        "label_name": lambda: isinstance(v, str) and bool(LABEL_NAME.match(v)),
        "datasource_uid": lambda: isinstance(v, str) and v != "",
        "list_of_strings": lambda: isinstance(v, list) and all(isinstance(i, str) for i in v),
        "list_of_floats": lambda: isinstance(v, list) and all(is_number(i) for i in v),
    }
    if t not in ok:
        return f"reference type {t!r} unknown to this check"
    if not ok[t]():
        return f"is {v!r} ({type(v).__name__}), the reference says {t}"
    if "values" in spec and v not in spec["values"]:
        return f"is {v!r}, the reference allows {spec['values']}"
    if "items" in spec:
        bad = [i for i in v if i not in spec["items"]]
        if bad:
            return f"has {bad}, the reference allows items {spec['items']}"
    return None


def check_keys(node, ref, where, err, prefix="", shown=""):
    """Every key of node (recursively) must be in ref with a value of its type."""
    for k, v in node.items():
        path = f"{prefix}.{k}" if prefix else str(k)
        show = f"{shown}.{k}" if shown else str(k)
        spec = ref["keys"].get(path)
        if spec is None:
            err(f"{show}: no such key in {where} (misspelled, or not documented at this version)")
            continue
        problem = type_problem(spec, v)
        if problem:
            err(f"{show}: {problem} ({spec.get('source', '')})")
            continue
        if spec["type"] == "map":
            check_keys(v, ref, where, err, path, show)
        elif spec["type"] == "list_of_maps":
            for i, item in enumerate(v):
                check_keys(item, ref, where, err, path + "[]", f"{show}[{i}]")


def get(d, dotted, default=None):
    for part in dotted.split("."):
        if not isinstance(d, dict) or part not in d:
            return default
        d = d[part]
    return d


def walk_values(node, ref_keys, prefix=""):
    """(reference path, value) of every leaf, for wiring checks by type."""
    if isinstance(node, dict):
        for k, v in node.items():
            path = f"{prefix}.{k}" if prefix else str(k)
            spec = ref_keys.get(path, {})
            if spec.get("type") == "list_of_maps" and isinstance(v, list):
                for item in v:
                    yield from walk_values(item, ref_keys, path + "[]")
            elif isinstance(v, dict) and spec.get("type") == "map":
                yield from walk_values(v, ref_keys, path)
            else:
                yield path, v


def service_mounts(svc):
    targets = list(svc.get("tmpfs") or [])
    for v in svc.get("volumes") or []:
        if isinstance(v, str):
            parts = v.split(":")
            if len(parts) >= 2:
                targets.append(parts[1])
        elif isinstance(v, dict) and v.get("target"):
            targets.append(v["target"])
    return targets


def under(path, mount):
    mount = mount.rstrip("/") or "/"
    return path == mount or path.startswith(mount + "/")


def compose_default(value):
    """`${VAR:-default}` -> default; anything else unchanged."""
    m = re.fullmatch(r"\$\{[A-Za-z_][A-Za-z0-9_]*:-([^}]*)\}", value or "")
    return m.group(1) if m else value


def promql_texts(data):
    """Every PromQL string the dashboards, rules and datasources hold."""
    out = []
    for name, dash in data["dashboards"].items():
        def rec(node):
            if isinstance(node, dict):
                for k, v in node.items():
                    if k in ("expr", "query") and isinstance(v, str):
                        out.append((name, v))
                    else:
                        rec(v)
            elif isinstance(node, list):
                for v in node:
                    rec(v)
        rec(dash)
    for name, doc in data["rules"].items():
        for g in (doc or {}).get("groups") or []:
            for r in g.get("rules") or []:
                out.append((name, str(r.get("expr", ""))))
    for name, doc in data["datasources"].items():
        for ds in doc.get("datasources") or []:
            for q in get(ds, "jsonData.tracesToMetrics.queries", []) or []:
                out.append((f"{name}:{ds.get('uid')}", str(q.get("query", ""))))
    return out


def check(data):
    """All checks over loaded data (so --self-test can feed it edited copies)."""
    errors = []
    err = errors.append
    tempo, ref, gref = data["tempo"], data["ref"], data["gref"]
    where = f"Tempo {ref['tempo_version']}'s reference ({data['ref_name']})"

    if not isinstance(tempo, dict):
        return ["tempo/tempo.yaml: not a YAML mapping"]
    check_keys(tempo, ref, where, lambda m: err("tempo/tempo.yaml: " + m))

    # ---- compose: the service, its mounts, where Tempo writes ---------------------------------
    services = data["compose"].get("services") or {}
    svc = services.get("tempo")
    if svc is None:
        err("deploy/docker-compose.yml: no `tempo` service")
        svc = {}
    if "tempo" not in (svc.get("profiles") or []):
        err("deploy/docker-compose.yml: service tempo is not in profile `tempo` (Jaeger is the default)")
    image = str(svc.get("image", ""))
    if compose_default(image.partition(":")[2]) != data["tempo_version"]:
        err(f"deploy/docker-compose.yml: tempo image {image!r} is not tagged TEMPO_VERSION={data['tempo_version']}")
    conf_path = None
    for a in svc.get("command") or []:
        if str(a).startswith("-config.file="):
            conf_path = str(a).split("=", 1)[1]
    mounted_conf = [v for v in svc.get("volumes") or [] if isinstance(v, str)
                    and v.split(":")[0] == "../tempo/tempo.yaml"]
    if not conf_path or not mounted_conf or mounted_conf[0].split(":")[1] != conf_path:
        err(f"deploy/docker-compose.yml: tempo reads -config.file={conf_path} but ../tempo/tempo.yaml is mounted at "
            f"{[v.split(':')[1] for v in mounted_conf]}")
    mounts = [m for m in service_mounts(svc) if m != conf_path]
    written = [(p, v) for p, v in walk_values(tempo, ref["keys"])
               if ref["keys"].get(p, {}).get("type") == "path" and isinstance(v, str)]
    written += [(f"default ({d['source']})", d["path"]) for d in ref.get("default_paths") or []]
    for p, path in written:
        if not any(under(path, m) for m in mounts):
            err(f"{p} = {path}: Tempo writes there, but the tempo service has no volume or tmpfs "
                f"over it (mounts {mounts}; the root filesystem is read-only)")

    # ---- remote_write -> Prometheus -----------------------------------------------------------
    prom = services.get("prometheus") or {}
    prom_flags = [str(a) for a in prom.get("command") or []]
    prom_port = 9090
    for p in prom.get("ports") or []:
        prom_port = int(str(p).rsplit(":", 1)[-1])
    rws = get(tempo, "metrics_generator.storage.remote_write", []) or []
    if not rws:
        err("tempo/tempo.yaml: metrics_generator.storage.remote_write is empty: generated metrics go nowhere")
    for i, rw in enumerate(rws):
        u = urllib.parse.urlparse(str(rw.get("url", "")))
        if u.hostname != "prometheus" or (u.port or 80) != prom_port or u.path != "/api/v1/write":
            err(f"tempo/tempo.yaml: remote_write[{i}].url {rw.get('url')!r} is not the compose Prometheus' "
                f"remote-write receiver (http://prometheus:{prom_port}/api/v1/write)")
        if rw.get("send_exemplars") and "--enable-feature=exemplar-storage" not in prom_flags:
            err("deploy/docker-compose.yml: Tempo sends exemplars but Prometheus runs without exemplar storage")
    if "--web.enable-remote-write-receiver" not in prom_flags:
        err("deploy/docker-compose.yml: Prometheus lacks --web.enable-remote-write-receiver (Tempo remote-writes)")
    processors = get(tempo, "overrides.defaults.metrics_generator.processors", []) or []
    for p in ("service-graphs", "span-metrics"):
        if p not in processors:
            err(f"tempo/tempo.yaml: overrides.defaults.metrics_generator.processors lacks {p}")

    # ---- collector -> Tempo -----------------------------------------------------------------------
    grpc_ep = get(tempo, "distributor.receivers.otlp.protocols.grpc.endpoint")
    grpc_port = str(grpc_ep).rsplit(":", 1)[-1] if grpc_ep else None
    exporters = (data["collector"].get("exporters") or {})
    trace_exporters = [k for k, v in exporters.items()
                       if "INFERMON_JAEGER_OTLP_ADDR" in str((v or {}).get("endpoint", ""))]
    if len(trace_exporters) != 1 or not trace_exporters[0].split("/")[0] in ("otlp", "otlp_grpc"):
        err(f"otel-collector/config.yaml: expected one OTLP gRPC exporter reading INFERMON_JAEGER_OTLP_ADDR, "
            f"found {trace_exporters}")
    env = (services.get("otel-collector") or {}).get("environment") or {}
    if env.get("INFERMON_JAEGER_OTLP_ADDR") != "${INFERMON_TRACES_OTLP_ADDR:-jaeger:4317}":
        err("deploy/docker-compose.yml: the collector's INFERMON_JAEGER_OTLP_ADDR must be "
            "${INFERMON_TRACES_OTLP_ADDR:-jaeger:4317} (how the profile's users point it at Tempo)")
    if not grpc_port or f"INFERMON_TRACES_OTLP_ADDR=tempo:{grpc_port}" not in data["compose_text"]:
        err(f"deploy/docker-compose.yml: its header should tell users INFERMON_TRACES_OTLP_ADDR=tempo:{grpc_port} "
            f"(Tempo's OTLP gRPC receiver port)")

    # ---- Grafana datasource -----------------------------------------------------------------------
    by_uid = {}
    for doc in data["datasources"].values():
        for ds in doc.get("datasources") or []:
            by_uid[ds.get("uid")] = ds
    tempo_ds = [ds for ds in by_uid.values() if ds.get("type") == "tempo"]
    gwhere = f"Grafana {gref['grafana_version']}'s Tempo datasource fields ({data['gref_name']})"
    if len(tempo_ds) != 1:
        err(f"grafana provisioning: expected one datasource of type tempo, found {len(tempo_ds)}")
    for ds in tempo_ds:
        uid = ds.get("uid")
        check_keys(ds, gref, gwhere, lambda m, u=uid: err(f"datasource {u}: " + m))
        for path, v in walk_values(ds, gref["keys"]):
            spec = gref["keys"].get(path, {})
            if spec.get("type") == "datasource_uid":
                target = by_uid.get(v)
                if target is None or target.get("type") != spec.get("to"):
                    err(f"datasource {uid}: {path} = {v!r} is not a provisioned {spec.get('to')} datasource")
        u = urllib.parse.urlparse(str(ds.get("url", "")))
        http_port = get(tempo, "server.http_listen_port", 3200)
        if u.hostname != "tempo" or u.port != http_port:
            err(f"datasource {uid}: url {ds.get('url')!r} is not the tempo service on Tempo's HTTP port {http_port}")
        streaming = get(ds, "jsonData.streamingEnabled", {}) or {}
        if any(streaming.values()) != bool(tempo.get("stream_over_http_enabled")):
            err(f"datasource {uid}: streamingEnabled {streaming} but tempo.yaml stream_over_http_enabled = "
                f"{tempo.get('stream_over_http_enabled')}")
        label = get(tempo, "overrides.defaults.metrics_generator.trace_id_label_name", "traceID")
        links = [d for ds2 in by_uid.values() if ds2.get("type") == "prometheus"
                 for d in get(ds2, "jsonData.exemplarTraceIdDestinations", []) or []]
        if not any(d.get("datasourceUid") == uid and d.get("name") == label for d in links):
            err(f"grafana provisioning: no Prometheus exemplar link to datasource {uid} for label {label!r} "
                f"(the exemplar label Tempo writes)")

    # ---- generated metric names vs what is queried -------------------------------------------------
    generated = {m for ms in (ref.get("generated_metrics") or {}).values() for m in ms}
    for where_q, q in promql_texts(data):
        for name in re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", q):
            base = re.sub(r"_(bucket|sum|count)$", "", name)
            if name in generated or base in generated:
                err(f"{where_q}: queries {name}, a metric Tempo's metrics-generator also writes: "
                    f"with the profile `tempo` it would mix Tempo's series into the collector's")
    return errors


def load():
    v = versions()
    tv, gv = v.get("TEMPO_VERSION"), v.get("GRAFANA_VERSION")
    ref_file = REFERENCE_DIR / f"{tv}-keys.yaml"
    gref_file = REFERENCE_DIR / f"grafana-{gv}-tempo-datasource-keys.yaml"
    for f, what in ((ref_file, f"TEMPO_VERSION={tv}"), (gref_file, f"GRAFANA_VERSION={gv}")):
        if not f.exists():
            sys.exit(f"error: {f.relative_to(ROOT)} missing: no reference for {what} "
                     f"(write it from that release's documentation, see tempo/reference/)")
    ref, gref = load_yaml(ref_file), load_yaml(gref_file)
    if str(ref.get("tempo_version")) != tv or str(gref.get("grafana_version")) != gv:
        sys.exit("error: a reference file's version field does not match its name")
    return {
        "tempo_version": tv,
        "tempo": load_yaml(TEMPO_CONFIG),
        "ref": ref, "ref_name": str(ref_file.relative_to(ROOT)),
        "gref": gref, "gref_name": str(gref_file.relative_to(ROOT)),
        "compose": load_yaml(COMPOSE), "compose_text": COMPOSE.read_text(),
        "collector": load_yaml(COLLECTOR),
        "datasources": {f.name: load_yaml(f) for f in sorted(DATASOURCES.glob("*.y*ml"))},
        "dashboards": {f.name: json.loads(f.read_text()) for f in sorted(DASHBOARDS.glob("*.json"))},
        "rules": {f.name: load_yaml(f) for f in sorted(RULES.glob("*.y*ml"))},
    }


def tempo_ds(data):
    for doc in data["datasources"].values():
        for ds in doc.get("datasources") or []:
            if ds.get("type") == "tempo":
                return ds
    raise SystemExit("self-test: no tempo datasource to edit")


def prom_ds(data):
    for doc in data["datasources"].values():
        for ds in doc.get("datasources") or []:
            if ds.get("type") == "prometheus":
                return ds
    raise SystemExit("self-test: no prometheus datasource to edit")


def rename(d, dotted, new):
    *parents, last = dotted.split(".")
    for p in parents:
        d = d[int(p)] if isinstance(d, list) else d[p]
    d[new] = d.pop(last)


def assign(d, dotted, value):
    *parents, last = dotted.split(".")
    for p in parents:
        d = d[int(p)] if isinstance(d, list) else d[p]
    d[last] = value


# (what it does, edit, a fragment the resulting error must contain)
MUTATIONS = [
    ("misspelled top-level key", lambda d: rename(d["tempo"], "stream_over_http_enabled", "stream_over_http_enable"),
     "stream_over_http_enable: no such key"),
    ("misspelled nested key", lambda d: rename(d["tempo"], "metrics_generator.storage.remote_write.0.send_exemplars",
                                               "send_exemplar"),
     "remote_write[0].send_exemplar: no such key"),
    ("key from Tempo 2.x, gone in 3.0", lambda d: assign(d["tempo"], "ingester", {"max_block_duration": "5m"}),
     "ingester: no such key"),
    ("int as a string", lambda d: assign(d["tempo"], "server.http_listen_port", "3200"),
     "server.http_listen_port: is '3200' (str), the reference says int"),
    ("bool as a string", lambda d: assign(d["tempo"], "usage_report.reporting_enabled", "false"),
     "usage_report.reporting_enabled: is 'false' (str), the reference says bool"),
    ("duration Go cannot parse", lambda d: assign(d["tempo"], "overrides.defaults.compaction.block_retention", "7d"),
     "block_retention: is '7d'"),
    ("unknown storage backend", lambda d: assign(d["tempo"], "storage.trace.backend", "filesystem"),
     "storage.trace.backend: is 'filesystem', the reference allows"),
    ("unknown processor", lambda d: assign(d["tempo"], "overrides.defaults.metrics_generator.processors",
                                           ["service-graphs", "span-metric"]),
     "has ['span-metric']"),
    ("bucket as a string", lambda d: assign(d["tempo"], "metrics_generator.processor.span_metrics.histogram_buckets",
                                            ["0.1", 1]),
     "histogram_buckets: is ['0.1', 1] (list), the reference says list_of_floats"),
    ("endpoint without a port", lambda d: assign(d["tempo"], "distributor.receivers.otlp.protocols.grpc.endpoint", 4317),
     "grpc.endpoint: is 4317 (int), the reference says host_port"),
    ("WAL outside the volume", lambda d: assign(d["tempo"], "storage.trace.wal.path", "/wal"),
     "storage.trace.wal.path = /wal: Tempo writes there"),
    ("remote_write to the wrong port", lambda d: assign(d["tempo"], "metrics_generator.storage.remote_write.0.url",
                                                        "http://prometheus:9091/api/v1/write"),
     "is not the compose Prometheus' remote-write receiver"),
    ("compose image off the pinned version", lambda d: assign(d["compose"], "services.tempo.image", "grafana/tempo:2.10.8"),
     "is not tagged TEMPO_VERSION"),
    ("Prometheus without the remote-write receiver",
     lambda d: d["compose"]["services"]["prometheus"]["command"].remove("--web.enable-remote-write-receiver"),
     "lacks --web.enable-remote-write-receiver"),
    ("datasource: misspelled field", lambda d: rename(tempo_ds(d), "jsonData.nodeGraph.enabled", "enable"),
     "jsonData.nodeGraph.enable: no such key"),
    ("datasource: wrong type", lambda d: assign(tempo_ds(d), "jsonData.streamingEnabled.search", "yes"),
     "jsonData.streamingEnabled.search: is 'yes' (str), the reference says bool"),
    ("datasource: span bar type not documented", lambda d: assign(tempo_ds(d), "jsonData.spanBar.type", "duration"),
     "jsonData.spanBar.type: is 'duration', the reference allows"),
    ("datasource: service map on a trace datasource", lambda d: assign(tempo_ds(d), "jsonData.serviceMap.datasourceUid",
                                                                      "jaeger"),
     "jsonData.serviceMap.datasourceUid = 'jaeger' is not a provisioned prometheus datasource"),
    ("datasource: wrong port", lambda d: assign(tempo_ds(d), "url", "http://tempo:3100"),
     "is not the tempo service on Tempo's HTTP port"),
    ("exemplar label Tempo does not write", lambda d: assign(d["tempo"], "overrides.defaults.metrics_generator."
                                                                         "trace_id_label_name", "traceID"),
     "no Prometheus exemplar link to datasource tempo for label 'traceID'"),
    ("exemplar link to Tempo removed", lambda d: prom_ds(d)["jsonData"].__setitem__(
        "exemplarTraceIdDestinations",
        [x for x in prom_ds(d)["jsonData"]["exemplarTraceIdDestinations"] if x.get("datasourceUid") != "tempo"]),
     "no Prometheus exemplar link to datasource tempo"),
    ("dashboard querying a Tempo-generated metric",
     lambda d: d["dashboards"].setdefault("x.json", {"panels": [{"targets": [
         {"expr": "sum(rate(traces_spanmetrics_latency_bucket[5m]))"}]}]}),
     "queries traces_spanmetrics_latency_bucket"),
]


def self_test(data):
    baseline = check(data)
    failures = []
    if baseline:
        failures.append("the unedited files already fail:\n  " + "\n  ".join(baseline))
    for what, edit, expect in MUTATIONS:
        d = copy.deepcopy(data)
        edit(d)
        errs = check(d)
        if not any(expect in e for e in errs):
            failures.append(f"{what}: not caught (wanted an error containing {expect!r}; got {errs})")
    for f in failures:
        print("self-test FAIL:", f)
    if not failures:
        print(f"check-tempo self-test ok: {len(MUTATIONS)} known-bad edits each caught, unedited files clean")
    return 1 if failures else 0


def main():
    args = sys.argv[1:]
    if args not in ([], ["--self-test"]):
        print(__doc__)
        return 2
    data = load()
    if args == ["--self-test"]:
        return self_test(data)
    errors = check(data)
    for e in errors:
        print("error:", e)
    if not errors:
        n = sum(1 for _ in walk_values(data["tempo"], data["ref"]["keys"]))
        print(f"tempo ok: tempo/tempo.yaml ({n} settings) against {data['ref_name']}, "
              f"datasource against {data['gref_name']}, compose/Prometheus/collector/Grafana wiring")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
