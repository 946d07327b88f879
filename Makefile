# Tessera — GPU placement for Kubernetes. `make help` lists the targets.

SHELL := /usr/bin/env bash -o pipefail
.DEFAULT_GOAL := help

GO           ?= go
BIN          := $(CURDIR)/bin
VERSION      ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo v0.0.0-dev)
K8S_VERSION  := v1.36.5
GOLANGCI_VERSION := v2.15.0
# controller-gen writes the GPUNode deep copies and CRD; v0.21 is the line
# built against Kubernetes 0.36 modules. Installed through the module proxy.
CONTROLLER_GEN_VERSION := v0.21.0
CONTROLLER_GEN := $(BIN)/controller-gen-$(CONTROLLER_GEN_VERSION)
# helm lints, renders and tests charts/tessera; v4, installed through the module proxy.
HELM_VERSION := v4.3.2
HELM := $(BIN)/helm-$(HELM_VERSION)
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

# Build tags of gpu-agent. grpcnotrace: gRPC without golang.org/x/net/trace,
# whose /debug/requests pages link html/template; template execution looks
# methods up by name, which makes the linker keep every exported method of
# every type: 9 MB more binary and several MiB more resident memory
# (cmd/gpu-agent/deps_test.go builds with these tags and checks it).
AGENT_TAGS := grpcnotrace

.PHONY: build
build: build-agent ## Build bin/gpu-agent and bin/gpu-scheduler.
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/gpu-scheduler ./cmd/gpu-scheduler

.PHONY: build-agent
build-agent: ## Build bin/gpu-agent only.
	$(GO) build -tags "$(AGENT_TAGS)" -ldflags "$(LDFLAGS)" -o $(BIN)/gpu-agent ./cmd/gpu-agent

# Container images (Dockerfile, one target per binary), tagged with VERSION:
# never latest. CONTAINER_TOOL defaults to docker when its engine answers,
# else podman, else buildah.
IMAGE_REPO     ?= ghcr.io/tessera-gpu
IMAGE_TAG      ?= $(VERSION)
CONTAINER_TOOL ?= $(shell docker version --format '{{.Server.Version}}' >/dev/null 2>&1 && echo docker || \
	{ command -v podman >/dev/null 2>&1 && echo podman; } || { command -v buildah >/dev/null 2>&1 && echo buildah; })

.PHONY: version
version: ## Print the version the binaries and images are stamped and tagged with.
	@echo $(VERSION)

.PHONY: image
image: ## Build the images $(IMAGE_REPO)/gpu-agent and gpu-scheduler:$(IMAGE_TAG) (IMAGE_TAG defaults to VERSION) with docker, podman or buildah.
	@case "$(IMAGE_TAG)" in ""|latest) echo "image: IMAGE_TAG must be a version, not '$(IMAGE_TAG)'" >&2; exit 2;; esac
	@[ -n "$(CONTAINER_TOOL)" ] || { echo "image: no container builder: docker with a running engine, podman or buildah (or set CONTAINER_TOOL)" >&2; exit 2; }
	for t in gpu-agent gpu-scheduler; do \
		$(CONTAINER_TOOL) build --target $$t --build-arg VERSION=$(VERSION) -t $(IMAGE_REPO)/$$t:$(IMAGE_TAG) . || exit 1; \
	done

.PHONY: image-test
image-test: ## Run each image's binary in a root filesystem holding only the image's files (root; no registry needed).
	TESSERA_REQUIRE_TOOLS=$${TESSERA_REQUIRE_TOOLS:-1} $(GO) test -count=1 -v ./test/image/

.PHONY: demo
demo: build k8s-bins ## A whole simulated GPU cluster: control plane, 6 nodes with gpu-agents, gpu-scheduler, MLOps pods, a MIG change (KEEP=1 leaves it up; TRACES=dir adds a trace replay).
	$(GO) build -o $(BIN)/tessera-demo ./hack/cmd/demo
	$(BIN)/tessera-demo -bin $(BIN) $(if $(filter 1 true yes,$(KEEP)),-keep) -traces $(TRACES)

.PHONY: k8s-bins
k8s-bins: ## Build etcd and kube-apiserver from the pinned Go modules into bin/ (for tests).
	hack/build-k8s-bins.sh

# Tests that need a tool skip without it (go test hides skips of passing
# packages): say so after the run. TESSERA_REQUIRE_TOOLS=1 (CI) fails instead.
SKIP_NOTES = for t in prometheus promtool; do command -v $$t >/dev/null || \
	echo "NOTE: $$t is not installed: the Prometheus-backed tests of manifests/monitoring were SKIPPED (apt-get install prometheus; TESSERA_REQUIRE_TOOLS=1 makes them fail instead)"; done

# test/replaysched replays about 2,100 trace pods one at a time through the
# in-process kube-scheduler: about 50 s, but minutes under the race detector.
# It tests that the simulator and the scheduler agree, not concurrency (the
# plugin runs under -race in pkg/scheduler's integration tests), so it runs
# without -race.
NORACE_PKGS := ./test/replaysched

.PHONY: test
test: build k8s-bins $(HELM) ## Run every test with the race detector (real etcd + kube-apiserver, the pinned helm and the built binaries included; no GPU needed); test/replaysched and scheduler_perf's 10-node smoke run (hack/schedperf-smoke.sh) without it.
	export TESSERA_K8S_BIN_DIR=$(BIN) TESSERA_BIN_DIR=$(BIN) TESSERA_HELM=$(HELM); \
	$(GO) test -race -count=1 $$($(GO) list ./... | grep -vxF "$$($(GO) list $(NORACE_PKGS))"); status=$$?; \
	$(GO) test -count=1 $(NORACE_PKGS) || status=1; \
	GO=$(GO) hack/schedperf-smoke.sh $(BIN) || status=1; $(SKIP_NOTES); exit $$status

.PHONY: test-short
test-short: ## Run the unit tests only (no control plane), without -race.
	TESSERA_SKIP_K8S=1 $(GO) test -count=1 ./...

$(BIN)/golangci-lint:
	GOBIN=$(BIN) $(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_VERSION)

.PHONY: lint
lint: $(BIN)/golangci-lint ## Run go vet and golangci-lint (installed into bin/ through the module proxy).
	$(GO) vet ./...
	$(BIN)/golangci-lint run ./...

$(CONTROLLER_GEN):
	GOBIN=$(BIN)/.controller-gen-$(CONTROLLER_GEN_VERSION) $(GO) install sigs.k8s.io/controller-tools/cmd/controller-gen@$(CONTROLLER_GEN_VERSION)
	mv $(BIN)/.controller-gen-$(CONTROLLER_GEN_VERSION)/controller-gen $@ && rmdir $(BIN)/.controller-gen-$(CONTROLLER_GEN_VERSION)

$(HELM):
	GOBIN=$(BIN)/.helm-$(HELM_VERSION) $(GO) install helm.sh/helm/v4/cmd/helm@$(HELM_VERSION)
	mv $(BIN)/.helm-$(HELM_VERSION)/helm $@ && rmdir $(BIN)/.helm-$(HELM_VERSION)

.PHONY: chart-lint
chart-lint: $(HELM) ## helm lint --strict and helm template charts/tessera for the default values and each ci/ values file.
	$(HELM) lint --strict charts/tessera
	for f in charts/tessera/ci/*.yaml; do $(HELM) lint --strict charts/tessera --values $$f || exit 1; done
	$(HELM) template tessera charts/tessera --namespace tessera-system >/dev/null
	for f in charts/tessera/ci/*.yaml; do $(HELM) template tessera charts/tessera --namespace tessera-system --values $$f >/dev/null || exit 1; done

.PHONY: chart-test
chart-test: chart-lint k8s-bins ## chart-lint, then apply every object the chart renders to a real kube-apiserver (charts/chart_test.go).
	TESSERA_K8S_BIN_DIR=$(BIN) TESSERA_HELM=$(HELM) $(GO) test -count=1 ./charts/

.PHONY: generate
generate: $(CONTROLLER_GEN) ## Regenerate generated files (docs/machines.md, GPUNode deep copies and CRD; pkg/gpuaudit BPF objects, which need clang, llvm, libbpf-dev).
	CONTROLLER_GEN=$(CONTROLLER_GEN) hack/update-generated.sh

.PHONY: verify
verify: $(CONTROLLER_GEN) ## Check formatting, go.mod tidiness and that generated files are current.
	hack/verify-gofmt.sh
	hack/verify-gomod.sh
	CONTROLLER_GEN=$(CONTROLLER_GEN) hack/verify-generated.sh

.PHONY: bench
bench: ## Run the Go benchmarks (discovery + telemetry of a simulated DGX H100 with MIG).
	$(GO) test -run '^$$' -bench . -benchmem -count 5 ./pkg/... | tee $(BIN)/bench.txt

# scheduler_perf starts its own etcd per workload and finds it on PATH.
SCHEDPERF_FILTER ?= performance,-large
SCHEDPERF_COUNT ?= 3
.PHONY: bench-scheduler
bench-scheduler: k8s-bins ## scheduler_perf: 1,000 GPU nodes, 5,000 mixed GPU pods, default profile vs Tessera's, SCHEDPERF_COUNT (3) rounds of one run each, alternating; the median runs' pods/s and their ratio (SCHEDPERF_FILTER=performance for 5,000 nodes too, =whole for the whole-GPU control).
	mkdir -p _output/schedperf
	cd test/schedperf && $(GO) test -c -o $(CURDIR)/_output/schedperf/schedperf.test .
	: > _output/schedperf/summary.txt
	# One process per round, the default profile then Tessera's: the profiles'
	# runs alternate (schedperf_test.go, -tessera-rounds).
	cd test/schedperf && for i in $$(seq $(SCHEDPERF_COUNT)); do \
		PATH=$(BIN):$$PATH $(CURDIR)/_output/schedperf/schedperf.test -test.run '^$$' -test.bench BenchmarkPerfScheduling -test.benchtime 1x -test.count 1 -test.timeout 120m \
		-perf-scheduling-label-filter=$(SCHEDPERF_FILTER) -data-items-dir $(CURDIR)/_output/schedperf -tessera-rounds $$i 2>&1 \
		| grep -E '^(Benchmark|PASS|FAIL|ok|---|scheduler_perf|workload|[0-9]+Nodes)|schedperf_test|Tessera planned' | tee -a $(CURDIR)/_output/schedperf/summary.txt || exit 1; done

.PHONY: bench-mig
bench-mig: k8s-bins ## Relabel a simulated DGX H100 (all 8 GPUs change) against a real kube-apiserver: seconds to mig.config.state=success and NVML inits.
	TESSERA_K8S_BIN_DIR=$(BIN) $(GO) test -run '^$$' -bench BenchmarkRelabel -benchtime 20x -count 1 ./pkg/mig/reconcile/ 2>&1 \
		| grep -E '^(Benchmark|goos|goarch|pkg|cpu|PASS|FAIL|ok|---)|bench_test' | tee $(BIN)/bench-mig.txt

TRACES ?= ../shared/traces
# FGD's published allocation figures (the paper's artifact), shipped with the repository.
ANCHOR ?= pkg/replay/testdata/fgd-anchor.csv
TRACES_HINT = the openb traces are the public Alibaba cluster-trace-gpu-v2023 dataset \
	(https://github.com/alibaba/clusterdata/tree/master/cluster-trace-gpu-v2023, its csv/ directory); pass it with TRACES=dir
# check-traces fails with where to get the traces when TRACES lacks them.
define check-traces
	@test -f $(TRACES)/openb_node_list_gpu_node.csv && ls $(TRACES)/openb_pod_list_*.csv >/dev/null 2>&1 || \
		{ echo "no openb traces in TRACES=$(TRACES): $(TRACES_HINT)" >&2; exit 2; }
endef
SEEDS ?= 42-51

.PHONY: bench-placement
bench-placement: ## Replay every openb trace in TRACES (../shared/traces) under the six FGD baselines and tessera, seeds 42-51; compare with ANCHOR; each trace's upper bound (any policy); write _output/placement.
	$(check-traces)
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/gpu-scheduler ./cmd/gpu-scheduler
	$(BIN)/gpu-scheduler simulate --nodes $(TRACES)/openb_node_list_gpu_node.csv \
		--pods "$$(ls $(TRACES)/openb_pod_list_*.csv | paste -sd, -)" \
		--policy random,dotprod,gpuclustering,gpupacking,bestfit,fgd,tessera --seeds 42-51 --tune 1.3 \
		--anchor $(ANCHOR) --tolerance 0.5 --bound --out _output/placement

.PHONY: bench-placement-online
bench-placement-online: ## Replay TRACES under FGD and tessera with three priors (the trace's, none: learned from arriving pods only, another trace's), seeds SEEDS (42-51); write _output/placement-online.
	$(check-traces)
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/gpu-scheduler ./cmd/gpu-scheduler
	$(BIN)/gpu-scheduler simulate --nodes $(TRACES)/openb_node_list_gpu_node.csv \
		--pods "$$(ls $(TRACES)/openb_pod_list_*.csv | paste -sd, -)" \
		--policy fgd,tessera,tessera-online,tessera-cross --seeds $(SEEDS) --tune 1.3 --out _output/placement-online

.PHONY: bench-placement-bound
bench-placement-bound: ## Upper bound on the allocation any placement policy can reach on TRACES' default trace, seeds 42-51 at 130 %; write _output/bound.
	$(check-traces)
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/gpu-scheduler ./cmd/gpu-scheduler
	$(BIN)/gpu-scheduler simulate bound --nodes $(TRACES)/openb_node_list_gpu_node.csv \
		--pods $(TRACES)/openb_pod_list_default.csv --seeds 42-51 --tune 1.3 --out _output/bound

REPLAY_SEED ?= 42
.PHONY: bench-replay
bench-replay: k8s-bins ## Replay seed REPLAY_SEED (42) of TRACES' default trace at 130 % (about 10,900 pods, 1,213 nodes) through the real kube-scheduler (TesseraGPU the only Score plugin) and compare with simulate (tessera-online): ratios at 100/130 %, same-node %, wall; write _output/replaysched.
	$(check-traces)
	mkdir -p _output/replaysched
	TESSERA_K8S_BIN_DIR=$(BIN) TESSERA_REPLAY_TRACES=$(abspath $(TRACES)) TESSERA_REPLAY_SEED=$(REPLAY_SEED) \
		TESSERA_REPLAY_OUT=$(CURDIR)/_output/replaysched $(GO) test -count=1 -timeout 90m -run '^TestTraceAgrees$$' -v ./test/replaysched \
		> _output/replaysched/test.log 2>&1; status=$$?; grep -E '^(--- |ok|FAIL)|pods in' _output/replaysched/test.log; \
		cat _output/replaysched/summary.txt 2>/dev/null; exit $$status

.PHONY: bench-scenarios
bench-scenarios: ## Run the synthetic scenarios (MIG, NVLink islands, time-shared GPUs, product constraints) under tessera and the baselines, seeds 42-51; write _output/scenarios.
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/gpu-scheduler ./cmd/gpu-scheduler
	$(BIN)/gpu-scheduler simulate scenarios --scenario all --policy all --seeds 42-51 --out _output/scenarios

.PHONY: bench-agent
bench-agent: build-agent ## Run bin/gpu-agent on a simulated DGX H100 (8 GPUs x 7 MIG devices, 100 pods) against a real kube-apiserver with the inventory publisher on: /metrics p50/p99 and bytes, RSS, CPU, GPUNode writes/min (steady, 100 pods churning).
	TESSERA_BENCH_AGENT=1 TESSERA_BENCH_AGENT_BIN=$(BIN)/gpu-agent TESSERA_BENCH_OUT=$(BIN)/bench-agent.txt \
		$(GO) test -count=1 -timeout 10m -v -run TestAgentFootprint ./test/agentbench/

.PHONY: bench-audit
bench-audit: ## As root: the eBPF GPU access audit's cost on a getppid loop and an open/close loop, with and without the program on each hook (ratios in one run).
	@mkdir -p $(BIN)
	TESSERA_BENCH_AUDIT=1 TESSERA_BENCH_OUT=$(BIN)/bench-audit.txt $(GO) test -count=1 -timeout 10m -v -run '^TestAuditCost$$' ./pkg/gpuaudit/ 2>&1 \
		| grep -vE '^(=== RUN|    cost_linux_test.go)' ; cat $(BIN)/bench-audit.txt

.PHONY: gpu-smoke
gpu-smoke: ## On a machine with an NVIDIA GPU: compare NVML discovery and telemetry with nvidia-smi.
	hack/gpu-smoke.sh

.PHONY: clean
clean: ## Remove build outputs.
	rm -rf $(BIN) _output
