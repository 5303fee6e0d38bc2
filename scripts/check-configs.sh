#!/usr/bin/env bash
# Check every stack config with the real program that reads it, plus the structural checks
# for what cannot run here (Grafana provisioning, docker compose). Runs all checks, reports
# each, exits non-zero if any failed. Builds missing stack binaries first (seconds when warm).
#
#   otelcol validate          otel-collector/config.yaml   (+ builder.yaml == components used)
#   otelcol validate + start  otel-collector/agent.yaml (static and dns resolver), gateway.yaml
#                             (starting compiles the OTTL that validate skips); builder.yaml ==
#                             the union of the three configs' components; the agent's vLLM
#                             scrape and normalisation == config.yaml's
#   promtool check config     deploy/prometheus/prometheus.yml (rules, file-SD target lists)
#   promtool check rules      deploy/prometheus/rules/*.yml
#   promtool test rules       deploy/prometheus/tests/*.yml
#   jaeger validate           deploy/jaeger/config.yaml
#   victoria-metrics          deploy/victoriametrics/victoriametrics.flags (parsed by the binary);
#   promtool check config     prometheus.yml + deploy/victoriametrics/prometheus-remote-write.yml
#   amtool check-config       deploy/alertmanager/alertmanager.yml
#   grafana provisioning      scripts/check-grafana.py (structure, uids, PromQL via promtool)
#   tempo (profile `tempo`)   scripts/check-tempo.py: tempo/tempo.yaml + Tempo datasource keys and
#                             types vs tempo/reference/ (Tempo is AGPL, never run), wiring; and
#                             its --self-test (known-bad edits must each be caught)
#   docker compose            scripts/compose-check (compose-go: schema, interpolation, ...,
#                             loopback ports, container hardening, secrets as files)
#   versions                  scripts/versions.env == builder.yaml == compose image tags
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
source scripts/versions.env
source scripts/stack-lib.sh
source scripts/check-lib.sh

scripts/build-stack.sh >/dev/null || die "scripts/build-stack.sh failed (run it for details)"
source scripts/stack-env.sh || die "stack binaries missing after build"

# The configs' ${env:...} defaults are what gets validated: clear any overrides in this shell.
clear_infermon_env


# ---- collector --------------------------------------------------------------------------------
check "otelcol validate otel-collector/config.yaml" \
  "$OTELCOL" validate --config otel-collector/config.yaml
check "otelcol validate otel-collector/agent.yaml (static resolver)" \
  "$OTELCOL" validate --config otel-collector/agent.yaml
check "otelcol validate otel-collector/agent.yaml (dns resolver)" \
  env INFERMON_GATEWAY_RESOLVER=dns "$OTELCOL" validate --config otel-collector/agent.yaml
check "otelcol validate otel-collector/gateway.yaml" \
  "$OTELCOL" validate --config otel-collector/gateway.yaml

# `otelcol validate` does not compile OTTL conditions (tail_sampling's policies); starting does.
# Runs the collector with CONFIG on ephemeral ports (extra VAR=VALUE args first) until it reports
# ready, then stops it; fails with its log if it exits first or is not ready within 30 s.
collector_starts() {
  local log=$TMP/otelcol-start.log pid i
  env INFERMON_OTLP_GRPC_PORT=0 INFERMON_OTLP_HTTP_PORT=0 INFERMON_OTELCOL_HEALTH_PORT=0 \
    INFERMON_OTELCOL_METRICS_PORT=0 "$@" >"$log" 2>&1 &
  pid=$!
  for ((i = 0; i < 300; i++)); do
    if grep -q "Everything is ready" "$log"; then
      kill "$pid" && wait "$pid" 2>/dev/null
      return 0
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
      wait "$pid"
      grep -E $'^Error:|\terror\t' "$log" | tail -5
      return 1
    fi
    sleep 0.1
  done
  kill "$pid"
  wait "$pid" 2>/dev/null
  echo "not ready after 30 s:"
  tail -5 "$log"
  return 1
}
check "otelcol starts with otel-collector/agent.yaml (dns resolver)" \
  collector_starts INFERMON_GATEWAY_RESOLVER=dns "$OTELCOL" --config otel-collector/agent.yaml
check "otelcol starts with otel-collector/gateway.yaml" \
  collector_starts "$OTELCOL" --config otel-collector/gateway.yaml

# builder.yaml must hold exactly the component types the three collector configs use (the
# single collector, the agent and gateway tiers), all at one version.
collector_components_match() {
  "$OTELCOL" components >"$TMP/components.yaml" || return 1
  python3 - "$TMP/components.yaml" otel-collector/builder.yaml "$OTELCOL_VERSION" \
    otel-collector/config.yaml otel-collector/agent.yaml otel-collector/gateway.yaml <<'EOF'
import sys, yaml
comps, builder, version, cfg_paths = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
built = yaml.safe_load(open(comps))
cfgs = {p: yaml.safe_load(open(p)) for p in cfg_paths}
ok = True
for kind in ("receivers", "processors", "exporters", "connectors", "extensions"):
    have = {c["name"] for c in (built.get(kind) or [])}
    used = {k.split("/")[0] for cfg in cfgs.values() for k in (cfg.get(kind) or {})}
    if have != used:
        ok = False
        print(f"{kind}: built {sorted(have)} but the configs use {sorted(used)}")
# The agent scrapes and normalises the node's vLLM exactly as the single collector does.
single, agent = cfgs["otel-collector/config.yaml"], cfgs["otel-collector/agent.yaml"]
for kind, key in (("receivers", "prometheus/vllm"), ("processors", "metrics_transform/vllm"),
                  ("processors", "transform/vllm"), ("processors", "metrics_transform/vllm_blocks")):
    if single[kind].get(key) != agent[kind].get(key):
        ok = False
        print(f"agent.yaml {kind}.{key} differs from config.yaml's")
b = yaml.safe_load(open(builder))
if str(b["dist"]["version"]) != version:
    ok = False
    print(f"builder.yaml dist.version {b['dist']['version']} != OTELCOL_VERSION {version}")
for kind in ("receivers", "processors", "exporters", "connectors", "extensions"):
    for entry in b.get(kind) or []:
        mod, ver = entry["gomod"].split()
        if ver != "v" + version:
            ok = False
            print(f"builder.yaml: {mod} at {ver}, not v{version}")
sys.exit(0 if ok else 1)
EOF
}
check "otel-collector/builder.yaml == components config/agent/gateway.yaml use @ $OTELCOL_VERSION" collector_components_match

# ---- Prometheus -------------------------------------------------------------------------------
check "promtool check config deploy/prometheus/prometheus.yml" \
  "$PROMTOOL" check config deploy/prometheus/prometheus.yml
check "promtool check rules deploy/prometheus/rules/*.yml" \
  "$PROMTOOL" check rules deploy/prometheus/rules/*.yml
check "promtool test rules deploy/prometheus/tests/*.yml" \
  "$PROMTOOL" test rules deploy/prometheus/tests/*.yml

# ---- VictoriaMetrics (docs/scale.md, "Metrics store") ------------------------------------------
# Its flags file is parsed by the binary itself (names and values; -version then exits).
vm_flags() {
  local flags
  mapfile -t flags < <(grep -v '^[[:space:]]*\(#\|$\)' deploy/victoriametrics/victoriametrics.flags)
  local v
  v=$("$VICTORIAMETRICS" "${flags[@]}" -version) || return 1
  [[ $v == "victoria-metrics-$VICTORIAMETRICS_GOMOD_VERSION" ]] ||
    { echo "built victoria-metrics says '$v', versions.env pins $VICTORIAMETRICS_GOMOD_VERSION"; return 1; }
}
check "victoria-metrics parses deploy/victoriametrics/victoriametrics.flags (and is $VICTORIAMETRICS_GOMOD_VERSION)" vm_flags
# The config start-stack.sh runs with VictoriaMetrics: the repo's file + the remote_write section.
prometheus_with_vm() {
  mkdir -p "$TMP/prom-vm"
  ln -sfn "$ROOT/deploy/prometheus/rules" "$TMP/prom-vm/rules"
  ln -sfn "$ROOT/deploy/prometheus/targets" "$TMP/prom-vm/targets"
  cat deploy/prometheus/prometheus.yml deploy/victoriametrics/prometheus-remote-write.yml >"$TMP/prom-vm/prometheus.yml"
  "$PROMTOOL" check config "$TMP/prom-vm/prometheus.yml" &&
    grep -q '^remote_write:' "$TMP/prom-vm/prometheus.yml"
}
check "promtool check config prometheus.yml + deploy/victoriametrics/prometheus-remote-write.yml" prometheus_with_vm

# ---- Jaeger, Alertmanager ---------------------------------------------------------------------
check "jaeger validate deploy/jaeger/config.yaml" \
  "$JAEGER" validate --config deploy/jaeger/config.yaml
check "amtool check-config deploy/alertmanager/alertmanager.yml" \
  "$AMTOOL" check-config deploy/alertmanager/alertmanager.yml

# ---- Grafana (cannot run here: structure + PromQL through promtool) ---------------------------
check "grafana provisioning (structure, datasource uids, PromQL)" \
  python3 scripts/check-grafana.py "$PROMTOOL"

# ---- Tempo (compose profile `tempo`; AGPL: never built or run, checked against its docs) -----
check "tempo/tempo.yaml + Tempo datasource vs Tempo $TEMPO_VERSION / Grafana docs (keys, types, wiring)" \
  python3 scripts/check-tempo.py
check "scripts/check-tempo.py catches misspelled keys, wrong types, broken wiring (--self-test)" \
  python3 scripts/check-tempo.py --self-test

# ---- docker compose (no engine here: compose-go, the library docker compose uses) ------------
COMPOSE_CHECK_DIR="$INFERMON_STACK_CACHE/compose-check-$(cat scripts/compose-check/go.mod scripts/compose-check/go.sum scripts/compose-check/main.go | sha256sum | cut -c1-12)"
build_compose_check() {
  [[ -x "$COMPOSE_CHECK_DIR/compose-check" ]] && return 0
  (cd scripts/compose-check && GOTOOLCHAIN=$STACK_GOTOOLCHAIN GOWORK=off CGO_ENABLED=0 \
    go build -trimpath -ldflags "-s -w" -o "$COMPOSE_CHECK_DIR/compose-check" .)
}
compose_valid() {
  build_compose_check || return 1
  # Clean environment: image tags must come from the file's own defaults.
  # compose-check also enforces the hardening rules (non-root, read-only, no capabilities,
  # no-new-privileges, secrets as files, Grafana anonymous access off): see its main.go.
  env -i PATH="$PATH" HOME="$HOME" GF_ADMIN_PASSWORD_FILE=/run/check-only/grafana-password \
    "$COMPOSE_CHECK_DIR/compose-check" deploy/docker-compose.yml >"$TMP/images" || return 1
  local want ok=0
  for want in "otel-collector otel/opentelemetry-collector-contrib:$OTELCOL_VERSION" \
    "prometheus prom/prometheus:v$PROMETHEUS_VERSION" \
    "alertmanager prom/alertmanager:v$ALERTMANAGER_VERSION" \
    "jaeger jaegertracing/jaeger:$JAEGER_VERSION" \
    "grafana grafana/grafana:$GRAFANA_VERSION" \
    "tempo grafana/tempo:$TEMPO_VERSION"; do
    grep -qxF "$want" "$TMP/images" || { echo "image drifted from scripts/versions.env: want '$want'"; ok=1; }
  done
  ((ok == 0)) || { cat "$TMP/images"; return 1; }
  # Without a Grafana password file compose must refuse to run anything (no admin/admin default).
  if env -i PATH="$PATH" HOME="$HOME" "$COMPOSE_CHECK_DIR/compose-check" deploy/docker-compose.yml >/dev/null 2>"$TMP/nopw"; then
    echo "compose loads without GF_ADMIN_PASSWORD_FILE: Grafana would start with a default password"
    return 1
  fi
  grep -q GF_ADMIN_PASSWORD_FILE "$TMP/nopw" || { cat "$TMP/nopw"; return 1; }
}
check "deploy/docker-compose.yml (compose-go; tags == versions.env; loopback ports; hardening; password file required)" compose_valid

# ---- versions in one place ----------------------------------------------------------------
versions_consistent() {
  local major minor patch
  IFS=. read -r major minor patch <<<"$PROMETHEUS_VERSION"
  local gomod
  gomod=$(printf 'v0.%d%02d.%d' "$major" "$minor" "$patch")
  [[ "$gomod" == "$PROMETHEUS_GOMOD_VERSION" ]] ||
    { echo "PROMETHEUS_GOMOD_VERSION=$PROMETHEUS_GOMOD_VERSION, expected $gomod for $PROMETHEUS_VERSION"; return 1; }
  grep -q "prometheusVersion: $PROMETHEUS_VERSION\$" grafana/provisioning/datasources/datasources.yaml ||
    { echo "grafana datasource prometheusVersion != $PROMETHEUS_VERSION"; return 1; }
  "$PROMETHEUS" --version 2>&1 | grep -q "version $PROMETHEUS_VERSION " ||
    { echo "built prometheus is not $PROMETHEUS_VERSION"; return 1; }
  "$OTELCOL" --version 2>&1 | grep -q "version $OTELCOL_VERSION\$" ||
    { echo "built otelcol is not $OTELCOL_VERSION"; return 1; }
  "$ALERTMANAGER" --version 2>&1 | grep -q "version $ALERTMANAGER_VERSION " ||
    { echo "built alertmanager is not $ALERTMANAGER_VERSION"; return 1; }
  "$JAEGER" version 2>/dev/null | grep -q "\"gitVersion\":\"v$JAEGER_VERSION\"" ||
    { echo "built jaeger is not $JAEGER_VERSION"; return 1; }
}
check "scripts/versions.env consistent (Prometheus module tag, datasource, built binaries)" versions_consistent

# ---- the scripts themselves -------------------------------------------------------------------
scripts_parse() {
  local f
  for f in scripts/*.sh; do bash -n "$f" || return 1; done
}
check "scripts/*.sh parse (bash -n)" scripts_parse

if ((${#FAILED[@]})); then
  printf '\n%d check(s) failed\n' "${#FAILED[@]}"
  exit 1
fi
printf '\nall config checks passed\n'
