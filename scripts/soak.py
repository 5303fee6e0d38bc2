#!/usr/bin/env python3
"""Soak test: the whole native stack under steady load, with scheduled faults.

What runs (all on loopback, native binaries, nothing faked):
  stack      Prometheus, Alertmanager, Jaeger (Badger on a small tmpfs), the collector
             (scripts/start-stack.sh, the repository's configs)
  engine-a   infermon sim, contract spans straight to the collector, under libfaketime so its
             wall clock can jump
  engine-b   infermon sim emitting vLLM 0.33's flat spans to the relay (as vLLM does)
  relay      infermon relay -> collector
  gateway    infermon gateway -> engine-a, engine-b
  load       infermon load -> gateway, Poisson arrivals, one run per phase

One phase per fault (default 190 s each, ten phases: a little over 30 minutes of load). A fault
starts 30 s into its phase; when it ends, probes measure how long until the path works again
(a request through it whose trace is stored in Jaeger, or a fresh sample in Prometheus).

Afterwards it reads back what was stored and writes report.md and report.json to the output
directory: requests served vs failed per phase, traces stored vs requests sent, metric points
(counter totals in Prometheus vs what the load generator saw), recovery time per fault and RSS of
every infermon process over time with its slope.

This is a script and a report, not a CI test. It needs root for the tmpfs (disk-full fault)
and libfaketime (Debian package `faketime`) for the clock jump; without either, that fault is
skipped and the report says so.

Usage: scripts/soak.py [--phase-seconds 190] [--rate 4] [--bin PATH] [--out DIR]
"""

import argparse
import csv
import http.client
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
FAKETIME_LIB = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1"

SERVICES = {
    "gateway": "soak-gateway",
    "engine-a": "soak-engine-a",
    "engine-b": "soak-engine-b",
    "relay": "soak-relay",
    "load": "soak-load",
}


def log(msg):
    print(f"[soak {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def http_json(url, body=None, headers=None, timeout=10):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers=headers or {})
    if data is not None:
        req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read())


def wait_http(url, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return True
        except (urllib.error.URLError, OSError):
            time.sleep(0.25)
    raise RuntimeError(f"{url} not ready after {timeout}s")


# ---- processes ---------------------------------------------------------------------------


class Service:
    """One infermon process we start, stop, kill and restart; its RSS is sampled."""

    def __init__(self, name, argv, env, ready_url, logdir):
        self.name, self.argv, self.env, self.ready_url = name, argv, env, ready_url
        self.logdir = logdir
        self.proc = None
        self.generation = 0

    def start(self):
        self.generation += 1
        logf = open(self.logdir / f"{self.name}.{self.generation}.log", "w")
        self.proc = subprocess.Popen(
            self.argv, env={**os.environ, **self.env}, stdout=logf, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True)
        if self.ready_url:
            wait_http(self.ready_url)
        log(f"{self.name}: started (pid {self.proc.pid})")

    def stop(self, sig=signal.SIGTERM, timeout=30):
        if not self.proc or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        log(f"{self.name}: stopped by {signal.Signals(sig).name} (exit {self.proc.returncode})")

    def pid(self):
        return self.proc.pid if self.proc and self.proc.poll() is None else None


class Stack:
    """The stack through scripts/start-stack.sh and stop-stack.sh (one component at a time)."""

    def __init__(self, run_dir, port_base):
        self.env = {**os.environ, "INFERMON_STACK_RUN_DIR": str(run_dir),
                    "INFERMON_STACK_PORT_BASE": str(port_base)}
        self.run_dir = run_dir
        self.ports = {name: port_base + i for i, name in enumerate([
            "otlp_grpc", "otlp_http", "otelcol_health", "otelcol_metrics", "prometheus",
            "alertmanager", "jaeger_query", "jaeger_query_grpc", "jaeger_otlp_grpc",
            "jaeger_otlp_http", "jaeger_health", "jaeger_metrics"])}
        self.otlp = f"http://{HOST}:{self.ports['otlp_grpc']}"
        self.prometheus = f"http://{HOST}:{self.ports['prometheus']}"
        self.jaeger = f"http://{HOST}:{self.ports['jaeger_query']}"

    def start(self, *components, keep_data=True):
        env = {**self.env, "INFERMON_STACK_KEEP_DATA": "1" if keep_data else "0"}
        subprocess.run([ROOT / "scripts/start-stack.sh", *components], env=env, check=True,
                       stdout=subprocess.DEVNULL)

    def stop(self, *components):
        subprocess.run([ROOT / "scripts/stop-stack.sh", *components], env=self.env, check=True,
                       stdout=subprocess.DEVNULL)

    def kill(self, component):
        pid = int((self.run_dir / "pids" / f"{component}.pid").read_text())
        os.kill(pid, signal.SIGKILL)
        while Path(f"/proc/{pid}").exists() and "zombie" not in Path(
                f"/proc/{pid}/status").read_text().lower():
            time.sleep(0.1)
        log(f"{component}: killed (SIGKILL)")


class Supervisor(threading.Thread):
    """Restarts a stack component that died on its own, as compose's `restart: unless-stopped`
    does (10 s apart at most once), and records it: a crash is a finding of the run."""

    COMPONENTS = ("prometheus", "alertmanager", "jaeger", "otelcol")

    def __init__(self, stack):
        super().__init__(daemon=True)
        self.stack = stack
        self.paused = set()  # components a fault has taken down on purpose
        self.crashes = []  # (time, component)
        self.last_restart = {}
        self.stopped = threading.Event()
        self.lock = threading.Lock()

    def alive(self, component):
        try:
            pid = int((self.stack.run_dir / "pids" / f"{component}.pid").read_text())
            status = Path(f"/proc/{pid}/status").read_text()
        except (OSError, ValueError):
            return False
        return "zombie" not in status

    def run(self):
        while not self.stopped.wait(2):
            for c in self.COMPONENTS:
                with self.lock:
                    if c in self.paused or self.alive(c):
                        continue
                    if time.time() - self.last_restart.get(c, 0) < 10:
                        continue
                    log(f"{c} died on its own (see {self.stack.run_dir}/logs/{c}.log*); restarting")
                    self.crashes.append((time.time(), c))
                    log_file = self.stack.run_dir / "logs" / f"{c}.log"
                    if log_file.exists():
                        shutil.copy(log_file, log_file.with_suffix(f".crash-{int(time.time())}.log"))
                    self.last_restart[c] = time.time()
                    try:
                        self.stack.start(c)
                    except subprocess.CalledProcessError as e:
                        log(f"{c} did not come back: {e}")

    def pause(self, *components):
        with self.lock:
            self.paused.update(components)

    def resume(self, *components):
        with self.lock:
            self.paused.difference_update(components)


# ---- probes ------------------------------------------------------------------------------


class Probe:
    """Requests with a known trace id, then a look in Jaeger/Prometheus for what they left."""

    def __init__(self, stack, model):
        self.stack, self.model = stack, model
        # Answered probe requests by target URL: the counters in Prometheus count them too.
        self.answered = {}

    def request(self, base_url):
        trace_id = "%032x" % random.getrandbits(128)
        headers = {"traceparent": f"00-{trace_id}-{random.getrandbits(64):016x}-01"}
        body = {"model": self.model, "max_tokens": 4,
                "messages": [{"role": "user", "content": "soak probe"}]}
        try:
            http_json(f"{base_url}/v1/chat/completions", body, headers, timeout=15)
            self.answered[base_url] = self.answered.get(base_url, 0) + 1
            return trace_id
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError):
            return None

    def trace_services(self, trace_id):
        try:
            data = http_json(f"{self.stack.jaeger}/api/traces/{trace_id}", timeout=5)
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError):
            return set()
        services = set()
        for trace in data.get("data") or []:
            for proc in trace.get("processes", {}).values():
                services.add(proc.get("serviceName"))
        return services

    def newest_sample(self, selector):
        """Timestamp (s) of the newest sample of `selector`, or 0."""
        q = urllib.parse.urlencode({"query": f"max(timestamp({selector}))"})
        try:
            data = http_json(f"{self.stack.prometheus}/api/v1/query?{q}", timeout=5)
            result = data["data"]["result"]
            return float(result[0]["value"][1]) if result else 0.0
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError, KeyError):
            return 0.0

    def until_traced(self, base_url, want, since, any_of=None, timeout=180):
        """Seconds from `since` until a request sent to `base_url` after `since` has a trace in
        Jaeger with spans from every service in `want` (and one of `any_of`); None if not
        within `timeout`."""
        sent = []
        deadline = since + timeout
        while time.time() < deadline:
            tid = self.request(base_url)
            if tid:
                sent.append(tid)
            for t in sent[-10:]:
                services = self.trace_services(t)
                if want <= services and (not any_of or any_of & services):
                    return round(time.time() - since, 1)
            time.sleep(1)
        return None

    def until_sampled(self, selector, since, timeout=180):
        """Seconds from `since` until Prometheus holds a sample of `selector` stamped after it
        (the producer's clock; after a clock jump forward that is the jumped clock)."""
        deadline = since + timeout
        while time.time() < deadline:
            if self.newest_sample(selector) >= since:
                return round(time.time() - since, 1)
            time.sleep(1)
        return None


# ---- RSS sampling ------------------------------------------------------------------------


class RssSampler(threading.Thread):
    def __init__(self, services, path, every=10):
        super().__init__(daemon=True)
        self.services, self.every = services, every
        self.file = open(path, "w", newline="")
        self.csv = csv.writer(self.file)
        self.csv.writerow(["t", "service", "generation", "pid", "rss_kib"])
        self.stopped = threading.Event()

    def run(self):
        while not self.stopped.wait(self.every):
            now = round(time.time(), 1)
            for s in self.services:
                pid = s.pid()
                if not pid:
                    continue
                try:
                    status = Path(f"/proc/{pid}/status").read_text()
                except OSError:
                    continue
                rss = next((int(line.split()[1]) for line in status.splitlines()
                            if line.startswith("VmRSS:")), None)
                if rss is not None:
                    self.csv.writerow([now, s.name, s.generation, pid, rss])
            self.file.flush()


def slope_kib_per_min(points, warmup_s=120, last_s=None):
    """Least-squares slope of RSS over time, after the first `warmup_s` of a process (or over
    its last `last_s` only)."""
    if not points:
        return None
    t0 = points[0][0] if last_s is None else points[-1][0] - last_s
    pts = [(t, r) for t, r in points if t - t0 >= (warmup_s if last_s is None else 0)]
    if len(pts) < 3:
        return None
    n = len(pts)
    mt = sum(t for t, _ in pts) / n
    mr = sum(r for _, r in pts) / n
    var = sum((t - mt) ** 2 for t, _ in pts)
    return sum((t - mt) * (r - mr) for t, r in pts) / var * 60 if var else None


# ---- the run -----------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--phase-seconds", type=int, default=190,
                    help="length of each of the ten phases (default 190: 31.7 min of load)")
    ap.add_argument("--rate", type=float, default=4.0, help="requests per second (default 4)")
    ap.add_argument("--bin", default=os.environ.get("INFERMON_BIN"),
                    help="infermon binary (default: $INFERMON_BIN, else a release build)")
    ap.add_argument("--out", default=None, help="report directory (default target/soak/<time>)")
    ap.add_argument("--port-base", type=int, default=15000,
                    help="stack ports at N..N+11, infermon's at N+20..N+24 (default 15000: "
                         "below the ephemeral range, so a restarted component finds its port, "
                         "and below the end-to-end tests' 20000-32000)")
    ap.add_argument("--phases", default=None,
                    help="comma-separated phase numbers to run (0-9; default all), for a trial")
    args = ap.parse_args()
    if args.phase_seconds < 60:
        ap.error("--phase-seconds must be at least 60 (a fault starts 30 s in and lasts up to 60 s)")

    binary = args.bin
    if not binary:
        subprocess.run(["cargo", "build", "--release", "--locked", "-p", "infermon-cli"],
                       cwd=ROOT, check=True)
        target = os.environ.get("CARGO_TARGET_DIR", str(ROOT / "target"))
        binary = str(Path(target) / "release" / "infermon")
    out = Path(args.out or ROOT / "target" / "soak" / time.strftime("%Y%m%d-%H%M%S"))
    out.mkdir(parents=True, exist_ok=True)
    logs = out / "logs"
    logs.mkdir(exist_ok=True)
    run_dir = out / "stack"
    log(f"binary {binary}; report in {out}")

    stack = Stack(run_dir, args.port_base)
    services = {}
    threads = []
    try:
        run(args, binary, out, logs, run_dir, stack, services, threads)
    finally:
        for t in threads:  # the supervisor first: it must not restart what stops next
            t.stopped.set()
        for s in services.values():
            s.stop()
        stack.stop()
        jaeger_data = run_dir / "jaeger" / "data"
        if os.path.ismount(jaeger_data):
            subprocess.run(["umount", str(jaeger_data)])
    print((out / "report.md").read_text())


def run(args, binary, out, logs, run_dir, stack, services, threads):
    stack.start(keep_data=False)

    # Jaeger's data dir on a small tmpfs, so that the disk can be filled without touching
    # the machine's disk. Needs root; without it the disk-full phase is skipped.
    jaeger_data = run_dir / "jaeger" / "data"
    tmpfs = False
    if os.geteuid() == 0 and shutil.which("mount"):
        stack.stop("jaeger")
        shutil.rmtree(jaeger_data, ignore_errors=True)
        jaeger_data.mkdir(parents=True)
        tmpfs = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512m", "tmpfs",
                                str(jaeger_data)]).returncode == 0
        stack.start("jaeger")
    faketime = Path(FAKETIME_LIB).exists()
    clock_file = out / "engine-a.faketime"
    clock_file.write_text("+0\n")

    p = {k: args.port_base + 20 + i for i, k in enumerate(
        ["engine-a", "engine-b", "relay-grpc", "relay-http", "gateway"])}
    telemetry = lambda name: ["--otlp-endpoint", stack.otlp, "--service-name", SERVICES[name]]
    engine_a_env = {}
    if faketime:
        # Only the wall clock jumps (spans and metric points carry it); the monotonic clock
        # the runtime schedules by stays true, as on a host whose NTP steps the clock.
        engine_a_env = {"LD_PRELOAD": FAKETIME_LIB, "FAKETIME_TIMESTAMP_FILE": str(clock_file),
                        "FAKETIME_CACHE_DURATION": "1", "FAKETIME_DONT_FAKE_MONOTONIC": "1"}
    base = {"RUST_LOG": "info"}
    services.update({
        "engine-a": Service("engine-a", [binary, "sim", "--listen", f"{HOST}:{p['engine-a']}",
                                         *telemetry("engine-a")],
                            {**base, **engine_a_env}, f"http://{HOST}:{p['engine-a']}/health", logs),
        # The endpoints through the environment: --otlp-endpoint would set both signals'
        # endpoint in code, which the per-signal variable does not override (OTel's precedence).
        "engine-b": Service("engine-b", [binary, "sim", "--listen", f"{HOST}:{p['engine-b']}",
                                         "--trace-format", "vllm",
                                         "--service-name", SERVICES["engine-b"]],
                            {**base, "OTEL_SERVICE_NAME": SERVICES["engine-b"],
                             "OTEL_EXPORTER_OTLP_ENDPOINT": stack.otlp,
                             "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"http://{HOST}:{p['relay-grpc']}"},
                            f"http://{HOST}:{p['engine-b']}/health", logs),
        "relay": Service("relay", [binary, "relay", "--grpc-listen", f"{HOST}:{p['relay-grpc']}",
                                   "--http-listen", f"{HOST}:{p['relay-http']}",
                                   "--upstream", stack.otlp, *telemetry("relay")],
                         base, None, logs),
        "gateway": Service("gateway", [binary, "gateway", "--listen", f"{HOST}:{p['gateway']}",
                                       "--upstream", f"a=http://{HOST}:{p['engine-a']}",
                                       "--upstream", f"b=http://{HOST}:{p['engine-b']}",
                                       *telemetry("gateway")],
                           base, f"http://{HOST}:{p['gateway']}/v1/models", logs),
    })
    for name in ["relay", "engine-a", "engine-b", "gateway"]:
        services[name].start()
        if name == "relay":
            time.sleep(1)
    gateway_url = f"http://{HOST}:{p['gateway']}"
    model = None
    for _ in range(60):  # the gateway lists models once its first probe of the engines is in
        models = http_json(f"{gateway_url}/v1/models")["data"]
        if models:
            model = models[0]["id"]
            break
        time.sleep(0.5)
    if model is None:
        raise RuntimeError("the gateway lists no model after 30 s")
    probe = Probe(stack, model)
    rss = RssSampler(list(services.values()), out / "rss.csv")
    rss.start()
    threads.append(rss)

    def through_gateway(since):
        # A request through the gateway, stored with the gateway's span and an engine's
        # (either engine: the gateway chooses).
        return probe.until_traced(gateway_url, {SERVICES["gateway"]}, since,
                                  any_of={SERVICES["engine-a"], SERVICES["engine-b"]})

    def fresh_metrics(service):
        return lambda since: probe.until_sampled(
            f'llm_requests_total{{job="{service}"}}' if service.startswith("soak-engine")
            else f'llm_gateway_requests_total{{job="{service}"}}', since)

    def engine_traced(name):
        url = f"http://{HOST}:{p[name]}"
        return lambda since: probe.until_traced(url, {SERVICES[name]}, since)

    fill = jaeger_data / "fill"

    def disk_full():
        # Fill the tmpfs to the last byte. What Jaeger (Badger, which writes through mmap)
        # does then is what this phase finds out.
        subprocess.run(["dd", "if=/dev/zero", f"of={fill}", "bs=1M"], stderr=subprocess.DEVNULL)
        log(f"jaeger data dir full: {shutil.disk_usage(jaeger_data).free} bytes free")

    supervisor = Supervisor(stack)
    supervisor.start()
    threads.append(supervisor)

    def down(component, how):
        # The supervisor leaves a component alone while a fault keeps it down on purpose.
        def fault():
            supervisor.pause(component)
            how()
        return fault

    def up(component):
        def restore():
            stack.start(component)
            supervisor.resume(component)
        return restore

    phases = [
        ("baseline", None, 0, None, None),
        ("collector killed, restarted after 15 s",
         down("otelcol", lambda: stack.kill("otelcol")), 15, up("otelcol"),
         {"traces": through_gateway, "metrics": fresh_metrics(SERVICES["gateway"])}),
        ("Prometheus down 60 s", down("prometheus", lambda: stack.stop("prometheus")), 60,
         up("prometheus"), {"metrics": fresh_metrics(SERVICES["gateway"])}),
        ("Jaeger down 60 s", down("jaeger", lambda: stack.stop("jaeger")), 60, up("jaeger"),
         {"traces": through_gateway}),
        ("relay restarted (SIGTERM)", lambda: services["relay"].stop(), 0,
         lambda: services["relay"].start(), {"traces": engine_traced("engine-b")}),
        ("gateway restarted (SIGTERM)", lambda: services["gateway"].stop(), 0,
         lambda: services["gateway"].start(), {"traces": through_gateway}),
        ("engine-b killed (SIGKILL), restarted after 60 s",
         lambda: services["engine-b"].stop(signal.SIGKILL), 60,
         lambda: services["engine-b"].start(),
         {"traces": engine_traced("engine-b"), "metrics": fresh_metrics(SERVICES["engine-b"])}),
        ("Jaeger's disk full for 60 s", disk_full if tmpfs else None, 60,
         (lambda: fill.unlink()) if tmpfs else None, {"traces": through_gateway}),
        ("engine-a's clock jumps +120 s for 60 s, then back",
         (lambda: clock_file.write_text("+120\n")) if faketime else None, 60,
         (lambda: clock_file.write_text("+0\n")) if faketime else None,
         {"traces": engine_traced("engine-a"), "metrics": fresh_metrics(SERVICES["engine-a"])}),
        ("final (no fault)", None, 0, None, None),
    ]

    chosen = set(range(len(phases)))
    if args.phases:
        chosen = {int(n) for n in args.phases.split(",")}
    results = []
    for i, (name, fault, fault_s, restore, probes) in enumerate(phases):
        if i not in chosen:
            continue
        log(f"phase {i}: {name}")
        start = time.time()
        summary_path = out / f"load-{i}.json"
        with open(summary_path, "w") as summary_file, open(logs / f"load-{i}.log", "w") as err:
            load = subprocess.Popen(
                [binary, "load", "--url", gateway_url, "--model", model, "--rate", str(args.rate),
                 "--duration", f"{args.phase_seconds}s", "--prompt-tokens", "uniform:64:512",
                 "--output-tokens", "uniform:8:64", "--json", "--quiet", *telemetry("load")],
                stdout=summary_file, stderr=err, env={**os.environ, **base})
            result = {"phase": name, "start": start, "fault": None, "recovery_s": {}}
            if fault is None and probes is not None:
                result["fault"] = "skipped (needs root for the tmpfs / libfaketime)"
            elif fault is not None:
                time.sleep(max(0, start + 30 - time.time()))
                fault_at = time.time()
                fault()
                time.sleep(fault_s)
                restore()
                end = time.time()
                result["fault"] = {"at_s": round(fault_at - start, 1),
                                   "lasted_s": round(end - fault_at, 1)}
                for what, measure in probes.items():
                    result["recovery_s"][what] = measure(end)
                log(f"phase {i}: recovered {result['recovery_s']}")
            load.wait()
        result["end"] = time.time()
        result["crashes"] = [f"{c} at +{t - start:.0f} s" for t, c in supervisor.crashes
                             if start <= t < result["end"]]
        try:
            result["load"] = json.loads(summary_path.read_text())
        except ValueError:
            result["load"] = None
        results.append(result)
        (out / "phases.json").write_text(json.dumps(results, indent=1))

    # Let the last exports (5 s intervals, batches, the collector's queues) land.
    time.sleep(30)
    rss.stopped.set()
    supervisor.stopped.set()
    report = analyse(stack, results, out, probe.answered)
    (out / "report.json").write_text(json.dumps(report, indent=1))
    write_markdown(report, out / "report.md", args)
    log(f"report: {out / 'report.md'}")


# ---- reading back what was stored -----------------------------------------------------------


def jaeger_traces(stack, service, start, end):
    q = urllib.parse.urlencode({"service": service, "start": int(start * 1e6),
                                "end": int(end * 1e6), "limit": 100000})
    try:
        return http_json(f"{stack.jaeger}/api/traces?{q}", timeout=300).get("data") or []
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as e:
        log(f"jaeger query for {service} failed: {e}")
        return []


def prom_query(stack, query, at):
    q = urllib.parse.urlencode({"query": query, "time": at})
    data = http_json(f"{stack.prometheus}/api/v1/query?{q}", timeout=60)
    return {json.dumps(r["metric"], sort_keys=True): float(r["value"][1])
            for r in data["data"]["result"]}


def analyse(stack, results, out, probes):
    report = {"phases": [], "metrics": {}, "rss": {}, "probes_answered": probes}
    for r in results:
        # Traces by their load-generator span or any later one, for requests sent in the phase.
        traces = {}
        for svc in SERVICES.values():
            for t in jaeger_traces(stack, svc, r["start"], r["end"] + 60):
                traces.setdefault(t["traceID"], t)
        complete = with_load = 0
        incomplete = []
        for t in traces.values():
            spans = [(t["processes"][s["processID"]]["serviceName"], s["operationName"],
                      s["startTime"] / 1e6) for s in t["spans"]]
            # A request belongs to the phase its load-generator span started in.
            load_starts = [ts for svc, _, ts in spans if svc == SERVICES["load"]]
            if not load_starts or not (r["start"] <= min(load_starts) < r["end"]):
                continue
            with_load += 1
            services = {svc for svc, _, _ in spans}
            engine_ops = {op for svc, op, _ in spans if svc.startswith("soak-engine")}
            if SERVICES["gateway"] in services and {"queue", "prefill", "decode"} <= engine_ops:
                complete += 1
            elif len(incomplete) < 3:
                incomplete.append(sorted({f"{svc}:{op}" for svc, op, _ in spans}))
        load = r.get("load") or {}
        req = load.get("requests", {})
        report["phases"].append({
            "phase": r["phase"], "fault": r["fault"], "recovery_s": r["recovery_s"],
            "crashes": r.get("crashes", []),
            "sent": req.get("sent"), "succeeded": req.get("succeeded"),
            "failed": req.get("failed"), "cancelled": req.get("cancelled"),
            "errors": load.get("errors", {}),
            "traces_with_load_span": with_load, "complete_traces": complete,
            "incomplete_examples": incomplete,
        })

    # Counter totals: every process's cumulative counter starts at 0, so the sum over the
    # instances' last values is the run's total, restarts included.
    end = results[-1]["end"] + 30
    span = int(end - results[0]["start"]) + 60
    m = report["metrics"]
    m["load_succeeded"] = sum(p["succeeded"] or 0 for p in report["phases"])
    m["load_sent"] = sum(p["sent"] or 0 for p in report["phases"])
    last = lambda sel: sum(prom_query(stack, f"sum by (instance) (last_over_time({sel}[{span}s]))",
                                      end).values())
    m["gateway_requests_success"] = last(
        f'llm_gateway_requests_total{{job="{SERVICES["gateway"]}",llm_request_outcome="success"}}')
    m["gateway_requests_all"] = last(f'llm_gateway_requests_total{{job="{SERVICES["gateway"]}"}}')
    for e in ("engine-a", "engine-b"):
        m[f"{e}_requests_success"] = last(
            f'llm_requests_total{{job="{SERVICES[e]}",llm_request_outcome="success"}}')
    for svc in SERVICES.values():
        m[f"{svc}_spans_dropped"] = last(f'infermon_telemetry_spans_dropped_total{{job="{svc}"}}')
        m[f"{svc}_export_failures"] = last(
            f'infermon_telemetry_export_failures_total{{job="{svc}"}}')

    rows = list(csv.DictReader(open(out / "rss.csv")))
    series = {}
    for row in rows:
        series.setdefault((row["service"], int(row["generation"])), []).append(
            (float(row["t"]), int(row["rss_kib"])))
    for (svc, gen), pts in sorted(series.items()):
        rss = [r for _, r in pts]
        report["rss"][f"{svc}#{gen}"] = {
            "minutes": round((pts[-1][0] - pts[0][0]) / 60, 1), "first_kib": rss[0],
            "max_kib": max(rss), "last_kib": rss[-1],
            "slope_kib_per_min": rounded(slope_kib_per_min(pts)),
            "slope_last_10_min": rounded(slope_kib_per_min(pts, last_s=600))
            if pts[-1][0] - pts[0][0] >= 900 else None}
    return report


def rounded(x):
    return None if x is None else round(x, 1)


def write_markdown(report, path, args):
    lines = [f"# Soak report ({time.strftime('%Y-%m-%d %H:%M')})", "",
             f"{len(report['phases'])} phases of {args.phase_seconds} s at {args.rate} req/s "
             f"(Poisson) through the gateway.", "",
             "| phase | sent | ok | failed | traces with load span | complete traces | "
             "recovery (s) | stack crashes | errors |", "|---|---|---|---|---|---|---|---|---|"]
    for p in report["phases"]:
        rec = ", ".join(f"{k} {v}" for k, v in p["recovery_s"].items()) or "-"
        if isinstance(p["fault"], str):
            rec = p["fault"]
        errs = ", ".join(f"{k} {v}" for k, v in p["errors"].items()) or "-"
        crashes = ", ".join(p["crashes"]) or "-"
        lines.append(f"| {p['phase']} | {p['sent']} | {p['succeeded']} | {p['failed']} | "
                     f"{p['traces_with_load_span']} | {p['complete_traces']} | {rec} | "
                     f"{crashes} | {errs} |")
    lines += ["", "Probe requests answered (counted by the servers too): " + (", ".join(
        f"{k} {v}" for k, v in report["probes_answered"].items()) or "none")]
    lines += ["", "| counter (sum over process instances) | value |", "|---|---|"]
    lines += [f"| {k} | {v:g} |" for k, v in report["metrics"].items()]
    lines += ["", "| process | minutes | first KiB | max KiB | last KiB | slope KiB/min "
              "(after 2 min) | slope KiB/min (last 10 min, if it ran 15) |",
              "|---|---|---|---|---|---|---|"]
    for k, v in report["rss"].items():
        lines.append(f"| {k} | {v['minutes']} | {v['first_kib']} | {v['max_kib']} | "
                     f"{v['last_kib']} | {v['slope_kib_per_min']} | {v['slope_last_10_min']} |")
    path.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)
