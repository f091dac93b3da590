# Two commands do everything on a fresh Debian machine (as root):
#   make demo   volpool end to end on this machine (Ctrl-C or `make demo-down` stops it)
#   make test   lint, unit tests and end-to-end tests (control plane up and down)
# Parts of it: `make lint`; `make unit` (unit tests only, no cluster); `make e2e` (every
# test against a local control plane, as `make test` without the lint).
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
export CARGO_TERM_COLOR ?= never
.ONESHELL:

.PHONY: test lint unit e2e demo demo-down crds

test: lint
	tests/run-all

unit:
	cargo nextest --version >/dev/null 2>&1 || cargo install --locked cargo-nextest
	cargo nextest run --workspace --lib --bins

e2e:
	tests/run-all

lint:
	cargo fmt --all -- --check
	python3 scripts/check-module-cycles
	cargo clippy --workspace --all-targets -- -D warnings

# Regenerates deploy/crds/ from the Rust types and copies them (with the alert rules and the
# dashboards) into the Helm chart.
crds:
	cargo run -q -p volpool-api --bin crdgen
	charts/sync

# The whole system on this machine: control plane, 3 real nodes (kubelet, containerd, kube-proxy)
# with a disk each, volpool installed with deploy/overlays/dev/, the example local pool, a
# StatefulSet writing to its volumes, Prometheus with the alert rules. Foreground: Ctrl-C stops
# it all. `make demo DETACH=1` returns and leaves it running.
demo:
	VOLPOOL_DEMO_DETACH=$(DETACH) demo/up

demo-down:
	demo/down
