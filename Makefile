# Tessera — GPU placement for Kubernetes. `make help` lists the targets.

SHELL := /usr/bin/env bash -o pipefail
.DEFAULT_GOAL := help

GO           ?= go
BIN          := $(CURDIR)/bin
VERSION      ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo v0.0.0-dev)
K8S_VERSION  := v1.36.5
GOLANGCI_VERSION := v2.15.0
# go-nvml's cgo preamble declares many functions NVML has deprecated; the
# warnings say nothing about our code.
export CGO_CFLAGS ?= -O2 -g -Wno-deprecated-declarations
export CGO_ENABLED := 1

LDFLAGS := -X github.com/tessera-gpu/tessera/pkg/version.Version=$(VERSION) \
	-X k8s.io/component-base/version.gitVersion=$(K8S_VERSION) \
	-X k8s.io/component-base/version.gitMajor=1 \
	-X k8s.io/component-base/version.gitMinor=36

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: build
build: ## Build bin/gpu-agent and bin/gpu-scheduler.
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/gpu-agent ./cmd/gpu-agent
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/gpu-scheduler ./cmd/gpu-scheduler

.PHONY: demo
demo: build k8s-bins ## The main job on a simulated DGX H100: real apiserver, gpu-agent, MIG relabel flow, metrics, placement replay.
	$(GO) run ./hack/cmd/demo -bin $(BIN) -traces $(TRACES)

.PHONY: k8s-bins
k8s-bins: ## Build etcd and kube-apiserver from the pinned Go modules into bin/ (for tests).
	hack/build-k8s-bins.sh

.PHONY: test
test: k8s-bins ## Run every test with the race detector (real etcd + kube-apiserver included; no GPU needed).
	TESSERA_K8S_BIN_DIR=$(BIN) $(GO) test -race -count=1 ./...

.PHONY: test-short
test-short: ## Run the unit tests only (no control plane), without -race.
	TESSERA_SKIP_K8S=1 $(GO) test -count=1 ./...

$(BIN)/golangci-lint:
	GOBIN=$(BIN) $(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_VERSION)

.PHONY: lint
lint: $(BIN)/golangci-lint ## Run go vet and golangci-lint (installed into bin/ through the module proxy).
	$(GO) vet ./...
	$(BIN)/golangci-lint run ./...

.PHONY: generate
generate: ## Regenerate generated files (docs/machines.md).
	hack/update-generated.sh

.PHONY: verify
verify: ## Check formatting, go.mod tidiness and that generated files are current.
	hack/verify-gofmt.sh
	hack/verify-gomod.sh
	hack/verify-generated.sh

.PHONY: bench
bench: ## Run the Go benchmarks (discovery + telemetry of a simulated DGX H100 with MIG).
	$(GO) test -run '^$$' -bench . -benchmem -count 5 ./pkg/... | tee $(BIN)/bench.txt

.PHONY: bench-mig
bench-mig: k8s-bins ## Relabel a simulated DGX H100 (all 8 GPUs change) against a real kube-apiserver: seconds to mig.config.state=success and NVML inits.
	TESSERA_K8S_BIN_DIR=$(BIN) $(GO) test -run '^$$' -bench BenchmarkRelabel -benchtime 20x -count 1 ./pkg/mig/reconcile/ 2>&1 \
		| grep -E '^(Benchmark|goos|goarch|pkg|cpu|PASS|FAIL|ok|---)|bench_test' | tee $(BIN)/bench-mig.txt

TRACES ?= ../shared/traces
ANCHOR ?= ../shared/benchmarks/fgd-anchor.csv
SEEDS ?= 42-51

.PHONY: bench-placement
bench-placement: ## Replay every openb trace in TRACES (../shared/traces) under the six FGD baselines and tessera, seeds 42-51; compare with ANCHOR; each trace's upper bound (any policy); write _output/placement.
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/gpu-scheduler ./cmd/gpu-scheduler
	$(BIN)/gpu-scheduler simulate --nodes $(TRACES)/openb_node_list_gpu_node.csv \
		--pods "$$(ls $(TRACES)/openb_pod_list_*.csv | paste -sd, -)" \
		--policy random,dotprod,gpuclustering,gpupacking,bestfit,fgd,tessera --seeds 42-51 --tune 1.3 \
		--anchor $(ANCHOR) --tolerance 0.5 --bound --out _output/placement

.PHONY: bench-placement-online
bench-placement-online: ## Replay TRACES under FGD and tessera with three priors (the trace's, none: learned from arriving pods only, another trace's), seeds SEEDS (42-51); write _output/placement-online.
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/gpu-scheduler ./cmd/gpu-scheduler
	$(BIN)/gpu-scheduler simulate --nodes $(TRACES)/openb_node_list_gpu_node.csv \
		--pods "$$(ls $(TRACES)/openb_pod_list_*.csv | paste -sd, -)" \
		--policy fgd,tessera,tessera-online,tessera-cross --seeds $(SEEDS) --tune 1.3 --out _output/placement-online

.PHONY: bench-placement-bound
bench-placement-bound: ## Upper bound on the allocation any placement policy can reach on TRACES' default trace, seeds 42-51 at 130 %; write _output/bound.
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/gpu-scheduler ./cmd/gpu-scheduler
	$(BIN)/gpu-scheduler simulate bound --nodes $(TRACES)/openb_node_list_gpu_node.csv \
		--pods $(TRACES)/openb_pod_list_default.csv --seeds 42-51 --tune 1.3 --out _output/bound

.PHONY: bench-scenarios
bench-scenarios: ## Run the synthetic scenarios (MIG, NVLink islands, time-shared GPUs, product constraints) under tessera and the baselines, seeds 42-51; write _output/scenarios.
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/gpu-scheduler ./cmd/gpu-scheduler
	$(BIN)/gpu-scheduler simulate scenarios --scenario all --policy all --seeds 42-51 --out _output/scenarios

.PHONY: bench-agent
bench-agent: ## Run gpu-agent on a simulated DGX H100 (8 GPUs x 7 MIG devices, 100 pods) for a minute: /metrics p50/p99 and bytes, RSS, CPU.
	TESSERA_BENCH_AGENT=1 TESSERA_BENCH_OUT=$(BIN)/bench-agent.txt $(GO) test -count=1 -timeout 10m -v -run TestAgentFootprint ./test/agentbench/

.PHONY: gpu-smoke
gpu-smoke: ## On a machine with an NVIDIA GPU: compare NVML discovery and telemetry with nvidia-smi.
	hack/gpu-smoke.sh

.PHONY: clean
clean: ## Remove build outputs.
	rm -rf $(BIN) _output
