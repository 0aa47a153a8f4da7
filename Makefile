# secretsync — developer entry points. `make test` is the one test command.
CARGO ?= cargo
BIN := target/debug/secretsync

.PHONY: build test test-e2e-cluster lint fmt crds demo clean image bench

build:
	$(CARGO) build --workspace --all-targets

## Runs every test: unit, integration against real OpenBao and moto servers (installed
## into .venv on first use and started on loopback), CRD and example checks, end-to-end.
## The benchmark crate is left out (`make bench` builds it; `make lint` checks it).
test:
	scripts/test-servers.sh $(CARGO) test --workspace --exclude secretsync-bench --all-targets --no-fail-fast

## Runs the end-to-end suite against a real cluster (kubeconfig in SECRETSYNC_E2E_KUBECONFIG)
## and prints how many tests ran, passed and skipped, and why.
test-e2e-cluster:
	CARGO=$(CARGO) scripts/e2e-cluster.sh

## Formatting, clippy with the workspace lints ([workspace.lints], clippy.toml), and
## cargo-deny's license, ban and source checks (deny.toml; installed on first use, which
## takes a few minutes).
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	command -v cargo-deny >/dev/null 2>&1 || $(CARGO) install --locked cargo-deny
	$(CARGO) deny check licenses bans sources

fmt:
	$(CARGO) fmt --all

## Regenerates crds/ from the Rust types.
crds:
	$(CARGO) run -q -p secretsync -- crds > crds/secretsync-crds.yaml
	cp crds/secretsync-crds.yaml charts/secretsync/files/secretsync-crds.yaml

## Renders the quickstart's Secrets locally (file backend, no cluster needed).
demo:
	$(CARGO) run -q -p secretsync -- render -f examples/quickstart/ --file-root examples

## Benchmarks the release binary against the fake API server and a real OpenBao (see
## BENCHMARKS.md; about 21 minutes at full scale once built). The operator is built on
## its own, with exactly the features users get, not unified with the bench's
## (crates/secretsync-bench, on top of the testkit). Quick run:
##   make bench BENCH_ARGS="--scale 0.1 --steady 1m --nocache-steady 1m --shared-steady 1m --settle 10s"
BENCH_ARGS ?=
bench:
	$(CARGO) build --release -p secretsync
	$(CARGO) build --release -p secretsync-bench
	scripts/test-servers.sh target/release/secretsync-bench $(BENCH_ARGS)

clean:
	$(CARGO) clean

IMAGE ?= secretsync:dev
## Builds the container image (needs a Docker engine).
image:
	docker build -t $(IMAGE) .
