# `make bench`: build release, start a broker on a free loopback port with a temporary data
# directory, run the standard load suite against it (disk, produce 1KB acks=1, produce 100B,
# produce acks=all, consume, e2e at a target rate with --verify), print a table, stop the broker.
# Included from the top-level Makefile. Override e.g. BENCH_MESSAGES=500000 BENCH_E2E_RATE=50000.

BENCH_CARGO_TARGET_DIR ?= $(if $(CARGO_TARGET_DIR),$(CARGO_TARGET_DIR),$(CURDIR)/target)
BENCH_GREGOR := $(BENCH_CARGO_TARGET_DIR)/release/gregor
BENCH_MESSAGES ?= 500000
BENCH_E2E_RATE ?= 20000
BENCH_E2E_SECS ?= 10
BENCH_DISK_MB ?= 512
# A file system for the broker's data: defaults to a temporary directory under /tmp.
BENCH_DIR_PARENT ?= /tmp

.PHONY: bench
bench:
	CARGO_TARGET_DIR=$(BENCH_CARGO_TARGET_DIR) cargo build --release -p gregor-tools
	@set -e; \
	dir=$$(mktemp -d $(BENCH_DIR_PARENT)/gregor-bench.XXXXXX); \
	port=$$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'); \
	$(BENCH_GREGOR) broker --data-dir $$dir/data --listen 127.0.0.1:$$port > $$dir/broker.log 2>&1 & \
	pid=$$!; \
	trap 'kill $$pid 2>/dev/null; wait $$pid 2>/dev/null; rm -rf '"$$dir" EXIT INT TERM; \
	for i in $$(seq 1 50); do \
		if $(BENCH_GREGOR) topics --bootstrap 127.0.0.1:$$port list > /dev/null 2>&1; then break; fi; \
		if ! kill -0 $$pid 2>/dev/null; then echo "broker failed to start:"; cat $$dir/broker.log; exit 1; fi; \
		sleep 0.2; \
	done; \
	echo "broker pid $$pid on 127.0.0.1:$$port, data in $$dir/data"; \
	$(BENCH_GREGOR) bench suite --bootstrap 127.0.0.1:$$port --data-dir $$dir/data \
		--messages $(BENCH_MESSAGES) --e2e-rate $(BENCH_E2E_RATE) --e2e-secs $(BENCH_E2E_SECS) \
		--disk-mb $(BENCH_DISK_MB)
