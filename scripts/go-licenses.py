#!/usr/bin/env python3
"""List the licenses of the Go modules compiled into the stack's binaries; fail on copyleft.

    scripts/go-licenses.py --out REPORT.tsv NAME=BINARY... [--main MODULE=VERSION ...]
    scripts/go-licenses.py --self-test      the classifier on excerpts of known license texts

The module list comes from each binary's embedded build info (`go version -m`), i.e. exactly
the modules linked into what scripts/build-stack.sh built -- not `go list -m all`, which also
names test-only and unused requirements. Each module's source is looked up in the Go module
cache (downloaded with `go mod download` if missing) and its license is detected from the
license files at the module root by a deliberately small classifier: key phrases of the
well-known license texts. It never guesses: a file it does not recognise is reported as
"unknown" for a person to review.

Policy (see docs/reliability.md, "Supply chain"):
  - GPL, AGPL, SSPL: fail. Go links statically, so any of these would cover the binary.
  - LGPL: fail too. Its relinking terms are hard to meet for a static Go binary.
  - MPL-2.0: allowed. It is weak, file-level copyleft: using unmodified MPL files in a larger
    work puts no terms on the rest (obligations arise only when the MPL files themselves are
    modified and distributed). hashicorp's modules are the usual case.
  - unknown: printed for review, not a failure (an honest "could not tell" must not be
    silently counted as permissive, nor stop CI on a formatting quirk).
Exit status: 0 clean, 1 copyleft found, 2 usage or environment error.
"""
import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

# Strong copyleft (and LGPL, see above): any of these in a shipped module fails the check.
DENY = {"GPL", "AGPL", "LGPL", "SSPL"}

# (license id, test(raw, norm)) in order: the GNU family first, because the AGPL and LGPL texts
# name the GPL too. GNU titles are matched case-sensitively as the license texts print them, so
# prose that merely mentions "the GNU General Public License" (the MPL-2.0 text does) does not
# match. The permissive texts are matched whitespace-normalised and lower-cased (`norm`),
# because they are often re-wrapped.
RULES = [
    ("AGPL", lambda t, n: "GNU AFFERO GENERAL PUBLIC LICENSE" in t),
    ("LGPL", lambda t, n: "GNU LESSER GENERAL PUBLIC LICENSE" in t or "GNU LIBRARY GENERAL PUBLIC LICENSE" in t),
    ("GPL", lambda t, n: "GNU GENERAL PUBLIC LICENSE" in t),
    ("SSPL", lambda t, n: "server side public license" in n),
    ("MPL-2.0", lambda t, n: re.search(r"mozilla public license,? version 2\.0", n) is not None),
    ("Apache-2.0", lambda t, n: re.search(r"apache license,? version 2\.0", n) is not None
     or ("apache license" in n and "version 2.0, january 2004" in n)),
    ("MIT", lambda t, n: "permission is hereby granted, free of charge, to any person obtaining a copy" in n),
    # BSD-3 = BSD-2 + the no-endorsement clause.
    ("BSD-3-Clause", lambda t, n: "redistribution and use in source and binary forms" in n
     and re.search(r"(neither the name|names of its contributors|name of the copyright holder)"
                   r".{0,200}(endorse|promote)", n) is not None),
    ("BSD-2-Clause", lambda t, n: "redistribution and use in source and binary forms" in n),
    ("ISC", lambda t, n: "permission to use, copy, modify, and/or distribute this software for any purpose" in n
     and "provided that the above copyright notice and this permission notice appear in all copies" in n),
    ("Unlicense", lambda t, n: "this is free and unencumbered software released into the public domain" in n),
    ("CC0-1.0", lambda t, n: "cc0 1.0 universal" in n),
    # Documentation licenses some modules carry next to the code's (e.g. LICENSE.docs).
    ("CC-BY-SA-4.0", lambda t, n: "creative commons attribution-sharealike 4.0" in n),
    ("CC-BY-4.0", lambda t, n: "creative commons attribution 4.0" in n),
]

# LICENSE, LICENSE.md, LICENSE-APACHE, COPYING.txt, ... but not source files such as license.go.
LICENSE_FILE = re.compile(r"^(LICEN[CS]E|COPYING|UNLICENSE)([-._][A-Za-z0-9.-]*)?$", re.IGNORECASE)
SOURCE_SUFFIX = re.compile(r"\.(go|s|c|h|py|sh|json|ya?ml)$", re.IGNORECASE)


def classify(text):
    """Every license id whose key phrases the text contains (a file may hold several)."""
    norm = re.sub(r"\s+", " ", text).lower()
    found = []
    for lic, test in RULES:
        if test(text, norm):
            # BSD-2's phrase is part of BSD-3; report only the more specific one.
            if lic == "BSD-2-Clause" and "BSD-3-Clause" in found:
                continue
            found.append(lic)
    return found


# Excerpts of the real texts (their distinguishing lines, as printed) and what each must give.
# The MPL-2.0 excerpt names the GPL in prose and must not count as GPL.
SELF_TEST = [
    ("GNU GENERAL PUBLIC LICENSE\n                       Version 3, 29 June 2007", ["GPL"]),
    ("GNU GENERAL PUBLIC LICENSE\n                       Version 2, June 1991", ["GPL"]),
    ("GNU AFFERO GENERAL PUBLIC LICENSE\n Version 3, 19 November 2007\n"
     "13. Remote Network Interaction; Use with the GNU General Public License.", ["AGPL"]),
    ("GNU LESSER GENERAL PUBLIC LICENSE\n Version 3, 29 June 2007\n This version of the GNU "
     "Lesser General Public License incorporates the terms and conditions of version 3 of the "
     "GNU General Public License", ["LGPL"]),
    ("Server Side Public License\nVERSION 1, OCTOBER 16, 2018", ["SSPL"]),
    ("Mozilla Public License Version 2.0\n==================================\n"
     "1.12. \"Secondary License\" means either the GNU General Public License, Version 2.0, "
     "the GNU Lesser General Public License, Version 2.1", ["MPL-2.0"]),
    ("                                 Apache License\n                           Version 2.0, "
     "January 2004\n                        http://www.apache.org/licenses/", ["Apache-2.0"]),
    ("Permission is hereby granted, free of charge, to any person obtaining a copy\nof this "
     "software and associated documentation files (the \"Software\"), to deal", ["MIT"]),
    ("Redistribution and use in source and binary forms, with or without\nmodification, are "
     "permitted provided that the following conditions are met:\n * Neither the name of Google "
     "Inc. nor the names of its\ncontributors may be used to endorse or promote products",
     ["BSD-3-Clause"]),
    ("Redistribution and use in source and binary forms, with or without\nmodification, are "
     "permitted provided that the following conditions are met:\n1. Redistributions of source "
     "code must retain the above copyright", ["BSD-2-Clause"]),
    ("Permission to use, copy, modify, and/or distribute this software for any\npurpose with or "
     "without fee is hereby granted, provided that the above\ncopyright notice and this "
     "permission notice appear in all copies.", ["ISC"]),
    ("All rights reserved. Do not copy.", []),
]


def self_test():
    bad = 0
    for text, want in SELF_TEST:
        got = classify(text)
        if got != want:
            bad += 1
            print(f"self-test: {text.split(chr(10))[0].strip()!r}: got {got}, want {want}", file=sys.stderr)
    denied = [w for _, w in SELF_TEST if set(w) & DENY]
    if len(denied) != 5:
        bad += 1
        print(f"self-test: {len(denied)} excerpts denied, want 5 (GPL-2, GPL-3, AGPL, LGPL, SSPL)", file=sys.stderr)
    print(f"license classifier self-test: {len(SELF_TEST) - bad}/{len(SELF_TEST)} ok")
    return 1 if bad else 0


def escape_module_path(path):
    # The module cache spells upper-case letters as '!' + lower case.
    return re.sub(r"[A-Z]", lambda m: "!" + m.group(0).lower(), path)


def module_dir(gomodcache, path, version):
    d = Path(gomodcache) / f"{escape_module_path(path)}@{version}"
    if d.is_dir():
        return d
    out = subprocess.run(["go", "mod", "download", "-json", f"{path}@{version}"],
                         capture_output=True, text=True)
    try:
        info = json.loads(out.stdout)
    except json.JSONDecodeError:
        return None
    dirname = info.get("Dir")
    return Path(dirname) if dirname and Path(dirname).is_dir() else None


def build_info_modules(binary):
    """(path, version) of every module linked into a Go binary, replacements applied."""
    out = subprocess.run(["go", "version", "-m", binary], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"go-licenses: go version -m {binary}: {out.stderr.strip()}")
    mods, main = [], None
    for line in out.stdout.splitlines():
        f = line.strip().split("\t")
        if f[0] == "mod" and len(f) >= 3:
            main = (f[1], f[2])
        elif f[0] == "dep" and len(f) >= 3:
            mods.append((f[1], f[2]))
        elif f[0] == "=>" and len(f) >= 3 and mods:
            # The line after a dep: the module it was replaced by is what was compiled.
            mods[-1] = (f[1], f[2])
    return main, mods


def module_licenses(d):
    files = sorted(p for p in d.iterdir() if p.is_file() and LICENSE_FILE.match(p.name)
                   and not SOURCE_SUFFIX.search(p.name))
    lics, names = [], []
    for p in files:
        try:
            text = p.read_text(errors="replace")
        except OSError:
            continue
        names.append(p.name)
        for lic in classify(text) or ["unknown"]:
            if lic not in lics:
                lics.append(lic)
    return lics or ["unknown"], names


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--self-test", action="store_true", help="check the classifier and exit")
    ap.add_argument("--out", help="TSV report to write")
    ap.add_argument("--main", action="append", default=[], metavar="MODULE=VERSION",
                    help="version of a main module built from a source copy (shown as (devel))")
    ap.add_argument("binaries", nargs="*", metavar="NAME=BINARY")
    args = ap.parse_args()
    if args.self_test:
        return self_test()
    if not args.out or not args.binaries:
        ap.error("--out and at least one NAME=BINARY are required")

    gomodcache = subprocess.run(["go", "env", "GOMODCACHE"], capture_output=True, text=True).stdout.strip()
    if not gomodcache:
        print("go-licenses: cannot read go env GOMODCACHE", file=sys.stderr)
        return 2
    mains = dict(m.split("=", 1) for m in args.main)

    # module@version -> set of binaries that link it
    used = {}
    for spec in args.binaries:
        name, _, binary = spec.partition("=")
        if not os.path.isfile(binary):
            print(f"go-licenses: {binary}: no such binary (run scripts/build-stack.sh)", file=sys.stderr)
            return 2
        main_mod, deps = build_info_modules(binary)
        if main_mod and main_mod[1] == "(devel)":
            # A source copy (prometheus, alertmanager, jaeger): its own license counts too.
            # The collector's main module is generated by the builder from our manifest.
            if main_mod[0] in mains:
                deps.append((main_mod[0], mains[main_mod[0]]))
        elif main_mod:
            # Built with `go install module/cmd@version` (VictoriaMetrics): the build info names
            # the main module's version, and its own license counts like any dependency's.
            deps.append(main_mod)
        for mod in deps:
            used.setdefault(mod, set()).add(name)

    rows, denied, unknown, missing = [], [], [], []
    for (path, version) in sorted(used):
        d = module_dir(gomodcache, path, version)
        if d is None:
            lics, names = ["missing"], []
            missing.append(f"{path}@{version}")
        else:
            lics, names = module_licenses(d)
        rows.append((path, version, "+".join(lics), ",".join(names) or "-", ",".join(sorted(used[(path, version)]))))
        bad = [l for l in lics if l in DENY]
        if bad:
            denied.append(f"{path}@{version}: {' + '.join(lics)} ({', '.join(names)})")
        elif "unknown" in lics:
            unknown.append(f"{path}@{version}: {', '.join(names) or 'no license file at the module root'}")

    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w") as f:
        f.write("module\tversion\tlicense\tfiles\tbinaries\n")
        for r in rows:
            f.write("\t".join(r) + "\n")

    counts = {}
    for r in rows:
        for lic in r[2].split("+"):
            counts[lic] = counts.get(lic, 0) + 1
    summary = ", ".join(f"{k} {v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1]))
    print(f"go modules: {len(rows)} linked into {len(args.binaries)} binaries; licenses: {summary}")
    print(f"report: {args.out}")
    for u in unknown:
        print(f"review (license not recognised): {u}")
    for m in missing:
        print(f"error: source not found in the module cache: {m}", file=sys.stderr)
    for d in denied:
        print(f"DENIED (copyleft in a statically linked binary): {d}", file=sys.stderr)
    if missing:
        return 2
    return 1 if denied else 0


if __name__ == "__main__":
    sys.exit(main())
