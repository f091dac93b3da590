# Two commands do everything on a fresh Debian machine (as root):
#   make demo   local control plane + CRDs + an example pool, left running
#   make test   lint, unit tests and end-to-end tests (control plane up and down)
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
export CARGO_TERM_COLOR ?= never
.ONESHELL:

.PHONY: test lint unit e2e demo demo-down crds

test: lint
	tests/run-all

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

crds:
	cargo run -q -p volpool-api --bin crdgen

demo:
	@mkdir -p target
	tests/cluster/up > target/demo-up.out
	kubeconfig=$$(sed -n 's/^export KUBECONFIG=//p' target/demo-up.out | tail -n 1)
	# A kubectl that matches the v1.20.2 server, kept beside the cached server binaries.
	kubectl=$${VOLPOOL_CACHE:-$${XDG_CACHE_HOME:-$$HOME/.cache}/volpool}/kubernetes-1.20.2/bin/kubectl
	"$$kubectl" --kubeconfig "$$kubeconfig" apply -f deploy/crds/
	"$$kubectl" --kubeconfig "$$kubeconfig" wait --for condition=Established --timeout=60s -f deploy/crds/
	"$$kubectl" --kubeconfig "$$kubeconfig" apply -f deploy/examples/local-pool.yaml
	"$$kubectl" --kubeconfig "$$kubeconfig" get volumepools -o wide
	echo
	echo "The demo control plane (Kubernetes v1.20.2) is running. Point kubectl at it with:"
	echo "  export KUBECONFIG=$$kubeconfig PATH=$$(dirname "$$kubectl"):\$$PATH"
	echo "Stop it with: make demo-down"

demo-down:
	tests/cluster/down
