#!/usr/bin/env python3
"""Convert the promtool rule unit tests to vmalert-tool's format, for the VictoriaMetrics path.

    scripts/vmalert-tool-tests.py OUT_DIR [TEST_FILE...]   (default: deploy/prometheus/tests/*.yml)

The promtool tests in deploy/prometheus/tests/ stay the source of truth; this writes converted
copies to OUT_DIR for `vmalert-tool unittest --disableAlertgroupLabel --files OUT_DIR/*.yml`
(scripts/check-alerting.sh runs both). The conversion is mechanical:

  promql_expr_test -> metricsql_expr_test   (vmalert-tool's name for the same section)
  fuzzy_compare    -> dropped               (vmalert-tool has no such option; compares exactly)
  rule_files       -> absolute paths        (so OUT_DIR can be anywhere)

plus the adjustments listed, each with its reason, in
deploy/victoriametrics/vmalert-tool-differences.yml (cases where MetricsQL or vmalert-tool
give a different result by design). Every listed adjustment must match exactly one test case,
or this exits non-zero: the list cannot go stale silently. Prints what it adjusted.
"""

import os
import re
import sys

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.join(ROOT, "deploy/prometheus/tests")
DIFFERENCES = os.path.join(ROOT, "deploy/victoriametrics/vmalert-tool-differences.yml")


def with_name(labels, name):
    """`{a="b"}` or `old{a="b"}` -> `name{a="b"}`."""
    brace = labels.find("{")
    return name + (labels[brace:] if brace >= 0 else "{}")


def main(argv):
    if len(argv) < 2 or argv[1] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if len(argv) >= 2 else 2
    out_dir = argv[1]
    files = argv[2:] or sorted(
        os.path.join(TESTS, f) for f in os.listdir(TESTS) if f.endswith(".yml")
    )
    differences = yaml.safe_load(open(DIFFERENCES))["differences"]
    used = [0] * len(differences)
    os.makedirs(out_dir, exist_ok=True)
    for path in files:
        name = os.path.basename(path)
        doc = yaml.safe_load(open(path))
        doc.pop("fuzzy_compare", None)
        doc["rule_files"] = [
            os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(path)), r))
            for r in doc.get("rule_files") or []
        ]
        for group in doc.get("tests") or []:
            if "promql_expr_test" in group:
                group["metricsql_expr_test"] = group.pop("promql_expr_test")
            for section, key in (("alert_rule_test", "alertname"), ("metricsql_expr_test", "expr")):
                kept = []
                for case in group.get(section) or []:
                    skip = False
                    for i, d in enumerate(differences):
                        if (
                            d["file"] == name
                            and d["group"] == group.get("name")
                            and d.get(key) is not None
                            and d[key].strip() == str(case.get(key, "")).strip()
                            and str(d["eval_time"]) == str(case.get("eval_time"))
                        ):
                            used[i] += 1
                            print(f"{name}: {group['name']}: {d[key]} @ {d['eval_time']}: ", end="")
                            if d.get("skip"):
                                skip = True
                                print("left out")
                            for s in case.get("exp_samples") or []:
                                if "expect_name" in d:
                                    s["labels"] = with_name(s.get("labels", ""), d["expect_name"])
                                if "add_to_values" in d:
                                    s["value"] = s["value"] + d["add_to_values"]
                            if not d.get("skip"):
                                acts = [a for a in ("expect_name", "add_to_values") if a in d]
                                print("adjusted (" + ", ".join(acts) + ")")
                    if not skip:
                        kept.append(case)
                if section in group:
                    group[section] = kept
        with open(os.path.join(out_dir, name), "w") as f:
            yaml.safe_dump(doc, f, sort_keys=False, width=1000)
    stale = [d for d, n in zip(differences, used) if n != 1]
    for d in stale:
        what = d.get("alertname") or d.get("expr")
        print(
            f"error: {DIFFERENCES}: {d['file']} / {d['group']} / {what} @ {d['eval_time']} "
            "matches no test case (or more than one): update the list",
            file=sys.stderr,
        )
    if any(not re.fullmatch(r"[^\n]+", str(d.get("reason", ""))) for d in differences):
        print(f"error: {DIFFERENCES}: every entry needs a one-paragraph reason", file=sys.stderr)
        return 1
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
