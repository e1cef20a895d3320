# Gregor: the two commands a new user needs are `make run` and `make test`.
CARGO ?= cargo
PYTHON ?= python3

.PHONY: run build test test-deps test-rust test-e2e lint fmt

## Start the broker on its embedded default: data in ./data, listener 127.0.0.1:9092, all cores.
run:
	$(CARGO) run --release -p gregor-tools -- broker

build:
	$(CARGO) build -p gregor-tools

## Install what the tests need (kcat, Python clients), then run every test.
test: test-deps lint test-rust test-e2e

test-deps:
	bash tests/install-deps.sh

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

test-rust:
	$(CARGO) test --workspace

test-e2e: build
	cd tests && $(PYTHON) -m pytest

fmt:
	$(CARGO) fmt --all

-include bench/bench.mk
