# containerd-shim-wasmedge — see README.md. `make demo` and `make test` are the two entry points.
SHELL := /bin/bash
CARGO ?= cargo
WASM_TARGET := wasm32-wasip1
EXAMPLES := hello edge-function hostile
PREFIX ?= /usr/local

.PHONY: all setup build bundle wasm images k8s-images test test-node test-cgroup2 unit-test wasi-testsuite e2e e2e-canary demo bench bench-k8s native-bench-server soak fuzz install uninstall clean

all: build wasm images

setup:
	@bash scripts/setup.sh

# wasm-oci and the controller load no engine, but build.rs cannot spare them its link arguments
# (Cargo gives a library's unit tests only those of every binary): back to the machine's own
# loader and libraries, as any Rust binary.
SYSTEM_LINKED := wasm-oci wasm-weight-controller

build: setup
	$(CARGO) build --release --bins
	@for b in $(SYSTEM_LINKED); do \
	  patchelf --set-interpreter /lib64/ld-linux-x86-64.so.2 --remove-rpath target/release/$$b || exit 1; \
	done

# The node bundle: the shim, the config tool and every library they load (glibc included), for
# /opt/containerd-shim-wasmedge on any x86_64 Linux; target/bundle/ (README, Install).
bundle: build
	@bash scripts/bundle.sh

# Example modules, copied to target/wasm/<name>.wasm for tests, demo and bench.
wasm: setup
	@mkdir -p target/wasm
	@for ex in $(EXAMPLES); do \
	  $(CARGO) build --quiet --release --target $(WASM_TARGET) --manifest-path examples/$$ex/Cargo.toml || exit 1; \
	  cp examples/$$ex/target/$(WASM_TARGET)/release/$$ex.wasm target/wasm/$$ex.wasm; \
	done
	@echo "built: $$(ls target/wasm)"

# Native pieces of the images the project builds itself (no registry exists here).
images: target/images/pause

target/images/pause: scripts/pause/pause.c
	@mkdir -p target/images
	gcc -static -Os -Wall -Wextra -Werror -o $@ $<

# The e2e cluster's images, also the node-installer image (target/images/installer.tar).
k8s-images: bundle wasm images
	@bash scripts/k8s-images.sh target/images

unit-test: setup
	$(CARGO) test --release --lib --bins -- --skip the_wasi_testsuite_passes_in_process
	$(CARGO) test --release --lib the_wasi_testsuite_passes_in_process -- --nocapture
	$(CARGO) test --quiet --manifest-path examples/edge-sdk/Cargo.toml
	$(CARGO) test --quiet --manifest-path examples/edge-function/Cargo.toml

# Every test: the node suites, the cgroup v2 guest, then the end-to-end run on a real
# Kubernetes cluster.
test: test-node test-cgroup2 e2e

# The containerd the node suites drive (src/devnode): 2.3, the LTS (built into the cache by
# scripts/containerd-build.sh), or 1.7, Debian's. The CRI and restart suites also run on 1.7.
CONTAINERD ?= 2.3
export CONTAINERD

# Unit tests, then the integration suites against a private containerd.
test-node: bundle wasm images
	$(CARGO) test --release --lib --bins -- --skip the_wasi_testsuite_passes_in_process
	$(CARGO) test --manifest-path examples/edge-sdk/Cargo.toml
	$(CARGO) test --manifest-path examples/edge-function/Cargo.toml
	$(CARGO) test --release --lib the_wasi_testsuite_passes_in_process -- --nocapture
	$(CARGO) test --release --test wasi_testsuite -- --nocapture
	$(CARGO) test --release --test '*' -- --test-threads=2 --skip the_wasi_testsuite_passes_through_the_shim
	CONTAINERD=1.7 $(CARGO) test --release --test cri -- --test-threads=2
	CONTAINERD=1.7 $(CARGO) test --release --test reliability wasm_tasks_survive_a_containerd_restart

# The shim's cgroup v2 path: the ctr, sandbox and reliability suites against containerd 2.3 in a
# cgroup-v2-only Linux guest (QEMU/KVM, or User-mode Linux where KVM runs without hardware
# virtualization), see scripts/cgroup2-guest.sh.
test-cgroup2: bundle wasm images
	@bash scripts/cgroup2-guest.sh

# The official WASI testsuite (../shared/wasi-testsuite), in process and through the shim; each
# prints N passed, M failed.
# Both runs print SKIPPED (and why) where the suite is absent.
wasi-testsuite: build
	$(CARGO) test --release --lib the_wasi_testsuite_passes_in_process -- --nocapture
	$(CARGO) test --release --test wasi_testsuite -- --nocapture

# End to end on a real one-node Kubernetes cluster, made and removed by the run (README, E2E).
e2e: bundle wasm images
	@bash scripts/k8s-e2e.sh

# Canary controller against a running cluster: CSW_E2E_KUBECONFIG=path make e2e-canary
e2e-canary: build
	$(CARGO) test --release --test e2e_canary -- --nocapture --test-threads=1

demo: build wasm images
	@bash scripts/demo.sh

bench: build wasm images native-bench-server
	@bash scripts/bench.sh

# The throughput baseline of `make bench`: the edge function's handler in a native hyper server.
native-bench-server:
	$(CARGO) build --quiet --release --manifest-path examples/native-edge-server/Cargo.toml

# The long reliability run: 1000 create/start/stop/delete cycles with leak counts.
soak: build wasm images
	CHURN_CYCLES=1000 $(CARGO) test --release --test reliability churn -- --nocapture

# Bounded fuzzing of the annotation/policy parser and the HTTP-mode ABI (FUZZ_SECONDS each).
FUZZ_SECONDS ?= 60
fuzz: setup
	@command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked
	@rustup toolchain list | grep -q nightly || rustup toolchain install nightly --profile minimal
	cd fuzz && cargo +nightly fuzz run annotations -- -max_total_time=$(FUZZ_SECONDS) -dict=annotations.dict
	cd fuzz && cargo +nightly fuzz run edge -- -max_total_time=$(FUZZ_SECONDS)

# Pod start to Ready, wasm against runc, on a cluster of its own.
bench-k8s: build wasm images
	@K8S_BENCH_UP=1 bash scripts/k8s-bench.sh

install: bundle
	@bash scripts/install.sh install

uninstall:
	@bash scripts/install.sh uninstall

clean:
	$(CARGO) clean
	@for ex in $(EXAMPLES) edge-sdk native-edge-server; do rm -rf examples/$$ex/target; done
