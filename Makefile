# fraudstream — every entry point. The build cache lives outside the clone so a second run is fast.
SHELL := /bin/bash
export PATH := $(HOME)/.cargo/bin:/usr/local/go/bin:$(PATH)
export CARGO_TARGET_DIR ?= $(HOME)/.cache/fraudstream/target
export CARGO_TERM_COLOR ?= never
CARGO ?= cargo
# LightGBM needs CMake >= 3.28; scripts/build-deps.sh installs it here.
export CMAKE ?= $(HOME)/.cache/fraudstream/cmake/cmake/data/bin/cmake
LOCAL := deploy/local
.DEFAULT_GOAL := help

deps: ## install build prerequisites (CMake >= 3.28, libclang) if missing
	@scripts/build-deps.sh

.PHONY: help deps services cluster services-down test faults lint fmt build demo bench up down logs reset

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

services: ## install (cached) and start Kafka, the schema registry and ClickHouse on 127.0.0.1
	@$(LOCAL)/up.sh

cluster: services ## start the multi-node services too: 3 Kafka nodes (RF=3, min.insync.replicas=2), ZooKeeper, 2 ClickHouse replicas
	@$(LOCAL)/cluster.sh up

services-down: ## stop the local services and the cluster started by `make services` / `make cluster`
	@$(LOCAL)/down.sh

build: deps ## build every binary (release)
	$(CARGO) build --release --workspace

# One profile for everything (release): tests, demo and bench share one build of the dependencies.
# TEST_BUDGET_MIN bounds a run without a terminal (CI; a cold run takes ~50 min on 2 cores): a phase
# that hangs is stopped, with its process group, when the budget is spent, and named, rather than
# the CI job ending silently at its limit. At a terminal Ctrl-C does that, so nothing is bounded
# (timeout's own process group would not get the Ctrl-C).
TEST_BUDGET_MIN ?= 80
test: deps services cluster ## lint (fmt + clippy), every unit and integration test, the short fault suite, the compose services run natively, the pipeline over TLS and passwords
	@mkdir -p $(CARGO_TARGET_DIR); start=$$(date +%s); deadline=$$((start + $(TEST_BUDGET_MIN) * 60)); \
	bounded() { [ -t 0 ] && { "$$@"; return; }; local left=$$((deadline - $$(date +%s))); [ $$left -gt 60 ] || left=60; timeout -k 30 $$left "$$@"; local rc=$$?; \
	  [ $$rc -ne 124 ] && [ $$rc -ne 137 ] || echo "make test: '$$*' was stopped when the $(TEST_BUDGET_MIN)-minute budget ran out (TEST_BUDGET_MIN); something in it hung" >&2; return $$rc; }; \
	bounded $(MAKE) --no-print-directory lint 2>&1 | tee $(CARGO_TARGET_DIR)/lint.log; lrc=$${PIPESTATUS[0]}; \
	bounded $(CARGO) test --release --workspace --no-fail-fast 2>&1 | tee $(CARGO_TARGET_DIR)/test.log; rc=$${PIPESTATUS[0]}; \
	FAULTS_N=$${FAULTS_N:-30000} FAULTS_OUT=$(CARGO_TARGET_DIR)/faults-short.md bounded scripts/faults.sh 2>&1 | tee -a $(CARGO_TARGET_DIR)/test.log; frc=$${PIPESTATUS[0]}; \
	bounded scripts/compose-run.py 2>&1 | tee -a $(CARGO_TARGET_DIR)/test.log; crc=$${PIPESTATUS[0]}; \
	bounded scripts/secure-run.py 2>&1 | tee -a $(CARGO_TARGET_DIR)/test.log; src=$${PIPESTATUS[0]}; \
	passed=$$(grep -Eo '[0-9]+ passed' $(CARGO_TARGET_DIR)/test.log | awk '{s+=$$1} END {print s+0}'); \
	failed=$$(grep -Eo '[0-9]+ failed' $(CARGO_TARGET_DIR)/test.log | awk '{s+=$$1} END {print s+0}'); \
	deploy/local/kafka-topics.sh --delete --topic '.*_[0-9]+_[0-9]+_[0-9]+.*' >/dev/null 2>&1 || true; \
	(. deploy/local/env.sh && use_services cluster && deploy/local/kafka-topics.sh --delete --topic '.*_[0-9]+_[0-9]+_[0-9]+.*' >/dev/null 2>&1) || true; \
	(. deploy/local/env.sh && ch="http://127.0.0.1:$$CLICKHOUSE_HTTP_PORT/" && \
	  for db in $$(curl -sf "$$ch" --data-binary 'SHOW DATABASES' | grep -E '^[a-z0-9_]+_[0-9]+_[0-9]+_[0-9]+$$'); do \
	    curl -sf "$$ch" --data-binary "DROP DATABASE IF EXISTS $$db" >/dev/null; done) || true; \
	echo "tests took $$(( $$(date +%s) - start ))s (log: $(CARGO_TARGET_DIR)/test.log)"; \
	echo "fraudstream: $$passed passed, $$failed failed; lint rc=$$lrc; fault suite rc=$$frc; compose run rc=$$crc; secure run rc=$$src"; \
	[ $$lrc -eq 0 ] && [ $$rc -eq 0 ] && [ $$frc -eq 0 ] && [ $$crc -eq 0 ] && [ $$src -eq 0 ]

faults: deps services ## the fault suite: 18 scenarios (3 on the cluster), 200k transactions each (bench/results/faults.md)
	@scripts/faults.sh

lint: deps ## rustfmt and clippy, warnings are errors
	$(CARGO) fmt --all --check
	$(CARGO) clippy --release --workspace --all-targets -- -D warnings

fmt: ## format the code
	$(CARGO) fmt --all

demo: deps services ## the pipeline on the local services, then a summary (DEMO_ARGS=--keep leaves it running)
	@scripts/demo.sh $(DEMO_ARGS)

bench: deps services ## throughput and latency tables (bench/results/latest.md, tls.md, cluster.md)
	@scripts/bench.sh

up: ## docker compose: the whole stack in containers (needs a Docker engine)
	docker compose up -d --build

down: ## docker compose: stop the stack
	docker compose down

logs: ## docker compose: follow the services' logs
	docker compose logs -f --tail=100

reset: ## docker compose: truncate the tables, recreate the topics, reset the trainer (the models are re-bootstrapped)
	docker compose stop producer scorer sink trainer
	docker compose exec -T clickhouse sh -c 'for t in transactions predictions labels models; do clickhouse-client --user "$$CLICKHOUSE_USER" --password "$$CLICKHOUSE_PASSWORD" -q "TRUNCATE TABLE IF EXISTS fraudstream.$$t"; done'
	-docker compose exec -T redpanda rpk topic delete transactions labels predictions fraud-alerts transactions-dlq predictions-dlq models
	docker compose run --rm --no-deps --entrypoint rm init -f /data/trainer-state.json /data/model-v1.txt
	docker compose up -d
