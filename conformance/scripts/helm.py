#!/usr/bin/env python3
"""Renders and lints chart/ with Helm v4's SDK (helm-python-sdk, no helm binary).

  helm.py render CHART RELEASE NAMESPACE [VALUES_JSON]  -> the manifests as one YAML stream,
                                                          ordered by template path
  helm.py lint CHART [VALUES_JSON]                      -> helm lint --strict's report as JSON;
                                                          exit 1 on any warning or error
"""
import json
import re
import sys

import helm_python
from helm_python import chart as helm_chart


def render(path, release, namespace, values):
    chart = helm_python.Chart.load(path)
    chart.validate_schema(values)
    manifests = chart.render(values, name=release, namespace=namespace, revision=1, is_install=True)
    out = []
    for template in sorted(manifests):
        if template.endswith("NOTES.txt"):
            continue
        for doc in re.split(r"^---\s*$", manifests[template], flags=re.M):
            lines = [l for l in doc.strip().splitlines()]
            if not any(l.strip() and not l.lstrip().startswith("#") for l in lines):
                continue
            out.append(f"# Source: {template}\n" + "\n".join(lines) + "\n")
    sys.stdout.write("---\n".join(out))


def lint(path, values):
    report = helm_chart.lint(path, values, strict=True, kube_version="v1.20.2")
    print(json.dumps(report, indent=2))
    # Severity 2 = warning, 3 = error; strict lint fails on either.
    bad = [m for m in report.get("messages", []) if m.get("severity", 0) >= 2]
    return 1 if bad or report.get("errors") else 0


def main(argv):
    if len(argv) >= 4 and argv[0] == "render":
        values = json.loads(argv[4]) if len(argv) > 4 else None
        render(argv[1], argv[2], argv[3], values)
        return 0
    if len(argv) >= 2 and argv[0] == "lint":
        values = json.loads(argv[2]) if len(argv) > 2 else None
        return lint(argv[1], values)
    sys.stderr.write(__doc__)
    return 2


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except helm_python.HelmError as e:
        sys.stderr.write(f"helm: {e}\n")
        sys.exit(1)
