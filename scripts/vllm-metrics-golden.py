#!/usr/bin/env python3
"""Derives the golden list of vLLM's Prometheus metrics from vLLM's released source.

Usage:
    pip download vllm==0.33.0 --no-deps -d /tmp/vllm
    (cd /tmp/vllm && unzip -q -o vllm-0.33.0-*.whl 'vllm/*')
    scripts/vllm-metrics-golden.py /tmp/vllm 0.33.0 131072 \
        > crates/infermon-sim/tests/golden/vllm-0.33.0-metrics.toml

Arguments: the directory holding the unpacked `vllm/` package, its version (written into the
header), and the `max_model_len` the token-count buckets are computed for (the simulator's
default profile's).

It reads, without importing vLLM (which needs torch):
- vllm/v1/metrics/loggers.py and vllm/v1/metrics/perf.py: every `self._gauge_cls(...)`,
  `self._counter_cls(...)`, `self._histogram_cls(...)` call (name, documentation, labelnames,
  buckets), and the `if` it sits under (a metric vLLM only registers in some configurations);
- vllm/v1/metrics/buckets.py, loaded on its own (it imports only the standard library), for
  the bucket boundaries of each family, computed the way `histogram_buckets` computes them;
- vllm/config/cache.py: the fields of `CacheConfig`, whose `metrics_info()` (its `__dict__`)
  gives `vllm:cache_config_info` its label names;
- vllm/distributed/kv_transfer/kv_connector/v1/nixl/stats.py: `NixlPromMetrics.__init__`, the
  NIXL connector's metrics (name, documentation, labelnames, buckets: its local `buckets`
  lists, evaluated where each call reads them), registered under the `if` of
  vllm/distributed/kv_transfer/kv_connector/v1/metrics.py `KVConnectorProm.__init__` that
  calls the configured connector's `build_prom_metrics`.

The simulator's decisions (which metrics it leaves out, and why) are not vLLM's facts; they
live in SIM_EXCLUDED below and are written into the output next to vLLM's definitions.
"""
import ast
import importlib.util
import pathlib
import sys

LABELNAMES = ["model_name", "engine"]

# Label values vLLM creates up front (so they are exposed at 0 before anything happens), per
# label; each from the constant it is built from in vLLM's source.
FIXED_LABEL_VALUES = {
    # vllm/v1/engine/__init__.py FINISH_REASON_STRINGS (str(FinishReason)).
    "vllm:request_success_total": {"finished_reason": ["stop", "length", "abort", "error", "repetition"]},
    # vllm/v1/metrics/loggers.py WAITING_REASON_CAPACITY, WAITING_REASON_DEFERRED.
    "vllm:num_requests_waiting_by_reason": {"reason": ["capacity", "deferred"]},
    # vllm/v1/metrics/loggers.py: the sleep_state list in PrometheusStatLogger.__init__.
    "vllm:engine_sleep_state": {"sleep_state": ["awake", "weights_offloaded", "discard_all"]},
    # vllm/v1/metrics/stats.py PromptTokenStats.ALL_SOURCES.
    "vllm:prompt_tokens_by_source_total": {"source": ["local_compute", "local_cache_hit", "external_kv_transfer"]},
    # vllm/v1/metrics/cache_hit_source.py CacheHitSource.
    "vllm:prompt_tokens_cached_by_source_total": {"source": ["device", "host", "p2p", "disk", "external_unspecified"]},
    # vllm/v1/metrics/loggers.py ADMISSION_REASONS.
    "vllm:admission_rejections_total": {"reason": ["max_num_queued_reqs", "max_num_queued_tokens"]},
}

# Metrics vLLM registers unconditionally that the simulator does not emit, and why.
SIM_EXCLUDED = {
    "vllm:external_prefix_cache_queries_total": "counts prompt tokens looked up in a KV connector; the simulator's disaggregated decode worker does not count its pulled tokens here (they are its cached tokens, see docs/simulator.md), so only an always-zero series could be shown",
    "vllm:external_prefix_cache_hits_total": "counts prompt tokens a KV connector supplied; the simulator's disaggregated decode worker does not count its pulled tokens here (they are its cached tokens, see docs/simulator.md), so only an always-zero series could be shown",
    "vllm:mm_cache_queries_total": "multi-modal cache: the simulator serves text only",
    "vllm:mm_cache_hits_total": "multi-modal cache: the simulator serves text only",
    "vllm:admission_rejections_total": "frontend queue limits (--max-num-queued-reqs/-tokens) the simulator does not implement; its own max_waiting rejections are not the same limit",
    "vllm:estimated_flops_per_gpu_total": "vLLM's per-layer FLOP/byte estimator (vllm/v1/metrics/perf.py) has no counterpart; the roofline's step time is not a FLOP count vLLM would report",
    "vllm:estimated_read_bytes_per_gpu_total": "vLLM's per-layer FLOP/byte estimator (vllm/v1/metrics/perf.py) has no counterpart",
    "vllm:estimated_write_bytes_per_gpu_total": "vLLM's per-layer FLOP/byte estimator (vllm/v1/metrics/perf.py) has no counterpart",
}

# Metrics the simulator emits only in some of its roles: name prefix -> (`sim` value, why).
SIM_CONDITIONAL = {
    "vllm:nixl_": (
        "disaggregated",
        "emitted once the simulator has served a disaggregated prefill/decode request "
        "(kv_transfer_params), as a vLLM started with the NixlConnector (kv_role kv_both) "
        "exposes them; values on the decode worker, which records the pull-mode transfers; the "
        "simulated link never fails or expires a lease, so the failure counters stay 0",
    ),
}

NIXL_STATS = "vllm/distributed/kv_transfer/kv_connector/v1/nixl/stats.py"
CONNECTOR_METRICS = "vllm/distributed/kv_transfer/kv_connector/v1/metrics.py"

KINDS = {"_gauge_cls": "gauge", "_counter_cls": "counter", "_histogram_cls": "histogram"}


def go_float(d):
    """prometheus_client's floatToGoString (utils.py): how `le` values are written."""
    d = float(d)
    if d == float("inf"):
        return "+Inf"
    s = repr(d)
    dot = s.find(".")
    if d > 0 and dot > 6:
        mantissa = f"{s[0]}.{s[1:dot]}{s[dot + 1:]}".rstrip("0.")
        return f"{mantissa}e+0{dot - 1}"
    return s


def load_buckets(root):
    spec = importlib.util.spec_from_file_location("vllm_buckets", root / "vllm/v1/metrics/buckets.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def parents(tree):
    out = {}
    for node in ast.walk(tree):
        for child in ast.iter_child_nodes(node):
            out[child] = node
    return out


def conditions(node, parent_of):
    """The `if` tests (and else branches) a metric's registration depends on."""
    found = []
    child = node
    while child in parent_of:
        parent = parent_of[child]
        if isinstance(parent, ast.If):
            test = ast.unparse(parent.test)
            found.append(test if child in parent.body else f"not ({test})")
        if isinstance(parent, (ast.FunctionDef, ast.AsyncFunctionDef)):
            break
        child = parent
    return list(reversed(found))


def string_attributes(tree):
    """`self.x = "literal"` assignments (lora_requests_info keeps its label names in them)."""
    out = {}
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Assign)
            and isinstance(node.targets[0], ast.Attribute)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        ):
            out[node.targets[0].attr] = node.value.value
    return out


def labelnames_of(expr, attributes):
    if isinstance(expr, ast.Name) and expr.id == "labelnames":
        return list(LABELNAMES)
    if isinstance(expr, ast.Attribute):
        return [attributes[expr.attr]]
    if isinstance(expr, ast.Constant):
        return [expr.value]
    if isinstance(expr, ast.List):
        return [label for e in expr.elts for label in labelnames_of(e, attributes)]
    if isinstance(expr, ast.BinOp) and isinstance(expr.op, ast.Add):
        return labelnames_of(expr.left, attributes) + labelnames_of(expr.right, attributes)
    raise ValueError(f"unknown labelnames expression: {ast.unparse(expr)}")


def bucket_families(tree):
    """Local variable -> bucket family, from `x = histogram_buckets("family", ...)`."""
    out = {}
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Assign)
            and isinstance(node.value, ast.Call)
            and getattr(node.value.func, "id", None) == "histogram_buckets"
        ):
            out[node.targets[0].id] = node.value.args[0].value
    return out


def metrics_in(path, buckets, max_model_len):
    tree = ast.parse(path.read_text())
    parent_of = parents(tree)
    families = bucket_families(tree)
    attributes = string_attributes(tree)
    found = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        kind = KINDS.get(node.func.attr)
        if kind is None or not node.keywords:
            continue
        kw = {k.arg: k.value for k in node.keywords}
        if not isinstance(kw.get("name"), ast.Constant):
            continue  # log_metrics_info's info gauge: handled with CacheConfig
        metric = metric_entry(
            kind, kw, labelnames_of(kw["labelnames"], attributes), conditions(node, parent_of)
        )
        if kind == "histogram":
            family = families[kw["buckets"].id]
            metric["bucket_family"] = family
            bounds = buckets.histogram_buckets(family, max_model_len=max_model_len)
            metric["buckets"] = [go_float(b) for b in bounds]
        found.append(metric)
    return found


def metric_entry(kind, kw, labels, when):
    """One golden entry from a metric constructor's keyword arguments."""
    name = kw["name"].value
    # prometheus_client drops a counter's `_total` from its name and writes it back on the
    # sample and on the HELP/TYPE lines of the text exposition.
    if kind == "counter":
        name = name.removesuffix("_total") + "_total"
    return {
        "name": name,
        "type": kind,
        "help": ast.literal_eval(kw["documentation"]),
        "labels": labels,
        "conditions": when,
    }


def connector_condition(root):
    """The `if` KVConnectorProm registers a connector's metrics under (metrics.py)."""
    tree = ast.parse((root / CONNECTOR_METRICS).read_text())
    parent_of = parents(tree)
    call = next(
        n for n in ast.walk(tree)
        if isinstance(n, ast.Call) and getattr(n.func, "attr", None) == "build_prom_metrics"
    )
    return conditions(call, parent_of)


def nixl_metrics(root):
    """NixlPromMetrics.__init__'s metrics. Its bucket lists are plain local assignments
    (literals, one comprehension over range) that later calls read, sliced or whole; they are
    evaluated in statement order with nothing but `range` available."""
    tree = ast.parse((root / NIXL_STATS).read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "NixlPromMetrics")
    init = next(n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "__init__")
    # vLLM registers the connector's metrics only with a KV connector configured, and these
    # only when it is the NixlConnector (connector.py build_prom_metrics -> NixlPromMetrics).
    when = connector_condition(root) + ["kv_transfer_config.kv_connector == 'NixlConnector'"]
    local = {}
    found = []

    def evaluate(expr):
        return eval(compile(ast.Expression(expr), NIXL_STATS, "eval"), {"__builtins__": {"range": range}}, dict(local))

    for stmt in init.body:
        if not (isinstance(stmt, ast.Assign) and isinstance(stmt.targets[0], ast.Name)):
            continue
        node = stmt.value
        if not isinstance(node, ast.Call):
            local[stmt.targets[0].id] = evaluate(node)
            continue
        kind = KINDS.get(getattr(node.func, "attr", None))
        if kind is None:
            continue
        kw = {k.arg: k.value for k in node.keywords}
        metric = metric_entry(kind, kw, labelnames_of(kw["labelnames"], {}), when)
        metric["source"] = f"{NIXL_STATS} NixlPromMetrics"
        if kind == "histogram":
            metric["buckets"] = [go_float(b) for b in evaluate(kw["buckets"])]
        found.append(metric)
    return found


def cache_config_labels(root):
    tree = ast.parse((root / "vllm/config/cache.py").read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "CacheConfig")
    labels = []
    for stmt in cls.body:
        if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
            if "ClassVar" in ast.unparse(stmt.annotation):
                continue
            labels.append(stmt.target.id)
    # log_metrics_info adds the engine index to CacheConfig.metrics_info().
    return labels + ["engine"]


def toml_str(s):
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def toml_list(items):
    return "[" + ", ".join(toml_str(i) for i in items) + "]"


def main():
    root, version, max_model_len = pathlib.Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    buckets = load_buckets(root)
    metrics = metrics_in(root / "vllm/v1/metrics/loggers.py", buckets, max_model_len)
    metrics += metrics_in(root / "vllm/v1/metrics/perf.py", buckets, max_model_len)
    metrics.append({
        "name": "vllm:cache_config_info",
        "type": "gauge",
        "help": "Information of the LLMEngine CacheConfig",
        "labels": cache_config_labels(root),
        "conditions": [],
    })
    metrics += nixl_metrics(root)
    print(f"""# vLLM's Prometheus metrics, as vLLM {version} defines them: the golden file the simulator's
# `--metrics vllm` exposition is checked against (crates/infermon-sim/tests/vllm_golden.rs).
#
# Derived from the released vLLM {version} wheel's source, not written by hand:
#   vllm/v1/metrics/loggers.py (PrometheusStatLogger: every gauge, counter, histogram),
#   vllm/v1/metrics/perf.py (PerfMetricsProm), vllm/v1/metrics/buckets.py (bucket families),
#   vllm/config/cache.py (CacheConfig fields: the label names of vllm:cache_config_info),
#   {NIXL_STATS} (NixlPromMetrics: the NIXL KV connector's
#   metrics, `source` says so; registered only with that connector configured,
#   {CONNECTOR_METRICS} KVConnectorProm).
# Regenerate:
#   pip download vllm=={version} --no-deps -d /tmp/vllm
#   (cd /tmp/vllm && unzip -q -o vllm-{version}-*.whl 'vllm/*')
#   scripts/vllm-metrics-golden.py /tmp/vllm {version} {max_model_len} \\
#       > crates/infermon-sim/tests/golden/vllm-{version}-metrics.toml
#
# Names are as the text exposition writes them (prometheus_client appends `_total` to
# counters, also on their HELP/TYPE lines). `buckets` are the `le` values as prometheus_client
# writes them (floatToGoString), +Inf implied; the `request_tokens` family is vLLM's
# build_1_2_5_buckets(max_model_len), here for max_model_len = {max_model_len}.
# `conditions`: the `if` tests vLLM registers the metric under (empty: always registered).
# Not listed: metrics of subsystems vLLM only builds when configured (speculative decoding,
# vllm/v1/spec_decode/metrics.py; KV/EC connectors other than NIXL), the
# `*_created` timestamp gauges prometheus_client adds to every counter and histogram, and the
# HTTP/process metrics of the API server (not vLLM's; the collector's scrape drops them).
# `sim`: "emitted", "excluded" with `reason` (a metric vLLM registers only under a condition
# that is off by default is excluded for that reason; the rest are listed in
# scripts/vllm-metrics-golden.py SIM_EXCLUDED), or "disaggregated" with `reason`: emitted only
# once the simulator has served a disaggregated prefill/decode request (SIM_CONDITIONAL).

vllm_version = {toml_str(version)}
source = "vllm/v1/metrics/loggers.py"
max_model_len = {max_model_len}""")
    for m in metrics:
        print()
        print("[[metric]]")
        print(f"name = {toml_str(m['name'])}")
        print(f"type = {toml_str(m['type'])}")
        print(f"help = {toml_str(m['help'])}")
        print(f"labels = {toml_list(m['labels'])}")
        for label, values in FIXED_LABEL_VALUES.get(m["name"], {}).items():
            print(f"label_values.{label} = {toml_list(values)}")
        if "buckets" in m:
            if "bucket_family" in m:
                print(f"bucket_family = {toml_str(m['bucket_family'])}")
            print(f"buckets = {toml_list(m['buckets'])}")
        print(f"conditions = {toml_list(m['conditions'])}")
        if "source" in m:
            print(f"source = {toml_str(m['source'])}")
        conditional = next((v for k, v in SIM_CONDITIONAL.items() if m["name"].startswith(k)), None)
        if conditional:
            print(f"sim = {toml_str(conditional[0])}")
            print(f"reason = {toml_str(conditional[1])}")
        elif m["conditions"]:
            print('sim = "excluded"')
            print(f"reason = {toml_str('vLLM registers it only when ' + ' and '.join(m['conditions']) + ', which is off in its default configuration')}")
        elif m["name"] in SIM_EXCLUDED:
            print('sim = "excluded"')
            print(f"reason = {toml_str(SIM_EXCLUDED[m['name']])}")
        else:
            print('sim = "emitted"')


if __name__ == "__main__":
    main()
