#!/usr/bin/env python3
"""Renders or lints a Helm chart with Helm's own engine (the helm-python-sdk package).

    helm-chart.py render CHART_DIR VALUES_JSON RELEASE NAMESPACE
        prints {"manifests": {template path: rendered text}} as JSON
    helm-chart.py lint CHART_DIR VALUES_JSON
        prints Helm's lint result as JSON

The test suite calls this with the Python of the test venv (scripts/test-servers.sh
installs helm-python-sdk there and exports SECRETSYNC_TEST_PYTHON).
"""
import json
import sys

import helm_python


def main(argv):
    if len(argv) >= 5 and argv[1] == "render":
        chart = helm_python.Chart.load(argv[2])
        values = json.loads(argv[3])
        manifests = chart.render(values, name=argv[4], namespace=argv[5], is_install=True)
        json.dump({"manifests": manifests}, sys.stdout)
        return 0
    if len(argv) == 4 and argv[1] == "lint":
        json.dump(helm_python.lint(argv[2], json.loads(argv[3])), sys.stdout)
        return 0
    sys.stderr.write(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
