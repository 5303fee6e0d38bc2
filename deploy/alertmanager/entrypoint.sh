#!/bin/sh
# Start Alertmanager with the config rendered from deploy/alertmanager/alertmanager.yml, the
# environment and secret files (see render-config.sh and docs/alerting.md). Arguments are
# passed to Alertmanager; --config.file is set here.
#
#   Host:      ALERTMANAGER=/path/to/alertmanager deploy/alertmanager/entrypoint.sh --storage.path=DIR
#   Container: entrypoint ["/bin/sh", "/etc/alertmanager/entrypoint.sh"] in the prom/alertmanager
#              image, with this directory mounted at /etc/alertmanager.
#
# A receiver enabled without its secret stops the start with one line saying what to set.
# Re-run (restart) after changing the environment: the rendered file is not watched.
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=${INFERMON_ALERTMANAGER_RENDER_DIR:-${TMPDIR:-/tmp}/infermon-alertmanager}
"$HERE/render-config.sh" "$OUT"
exec "${ALERTMANAGER:-alertmanager}" --config.file="$OUT/alertmanager.yml" "$@"
