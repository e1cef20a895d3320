# Gregor: the two commands a new user needs are `make run` and `make test`.
CARGO ?= cargo
PYTHON ?= python3

.PHONY: run build test test-deps test-rust test-e2e test-fuzz lint fmt

## Start the broker on its embedded default: data in ./data, listener 127.0.0.1:9092, all cores.
run:
	$(CARGO) run --release -p gregor-tools -- broker

build:
	$(CARGO) build -p gregor-tools

## Install what the tests need (kcat, Python clients, kafkajs, cargo-fuzz), then run every test
## (the end-to-end suite last, so its pytest summary closes the output).
test: test-deps lint test-rust test-fuzz test-e2e

test-deps:
	bash tests/install-deps.sh

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

test-rust:
	$(CARGO) test --workspace

test-e2e: build
	cd tests && $(PYTHON) -m pytest

## Replays the stored fuzz corpus, then fuzzes each target for FUZZ_SECONDS (default 60).
FUZZ_SECONDS ?= 60
test-fuzz:
	bash fuzz/run.sh --replay
	FUZZ_SECONDS=$(FUZZ_SECONDS) bash fuzz/run.sh

fmt:
	$(CARGO) fmt --all

-include bench/bench.mk
-include perf.mk
