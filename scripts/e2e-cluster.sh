#!/usr/bin/env bash
# Runs the end-to-end suite against the cluster in SECRETSYNC_E2E_KUBECONFIG (instead of
# the fake API server) and prints how many tests ran, passed and skipped, and why.
#
#   SECRETSYNC_E2E_KUBECONFIG=~/.kube/config make test-e2e-cluster
#
# The kubeconfig needs cluster-admin (tests create namespaces, CRDs, RBAC). OpenBao and
# moto run locally as in `make test`; for the Vault Kubernetes-auth test the local OpenBao
# must reach the cluster's API server at the kubeconfig's address. The operator itself runs
# as a local process with a token of the ServiceAccount the chart's RBAC is bound to.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cargo=${CARGO:-cargo}

if [ -z "${SECRETSYNC_E2E_KUBECONFIG:-}" ] || [ ! -r "$SECRETSYNC_E2E_KUBECONFIG" ]; then
  echo "e2e-cluster: set SECRETSYNC_E2E_KUBECONFIG to a readable kubeconfig of the cluster" >&2
  exit 2
fi

work=$(mktemp -d -t secretsync-e2e-cluster.XXXXXX)
trap 'rm -rf "$work"' EXIT
export SECRETSYNC_E2E_SKIP_REPORT="$work/skipped"
: > "$SECRETSYNC_E2E_SKIP_REPORT"

set +e
"$root/scripts/test-servers.sh" "$cargo" test -p secretsync-e2e --no-fail-fast 2>&1 \
  | tee "$work/log"
status=${PIPESTATUS[0]}
set -e

passed=0; failed=0
while read -r p f; do
  passed=$((passed + p)); failed=$((failed + f))
done < <(sed -n 's/^test result: [A-Za-z]*\. \([0-9]*\) passed; \([0-9]*\) failed;.*/\1 \2/p' "$work/log")
whole=$(grep -c $'^test\t' "$SECRETSYNC_E2E_SKIP_REPORT" || true)
partial=$(grep -c $'^assertions\t' "$SECRETSYNC_E2E_SKIP_REPORT" || true)

echo
echo "== e2e against $SECRETSYNC_E2E_KUBECONFIG"
echo "ran:     $((passed + failed)) tests"
echo "passed:  $((passed - whole)) ($partial fake-only assertion groups skipped inside them)"
echo "skipped: $whole tests (they need the fake API server)"
echo "failed:  $failed"
if [ -s "$SECRETSYNC_E2E_SKIP_REPORT" ]; then
  echo "skipped, and why:"
  sort -u "$SECRETSYNC_E2E_SKIP_REPORT" | awk -F'\t' '{printf "  %-11s %s: %s\n", $1, $2, $3}'
fi
exit "$status"
