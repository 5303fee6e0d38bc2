#!/bin/sh
# Render deploy/alertmanager/alertmanager.yml into the config Alertmanager runs, enabling the
# receivers' integrations from the environment and secret files.
#
#   INFERMON_ALERT_RECEIVERS=slack,pagerduty deploy/alertmanager/render-config.sh OUT_DIR
#
# Writes OUT_DIR/alertmanager.yml, OUT_DIR/templates/ and, for secrets given as variables,
# OUT_DIR/secrets/* (mode 600). The config only ever names secret files (Alertmanager's *_file
# fields): no secret appears in it, in its logs or in its API.
#
# Receivers (INFERMON_ALERT_RECEIVERS, comma or space separated; docs/alerting.md has details):
#   slack      INFERMON_SLACK_WEBHOOK_URL_FILE (or INFERMON_SLACK_WEBHOOK_URL)
#              optional INFERMON_SLACK_CHANNEL, INFERMON_SLACK_PIPELINE_CHANNEL
#   pagerduty  INFERMON_PAGERDUTY_ROUTING_KEY_FILE (or INFERMON_PAGERDUTY_ROUTING_KEY): an
#              Events API v2 integration key
#   email      INFERMON_SMTP_SMARTHOST (host:port), INFERMON_SMTP_FROM, INFERMON_ALERT_EMAIL_TO,
#              INFERMON_SMTP_USERNAME, INFERMON_SMTP_PASSWORD_FILE (or INFERMON_SMTP_PASSWORD);
#              optional INFERMON_HARDWARE_EMAIL_TO (GPU alerts), INFERMON_SMTP_REQUIRE_TLS
#              (true|false, default true), INFERMON_SMTP_AUTH=none for a relay without login
#   webhook    INFERMON_ALERT_WEBHOOK_URL_FILE (or INFERMON_ALERT_WEBHOOK_URL): gets every
#              notification (Alertmanager's webhook JSON)
# Timing (optional, Alertmanager durations such as 30s, 5m, 4h):
#   INFERMON_ALERT_GROUP_WAIT, INFERMON_ALERT_GROUP_INTERVAL, INFERMON_ALERT_REPEAT_INTERVAL
#
# Fails with one line naming the missing or invalid setting. POSIX sh and awk only, so that it
# runs inside the busybox-based Alertmanager image as well as on a host.
set -eu

HERE=$(cd "$(dirname "$0")" && pwd)
TEMPLATE=$HERE/alertmanager.yml

die() {
  printf 'render-config: %s\n' "$*" >&2
  exit 1
}

[ $# -eq 1 ] || die "usage: render-config.sh OUT_DIR (receivers from INFERMON_ALERT_RECEIVERS)"
OUT=$1

# ---- which integrations --------------------------------------------------------------------
ENABLED=
for r in $(printf '%s' "${INFERMON_ALERT_RECEIVERS:-}" | tr ',' ' '); do
  case $r in
    email | slack | pagerduty | webhook) ENABLED="$ENABLED $r" ;;
    *) die "unknown receiver '$r' in INFERMON_ALERT_RECEIVERS (known: email, slack, pagerduty, webhook)" ;;
  esac
done
enabled() {
  case " $ENABLED " in *" $1 "*) return 0 ;; esac
  return 1
}

mkdir -p "$OUT/secrets" || die "cannot create $OUT/secrets"
chmod 700 "$OUT/secrets"
OUT=$(cd "$OUT" && pwd)

# secret RECEIVER VAR WHAT: leave VAR_FILE naming a readable, non-empty file (absolute path).
# A secret given in VAR itself is written to OUT/secrets/ first.
secret() {
  recv=$1 var=$2 what=$3
  eval "file=\${${var}_FILE:-}"
  eval "value=\${${var}:-}"
  if [ -n "$file" ]; then
    [ -f "$file" ] && [ -r "$file" ] && [ -s "$file" ] ||
      die "$recv receiver: ${var}_FILE=$file is not a readable, non-empty file (it should hold $what)"
    case $file in /*) ;; *) file=$(cd "$(dirname "$file")" && pwd)/$(basename "$file") ;; esac
  elif [ -n "$value" ]; then
    file=$OUT/secrets/$(printf '%s' "$var" | tr 'A-Z' 'a-z')
    (umask 077 && printf '%s\n' "$value" >"$file")
  else
    die "$recv receiver is enabled (INFERMON_ALERT_RECEIVERS) but has no secret: set ${var}_FILE to a file holding $what (or $var)"
  fi
  export "${var}_FILE=$file"
}

# required RECEIVER VAR WHAT: a plain (non-secret) setting the receiver cannot work without.
required() {
  eval "value=\${${2}:-}"
  [ -n "$value" ] || die "$1 receiver is enabled (INFERMON_ALERT_RECEIVERS) but $2 is not set ($3)"
}

# The `#[section]` markers of the template that are switched on.
SECTIONS=$ENABLED
if enabled slack; then
  secret slack INFERMON_SLACK_WEBHOOK_URL "the Slack incoming-webhook URL"
  export INFERMON_SLACK_PIPELINE_CHANNEL="${INFERMON_SLACK_PIPELINE_CHANNEL:-${INFERMON_SLACK_CHANNEL:-}}"
fi
if enabled pagerduty; then
  secret pagerduty INFERMON_PAGERDUTY_ROUTING_KEY "the PagerDuty Events API v2 integration key"
fi
if enabled webhook; then
  secret webhook INFERMON_ALERT_WEBHOOK_URL "the URL to POST notifications to"
fi
if enabled email; then
  required email INFERMON_SMTP_SMARTHOST "the SMTP server as host:port, e.g. smtp.example.com:587"
  required email INFERMON_SMTP_FROM "the sender address"
  required email INFERMON_ALERT_EMAIL_TO "the recipient address(es)"
  case $INFERMON_SMTP_SMARTHOST in
    *:[0-9]*) ;;
    *) die "email receiver: INFERMON_SMTP_SMARTHOST=$INFERMON_SMTP_SMARTHOST needs a port (host:port, e.g. smtp.example.com:587)" ;;
  esac
  case ${INFERMON_SMTP_REQUIRE_TLS:-true} in
    true | false) ;;
    *) die "email receiver: INFERMON_SMTP_REQUIRE_TLS must be true or false, not '$INFERMON_SMTP_REQUIRE_TLS'" ;;
  esac
  export INFERMON_HARDWARE_EMAIL_TO="${INFERMON_HARDWARE_EMAIL_TO:-$INFERMON_ALERT_EMAIL_TO}"
  case ${INFERMON_SMTP_AUTH:-password} in
    none) ;;
    password)
      required email INFERMON_SMTP_USERNAME "the SMTP login; set INFERMON_SMTP_AUTH=none for a relay without one"
      secret email INFERMON_SMTP_PASSWORD "the SMTP password"
      SECTIONS="$SECTIONS email-auth"
      ;;
    *) die "email receiver: INFERMON_SMTP_AUTH must be password or none, not '$INFERMON_SMTP_AUTH'" ;;
  esac
fi

for v in INFERMON_ALERT_GROUP_WAIT INFERMON_ALERT_GROUP_INTERVAL INFERMON_ALERT_REPEAT_INTERVAL; do
  eval "value=\${$v:-}"
  [ -z "$value" ] || printf '%s' "$value" | grep -Eq '^([0-9]+(ms|s|m|h|d|w|y))+$' ||
    die "$v=$value is not a duration (examples: 10s, 5m, 4h)"
done

# ---- render ----------------------------------------------------------------------------------
# Lines `<indent>#[section] <text>` become `<indent><text>` when the section is on. ${VAR} and
# ${VAR:-default} are filled in on those lines (escaped for YAML double-quoted strings), and
# `key: value  # override: VAR` lines take VAR's value when it is set.
rm -rf "$OUT/templates"
cp -R "$HERE/templates" "$OUT/templates"
awk -v sections=" $SECTIONS " '
function yaml_escape(s,   out, i, c) {
  out = ""
  for (i = 1; i <= length(s); i++) {
    c = substr(s, i, 1)
    if (c == "\\" || c == "\"") out = out "\\"
    out = out c
  }
  return out
}
function fill(line,   out, ref, name, dflt, sep, value) {
  out = ""
  while (match(line, /\$\{[A-Z_][A-Z0-9_]*(:-[^}]*)?\}/)) {
    ref = substr(line, RSTART + 2, RLENGTH - 3)
    sep = index(ref, ":-")
    if (sep) { name = substr(ref, 1, sep - 1); dflt = substr(ref, sep + 2) }
    else { name = ref; dflt = "" }
    value = ENVIRON[name]
    if (value == "") {
      if (!sep) {
        printf "render-config: %s is required (line %d of alertmanager.yml)\n", name, NR > "/dev/stderr"
        failed = 1
        exit 1
      }
      value = dflt
    }
    out = out substr(line, 1, RSTART - 1) yaml_escape(value)
    line = substr(line, RSTART + RLENGTH)
  }
  return out line
}
{
  if (match($0, /^[ \t]*#\[[a-z-]+\] ?/)) {
    indent = $0
    sub(/#.*$/, "", indent)
    name = substr($0, length(indent) + 3)
    sub(/\].*$/, "", name)
    if (index(sections, " " name " ")) {
      print fill(indent substr($0, RLENGTH + 1))
      next
    }
  } else if (match($0, /# override: [A-Z_][A-Z0-9_]*[ \t]*$/)) {
    var = substr($0, RSTART + 12)
    sub(/[ \t]*$/, "", var)
    if (ENVIRON[var] != "") {
      line = $0
      sub(/:[ \t].*$/, "", line)
      print line ": " ENVIRON[var] "  # from " var
      next
    }
  }
  print
}
END { if (failed) exit 1 }
' "$TEMPLATE" >"$OUT/alertmanager.yml.tmp" || die "could not render $TEMPLATE"
mv "$OUT/alertmanager.yml.tmp" "$OUT/alertmanager.yml"

printf 'render-config: wrote %s (receivers:%s)\n' "$OUT/alertmanager.yml" "${ENABLED:- none}" >&2
