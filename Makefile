# containerd-shim-wasmedge — see README.md. `make demo` and `make test` are the two entry points.
SHELL := /bin/bash
CARGO ?= cargo
WASM_TARGET := wasm32-wasip1
EXAMPLES := hello edge-function hostile
PREFIX ?= /usr/local

.PHONY: all setup build wasm images test unit-test e2e-canary demo bench install uninstall clean

all: build wasm images

setup:
	@bash scripts/setup.sh

build: setup
	$(CARGO) build --release --bins

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

unit-test: setup
	$(CARGO) test --release --lib --bins
	$(CARGO) test --quiet --manifest-path examples/edge-function/Cargo.toml

# Every test: unit tests, then the integration suites against a private containerd.
test: build wasm images
	$(CARGO) test --release --lib --bins
	$(CARGO) test --manifest-path examples/edge-function/Cargo.toml
	$(CARGO) test --release --test '*' -- --test-threads=2

# Canary controller against a running cluster: CSW_E2E_KUBECONFIG=path make e2e-canary
e2e-canary: build
	$(CARGO) test --release --test e2e_canary -- --nocapture --test-threads=1

demo: build wasm images
	@bash scripts/demo.sh

bench: build wasm images
	@bash scripts/bench.sh

install: build
	@bash scripts/install.sh install

uninstall:
	@bash scripts/install.sh uninstall

clean:
	$(CARGO) clean
	@for ex in $(EXAMPLES); do rm -rf examples/$$ex/target; done
