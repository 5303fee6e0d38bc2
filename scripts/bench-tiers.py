#!/usr/bin/env python3
"""Sizing of the collector tiers (docs/scale.md): one agent (otel-collector/agent.yaml, static
resolver) in front of one gateway (otel-collector/gateway.yaml, tail sampling + span metrics)
in front of Prometheus and Jaeger (scripts/start-stack.sh), all on loopback. A generator in this
script sends synthetic inference traces (client span, SERVER span with gen_ai.request.model,
queue/prefill/decode children; 5 % errors) over OTLP/HTTP JSON to the agent, at each rate in
turn. For each collector it reads its CPU time (/proc/PID/stat), resident memory and own
metrics (otelcol_receiver_accepted_spans), and prints spans per CPU-second (= spans/s one
core sustains), plus the span-metric series the gateway produced and its memory.

CPU seconds per span do not depend on the machine being idle, so the figures hold on a shared
machine; the generator (Python) is the bottleneck well before the collectors are.

Usage: scripts/bench-tiers.py [--rates 2000,5000,10000] [--seconds 30] [--models 4]
                              [--services 2] [--port-base 24600] [--json]
Needs the stack binaries (scripts/build-stack.sh). Leaves nothing running.
"""

import argparse
import http.client
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def stack_var(name):
    out = subprocess.run(
        ["bash", "-c", f"source scripts/stack-env.sh >/dev/null 2>&1; printf %s \"${name}\""],
        cwd=ROOT, capture_output=True, text=True, check=True)
    if not out.stdout:
        sys.exit(f"{name} not built: run scripts/build-stack.sh")
    return out.stdout


def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime, all threads


def rss_mib(pid):
    return int(open(f"/proc/{pid}/statm").read().split()[1]) * PAGE / 2**20


def self_metric(port, name, label=""):
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    total = 0.0
    for line in text.splitlines():
        if (line.startswith(name + "{") or line.startswith(name + " ")) and label in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def wait_http(url, proc, what):
    for _ in range(300):
        if proc.poll() is not None:
            sys.exit(f"{what} exited")
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except OSError:
            time.sleep(0.2)
    sys.exit(f"{what} not ready at {url}")


def attr(k, v):
    if isinstance(v, int):
        return {"key": k, "value": {"intValue": str(v)}}
    return {"key": k, "value": {"stringValue": v}}


def traces_payload(n_traces, models, services, rng):
    """n_traces inference traces of 5 spans each, as one OTLP/JSON request."""
    by_service = {}
    now = time.time_ns()
    for _ in range(n_traces):
        tid = "%032x" % rng.getrandbits(128)
        ids = ["%016x" % rng.getrandbits(64) for _ in range(5)]
        model = f"model-{rng.randrange(models)}"
        service = f"bench-engine-{rng.randrange(services)}"
        dur = int(rng.lognormvariate(20.0, 0.8))  # ns, median ~0.5 s
        start = now - dur - 10_000_000
        error = rng.random() < 0.05
        common = [attr("gen_ai.request.model", model), attr("gen_ai.operation.name", "chat"),
                  attr("gen_ai.provider.name", "infermon")]
        q, p = dur // 10, dur // 5
        spans = by_service.setdefault(service, [])
        spans.append({"traceId": tid, "spanId": ids[1], "parentSpanId": ids[0],
                      "name": f"chat {model}", "kind": 2,
                      "startTimeUnixNano": str(start), "endTimeUnixNano": str(start + dur),
                      "attributes": common + [attr("gen_ai.usage.output_tokens", 200)],
                      "status": {"code": 2 if error else 0}})
        for i, (name, s, e) in enumerate([("queue", 0, q), ("prefill", q, q + p),
                                           ("decode", q + p, dur)]):
            spans.append({"traceId": tid, "spanId": ids[2 + i], "parentSpanId": ids[1],
                          "name": name, "kind": 1, "startTimeUnixNano": str(start + s),
                          "endTimeUnixNano": str(start + e)})
        client = by_service.setdefault("bench-load", [])
        client.append({"traceId": tid, "spanId": ids[0], "name": f"chat {model}", "kind": 3,
                       "startTimeUnixNano": str(start - 1_000_000),
                       "endTimeUnixNano": str(start + dur + 1_000_000), "attributes": common,
                       "status": {"code": 2 if error else 0}})
    return json.dumps({"resourceSpans": [
        {"resource": {"attributes": [attr("service.name", s), attr("host.name", "bench-node")]},
         "scopeSpans": [{"scope": {"name": "bench-tiers"}, "spans": spans}]}
        for s, spans in by_service.items()]}).encode()


def drive(port, rate_spans, seconds, models, services, rng):
    """Sends ~rate_spans spans/s for `seconds`; returns spans sent."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    batch_traces = max(1, rate_spans // 5 // 10)  # ten requests per second
    sent, t0 = 0, time.monotonic()
    while (elapsed := time.monotonic() - t0) < seconds:
        if sent > rate_spans * elapsed:
            time.sleep(0.005)
            continue
        body = traces_payload(batch_traces, models, services, rng)
        conn.request("POST", "/v1/traces", body, {"Content-Type": "application/json"})
        resp = conn.getresponse()
        resp.read()
        if resp.status != 200:
            sys.exit(f"agent answered {resp.status}")
        sent += batch_traces * 5
    return sent, time.monotonic() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rates", default="2000,5000,10000", help="spans/s offered, comma-separated")
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--models", type=int, default=4, help="distinct gen_ai.request.model values")
    ap.add_argument("--services", type=int, default=2, help="distinct engine service.names")
    ap.add_argument("--port-base", type=int, default=24600)
    ap.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = ap.parse_args()
    otelcol = stack_var("OTELCOL")
    base = args.port_base
    run = tempfile.mkdtemp(prefix="infermon-bench-tiers-")
    stack_env = dict(os.environ, INFERMON_STACK_PORT_BASE=str(base), INFERMON_STACK_RUN_DIR=run)
    subprocess.run([f"{ROOT}/scripts/start-stack.sh", "prometheus", "jaeger"], env=stack_env,
                   check=True, stdout=subprocess.DEVNULL)
    procs = []
    try:
        env = dict(os.environ)
        env = {k: v for k, v in env.items() if not k.startswith("INFERMON_")}
        gw = dict(env, INFERMON_COLLECTOR_ID="bench-gateway", INFERMON_OTLP_GRPC_PORT=str(base + 20),
                  INFERMON_OTLP_HTTP_PORT=str(base + 21), INFERMON_OTELCOL_HEALTH_PORT=str(base + 22),
                  INFERMON_OTELCOL_METRICS_PORT=str(base + 23),
                  INFERMON_PROMETHEUS_ADDR=f"127.0.0.1:{base + 4}",
                  INFERMON_JAEGER_OTLP_ADDR=f"127.0.0.1:{base + 8}")
        ag = dict(env, INFERMON_GATEWAY_ENDPOINTS=f"[127.0.0.1:{base + 20}]",
                  INFERMON_OTLP_GRPC_PORT=str(base + 30), INFERMON_OTLP_HTTP_PORT=str(base + 31),
                  INFERMON_OTELCOL_HEALTH_PORT=str(base + 32),
                  INFERMON_OTELCOL_METRICS_PORT=str(base + 33),
                  INFERMON_VLLM_TARGET="127.0.0.1:1")
        logs = {}
        for name, e, cfg in (("gateway", gw, "gateway.yaml"), ("agent", ag, "agent.yaml")):
            logs[name] = open(os.path.join(run, f"{name}.log"), "w")
            procs.append((name, subprocess.Popen(
                [otelcol, "--config", f"{ROOT}/otel-collector/{cfg}"], env=e,
                stdout=logs[name], stderr=subprocess.STDOUT)))
        ports = {"gateway": base + 23, "agent": base + 33}
        for name, p in procs:
            wait_http(f"http://127.0.0.1:{ports[name] - 1}/", p, name)
        rng = random.Random(1)
        rows = []
        for rate in [int(r) for r in args.rates.split(",")]:
            before = {n: (cpu_seconds(p.pid), self_metric(ports[n], "otelcol_receiver_accepted_spans"))
                      for n, p in procs}
            t0 = time.monotonic()
            sent, wall = drive(base + 31, rate, args.seconds, args.models, args.services, rng)
            # The gateway decides each trace decision_wait (10 s) after its first span: its
            # sampling and export work for this rate ends that much later.
            time.sleep(13)
            window = time.monotonic() - t0
            row = {"offered_spans_per_s": rate, "sent_spans_per_s": round(sent / wall)}
            for n, p in procs:
                cpu = cpu_seconds(p.pid) - before[n][0]
                spans = self_metric(ports[n], "otelcol_receiver_accepted_spans") - before[n][1]
                row[f"{n}_spans_per_cpu_s"] = round(spans / cpu) if cpu else None
                row[f"{n}_cores_avg"] = round(cpu / window, 3)  # over sending + draining
                row[f"{n}_rss_mib"] = round(rss_mib(p.pid))
            # Cross-check of /proc: the collectors' own CPU counter.
            row["gateway_process_cpu_s_total"] = self_metric(ports["gateway"], "otelcol_process_cpu_seconds")
            rows.append(row)
            print(json.dumps(row), file=sys.stderr)
        # Span-metric series the gateway exported (calls + duration histogram per dimension set).
        q = urllib.parse.quote('count({__name__=~"traces_span_metrics_.*"})')
        res = json.load(urllib.request.urlopen(f"http://127.0.0.1:{base + 4}/api/v1/query?query={q}"))
        series = int(float(res["data"]["result"][0]["value"][1])) if res["data"]["result"] else 0
        if args.json:
            print(json.dumps({"rows": rows, "span_metric_series": series}, indent=2))
        else:
            keys = list(rows[0])
            print("| " + " | ".join(keys) + " |")
            print("|" + "---|" * len(keys))
            for r in rows:
                print("| " + " | ".join(str(r[k]) for k in keys) + " |")
            print(f"\nspan-metric series in Prometheus: {series}")
    finally:
        for _, p in procs:
            p.terminate()
            p.wait(timeout=20)
        subprocess.run([f"{ROOT}/scripts/stop-stack.sh", "--clean"],
                       env=stack_env, stdout=subprocess.DEVNULL)


if __name__ == "__main__":
    main()
