#!/usr/bin/env bash
# Check the alerting configuration with the real tools, plus the consistency checks that tie
# rules, thresholds, tests, runbook and routing together. Runs every check, reports each, exits
# non-zero if any failed. Builds promtool/amtool first if they are missing (scripts/build-stack.sh).
#
#   promtool check rules        deploy/prometheus/rules/*.yml
#   promtool test rules         deploy/prometheus/tests/alerts*_test.yml (every alert firing and not)
#   vmalert -dryRun             the same rules parsed as MetricsQL by VictoriaMetrics' vmalert
#   vmalert-tool unittest       deploy/prometheus/tests/*.yml converted by
#                               scripts/vmalert-tool-tests.py (differences listed, with reasons,
#                               in deploy/victoriametrics/vmalert-tool-differences.yml)
#   consistency                 every alert: labels, annotations, runbook section, firing and
#                               not-firing tests; thresholds defined, used and guarded;
#                               Alertmanager inhibition rules name real alerts
#   amtool check-config         deploy/alertmanager/alertmanager.yml as is, and rendered with
#                               every receiver enabled (dummy secrets)
#   render-config.sh            refuses each receiver without its secret, in one line; never
#                               writes a secret into the config
#   amtool config routes test   one case per route, and every alert of alerts.yml to the
#                               receiver its severity/component imply
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
source scripts/stack-lib.sh
source scripts/check-lib.sh

if ! source scripts/stack-env.sh 2>/dev/null || [[ -z "${PROMTOOL:-}" || -z "${AMTOOL:-}" || -z "${VMALERT_TOOL:-}" ]]; then
  scripts/build-stack.sh prometheus alertmanager victoriametrics >/dev/null || die "scripts/build-stack.sh failed (run it for details)"
  source scripts/stack-env.sh 2>/dev/null
  [[ -n "${PROMTOOL:-}" && -n "${AMTOOL:-}" && -n "${VMALERT:-}" && -n "${VMALERT_TOOL:-}" ]] ||
    die "promtool/amtool/vmalert/vmalert-tool missing after scripts/build-stack.sh prometheus alertmanager victoriametrics"
fi
# The renderer reads INFERMON_* from the environment: start from none.
clear_infermon_env


AM_CONFIG=deploy/alertmanager/alertmanager.yml
RENDER=deploy/alertmanager/render-config.sh

# ---- Prometheus rules -------------------------------------------------------------------------
check "promtool check rules deploy/prometheus/rules/*.yml" \
  "$PROMTOOL" check rules deploy/prometheus/rules/*.yml
check "promtool test rules deploy/prometheus/tests/alerts*_test.yml" \
  "$PROMTOOL" test rules deploy/prometheus/tests/alerts*_test.yml

# ---- the same rules on VictoriaMetrics (docs/scale.md, "Metrics store") ---------------------
check "vmalert -dryRun -rule=deploy/prometheus/rules/*.yml (MetricsQL parse)" \
  "$VMALERT" -dryRun -loggerLevel=ERROR '-rule=deploy/prometheus/rules/*.yml'
vmalert_tool_tests() {
  python3 scripts/vmalert-tool-tests.py "$TMP/vmalert-tool" &&
    "$VMALERT_TOOL" unittest --disableAlertgroupLabel --files "$TMP/vmalert-tool/*.yml"
}
check "vmalert-tool unittest deploy/prometheus/tests/*.yml (converted; listed differences applied)" vmalert_tool_tests

consistency() {
  python3 - <<'EOF'
import re, sys, yaml

RUNBOOK = "https://github.com/infermon/infermon/blob/main/docs/runbook.md#"
SEVERITIES = {"critical", "warning"}
COMPONENTS = {"inference", "gpu", "pipeline"}
# Alerts whose expression value carries no information (up == 0, absent(), a GPU gone).
VALUELESS = {"InferenceServiceDown", "GpuUnavailable", "TelemetryComponentDown",
             "TelemetryTraceStoreDown", "TelemetryAlertThresholdMissing"}
problems = []

alerts_text = open("deploy/prometheus/rules/alerts.yml").read()
alerts = [r for g in yaml.safe_load(alerts_text)["groups"] for r in g["rules"] if "alert" in r]
names = [a["alert"] for a in alerts]
if len(set(names)) != len(names):
    problems.append("duplicate alert names in alerts.yml")

runbook = open("docs/runbook.md").read()
sections = set(re.findall(r"(?m)^## (\S+)\s*$", runbook))

tests = yaml.safe_load(open("deploy/prometheus/tests/alerts_test.yml"))["tests"]
fires, silent = set(), set()
for t in tests:
    for case in t.get("alert_rule_test") or []:
        (fires if case.get("exp_alerts") else silent).add(case["alertname"])
for f in ["deploy/prometheus/tests/alerts_no_thresholds_test.yml"]:
    for t in yaml.safe_load(open(f))["tests"]:
        for case in t.get("alert_rule_test") or []:
            (fires if case.get("exp_alerts") else silent).add(case["alertname"])

for a in alerts:
    n, labels, ann = a["alert"], a.get("labels") or {}, a.get("annotations") or {}
    if labels.get("severity") not in SEVERITIES:
        problems.append(f"{n}: severity must be one of {sorted(SEVERITIES)}")
    if labels.get("component") not in COMPONENTS:
        problems.append(f"{n}: component must be one of {sorted(COMPONENTS)}")
    if not a.get("for"):
        problems.append(f"{n}: no `for:` (flapping)")
    for key in ("summary", "description"):
        if not ann.get(key, "").strip():
            problems.append(f"{n}: no {key} annotation")
    if n not in VALUELESS and "$value" not in ann.get("description", ""):
        problems.append(f"{n}: description does not state the value ($value)")
    if ann.get("runbook_url") != RUNBOOK + n.lower():
        problems.append(f"{n}: runbook_url must be {RUNBOOK}{n.lower()}")
    if n not in sections:
        problems.append(f"{n}: docs/runbook.md has no `## {n}` section")
    if n not in fires:
        problems.append(f"{n}: no promtool test where it fires")
    if n not in silent:
        problems.append(f"{n}: no promtool test where it does not fire")
for s in sections - set(names):
    problems.append(f"docs/runbook.md documents `{s}`, which alerts.yml does not define")

# Thresholds: every one read is defined and guarded; every one defined is read.
thresholds_file = yaml.safe_load(open("deploy/prometheus/rules/thresholds.yml"))
defined = {r["record"].split(":", 2)[2] for g in thresholds_file["groups"] for r in g["rules"]}
guard = next(a for a in alerts if a["alert"] == "TelemetryAlertThresholdMissing")["expr"]
guarded = set(re.findall(r"absent\(infermon:threshold:(\w+)\)", guard))
read = set()
for a in alerts:
    if a["alert"] != "TelemetryAlertThresholdMissing":
        read |= set(re.findall(r"infermon:threshold:(\w+)", a["expr"]))
for t in sorted(read - defined):
    problems.append(f"alerts.yml reads infermon:threshold:{t}, which thresholds.yml does not define")
for t in sorted(defined - read):
    problems.append(f"thresholds.yml defines infermon:threshold:{t}, which no alert reads")
for t in sorted(defined ^ guarded):
    problems.append(f"TelemetryAlertThresholdMissing must guard exactly the thresholds; mismatch: {t}")

# Alertmanager's inhibition rules must name real alerts (a typo silently inhibits nothing).
am = yaml.safe_load(open("deploy/alertmanager/alertmanager.yml"))
for rule in am.get("inhibit_rules") or []:
    for m in (rule.get("source_matchers") or []) + (rule.get("target_matchers") or []):
        mm = re.match(r'alertname(=~|=|!=)"(.*)"$', m)
        if not mm:
            continue
        op, value = mm.groups()
        matched = [n for n in names if (re.fullmatch(value, n) if op == "=~" else n == value)]
        if op in ("=", "=~") and not matched:
            problems.append(f"alertmanager.yml inhibit rule names no existing alert: {m}")
        if op == "=~":
            for part in value.split("|"):
                if part not in names:
                    problems.append(f"alertmanager.yml inhibit rule: {part} is not an alert")

for p in problems:
    print(p)
sys.exit(1 if problems else 0)
EOF
}
check "alerts: labels, annotations, runbook sections, tests, thresholds, inhibition names" consistency

# ---- Alertmanager config ----------------------------------------------------------------------
check "amtool check-config $AM_CONFIG (as is: no receivers enabled)" \
  "$AMTOOL" check-config "$AM_CONFIG"

# Dummy secrets, all four receivers on, short timings overridden.
SECRET=not-a-real-secret-4d9f
mkdir -p "$TMP/secrets"
printf 'https://hooks.slack.com/services/%s\n' "$SECRET" >"$TMP/secrets/slack"
printf '%s\n' "$SECRET" >"$TMP/secrets/pagerduty"
printf '%s\n' "$SECRET" >"$TMP/secrets/smtp"
FULL_ENV=(
  INFERMON_ALERT_RECEIVERS=email,slack,pagerduty,webhook
  INFERMON_SLACK_WEBHOOK_URL_FILE="$TMP/secrets/slack"
  INFERMON_SLACK_CHANNEL='#inference-alerts'
  INFERMON_PAGERDUTY_ROUTING_KEY_FILE="$TMP/secrets/pagerduty"
  INFERMON_SMTP_SMARTHOST=smtp.example.com:587
  INFERMON_SMTP_FROM=alertmanager@example.com
  INFERMON_ALERT_EMAIL_TO=oncall@example.com
  INFERMON_SMTP_USERNAME=alertmanager
  INFERMON_SMTP_PASSWORD_FILE="$TMP/secrets/smtp"
  INFERMON_ALERT_WEBHOOK_URL="https://chatops.example.com/hook?token=$SECRET"
  INFERMON_ALERT_GROUP_WAIT=10s
  INFERMON_ALERT_GROUP_INTERVAL=1m
  INFERMON_ALERT_REPEAT_INTERVAL=2h
)
render_full() {
  env "${FULL_ENV[@]}" "$RENDER" "$TMP/full" &&
    "$AMTOOL" check-config "$TMP/full/alertmanager.yml" &&
    # Every integration is really there, the overrides applied, and no secret in the config.
    for want in slack_configs pagerduty_configs email_configs webhook_configs auth_password_file \
      routing_key_file api_url_file url_file 'group_wait: 10s' 'repeat_interval: 2h'; do
      grep -q "$want" "$TMP/full/alertmanager.yml" || { echo "rendered config lacks $want"; return 1; }
    done &&
    ! grep -n "$SECRET" "$TMP/full/alertmanager.yml" &&
    [[ $(stat -c %a "$TMP/full/secrets/infermon_alert_webhook_url") == 600 ]]
}
check "render-config.sh with every receiver enabled; amtool check-config; no secret in it" render_full

# Each receiver enabled without its secret: refused, in one line naming what to set.
# refused VAR ENV...: rendering with ENV fails with one line that names VAR.
refused() {
  local var=$1 out
  shift
  if out=$(env "$@" "$RENDER" "$TMP/refused" 2>&1); then
    echo "accepted: $*"
    return 1
  fi
  [[ $(printf '%s\n' "$out" | wc -l) -eq 1 && $out == *"$var"* ]] ||
    { echo "expected one line naming $var for: $*"; printf '%s\n' "$out"; return 1; }
}
refusals() {
  local rc=0
  refused INFERMON_SLACK_WEBHOOK_URL_FILE INFERMON_ALERT_RECEIVERS=slack || rc=1
  refused INFERMON_PAGERDUTY_ROUTING_KEY_FILE INFERMON_ALERT_RECEIVERS=pagerduty || rc=1
  refused INFERMON_ALERT_WEBHOOK_URL_FILE INFERMON_ALERT_RECEIVERS=webhook || rc=1
  refused INFERMON_SMTP_SMARTHOST INFERMON_ALERT_RECEIVERS=email || rc=1
  refused INFERMON_SMTP_PASSWORD_FILE INFERMON_ALERT_RECEIVERS=email INFERMON_SMTP_SMARTHOST=smtp.example.com:587 \
    INFERMON_SMTP_FROM=a@example.com INFERMON_ALERT_EMAIL_TO=b@example.com INFERMON_SMTP_USERNAME=u || rc=1
  refused INFERMON_PAGERDUTY_ROUTING_KEY_FILE INFERMON_ALERT_RECEIVERS=pagerduty \
    INFERMON_PAGERDUTY_ROUTING_KEY_FILE=/nonexistent/key || rc=1
  refused INFERMON_ALERT_RECEIVERS INFERMON_ALERT_RECEIVERS=sms || rc=1
  return $rc
}
check "render-config.sh refuses a receiver without its secret (one line, naming the variable)" refusals

# ---- routing ----------------------------------------------------------------------------------
# route_case RECEIVER LABEL=VALUE...: the labels route to exactly that receiver.
route_case() {
  local want=$1
  shift
  "$AMTOOL" config routes test --config.file="$TMP/full/alertmanager.yml" --verify.receivers="$want" "$@" >/dev/null ||
    { echo "labels {$*} do not route to $want: $("$AMTOOL" config routes test --config.file="$TMP/full/alertmanager.yml" "$@")"; return 1; }
}
routes() {
  local rc=0
  # One case per route of the tree.
  route_case page alertname=InferenceHighErrorRatio severity=critical component=inference job=svc || rc=1
  route_case chat alertname=InferenceKvCacheNearFull severity=warning component=inference job=svc || rc=1
  route_case chat alertname=InferenceHighErrorRatio severity=critical component=inference job=infermon-sim || rc=1
  route_case chat alertname=InferenceHighErrorRatio severity=critical component=inference job=demo/infermon-load-vllm || rc=1
  route_case pipeline alertname=TelemetryCollectorQueueNearFull severity=warning component=pipeline job=otelcol || rc=1
  route_case page alertname=TelemetryComponentDown severity=critical component=pipeline job=otelcol || rc=1
  route_case hardware alertname=GpuTemperatureHigh severity=warning component=gpu host_name=node1 || rc=1
  route_case page alertname=GpuFatalErrors severity=critical component=gpu host_name=node1 || rc=1
  route_case default alertname=SomethingElse || rc=1
  # Every alert of alerts.yml, with its own labels, where its severity and component send it.
  while read -r alertname severity component; do
    local want
    case $severity/$component in
      critical/*) want=page ;;
      warning/pipeline) want=pipeline ;;
      warning/gpu) want=hardware ;;
      warning/inference) want=chat ;;
      *) echo "$alertname: no expected receiver for $severity/$component"; rc=1; continue ;;
    esac
    route_case "$want" alertname="$alertname" severity="$severity" component="$component" job=some-service || rc=1
  done < <(python3 -c '
import yaml
for g in yaml.safe_load(open("deploy/prometheus/rules/alerts.yml"))["groups"]:
    for r in g["rules"]:
        if "alert" in r:
            print(r["alert"], r["labels"]["severity"], r["labels"]["component"])')
  return $rc
}
check "amtool config routes test: every route, and every alert to its receiver" routes

if ((${#FAILED[@]})); then
  printf '\n%d check(s) failed\n' "${#FAILED[@]}"
  exit 1
fi
printf '\nall alerting checks passed\n'
