# nfs-provisioner. `make help` lists the targets.
#
# Everything builds with the Go toolchain and Debian packages only; the
# control plane and helm used by the tests are built once into .cache/.

SHELL := /bin/bash
.DEFAULT_GOAL := help

VERSION    ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT     ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
BUILD_DATE ?= $(shell date -u +%Y-%m-%dT%H:%M:%SZ)
LDFLAGS    := -s -w \
	-X github.com/kube-nfs/nfs-provisioner/pkg/version.Version=$(VERSION) \
	-X github.com/kube-nfs/nfs-provisioner/pkg/version.Commit=$(COMMIT) \
	-X github.com/kube-nfs/nfs-provisioner/pkg/version.BuildDate=$(BUILD_DATE)
IMAGE      ?= ghcr.io/kube-nfs/nfs-provisioner
PLATFORMS  ?= linux/amd64,linux/arm64
# make image pushes only with PUSH=1; otherwise the multi-arch image is
# written to dist/ as an OCI archive (a local Docker store can't hold one).
PUSH       ?=
HELM       := .cache/bin/helm
CHART      := charts/nfs-provisioner
FUZZTIME   ?= 10s
, := ,

##@ Build

.PHONY: build
build: ## Build bin/nfs-provisioner for this machine
	CGO_ENABLED=0 go build -trimpath -ldflags '$(LDFLAGS)' -o bin/nfs-provisioner ./cmd/nfs-provisioner

.PHONY: image
image: ## Build the multi-arch image as an OCI archive in dist/; PUSH=1 pushes it to IMAGE instead (needs Docker buildx)
	$(if $(filter 1,$(PUSH)),,mkdir -p dist)
	docker buildx build --platform $(PLATFORMS) \
		--build-arg VERSION=$(VERSION) --build-arg COMMIT=$(COMMIT) --build-arg BUILD_DATE=$(BUILD_DATE) \
		-t $(IMAGE):$(VERSION) \
		$(if $(filter 1,$(PUSH)),--push,--output type=oci$(,)dest=dist/nfs-provisioner-image.tar) .

.PHONY: release
release: $(HELM) ## Binaries for linux/amd64 and linux/arm64 plus the packaged chart in dist/
	rm -rf dist && mkdir -p dist
	for arch in amd64 arm64; do \
		CGO_ENABLED=0 GOOS=linux GOARCH=$$arch go build -trimpath -ldflags '$(LDFLAGS)' \
			-o dist/nfs-provisioner-linux-$$arch ./cmd/nfs-provisioner || exit 1; \
	done
	$(HELM) package $(CHART) --destination dist
	cd dist && sha256sum * > SHA256SUMS

##@ Test

.PHONY: deps
deps: ## Install what the tests need: Debian packages, the control plane, helm, promtool
	test/scripts/install-deps.sh
	test/scripts/build-controlplane.sh
	test/scripts/install-helm.sh >/dev/null
	test/scripts/install-promtool.sh >/dev/null

.PHONY: test
test: deps verify ## Every test: unit, fuzz (briefly), chart and end-to-end on a real control plane
	go test -short -race ./...
	go test -run '^$$' -fuzz '^FuzzResolve$$' -fuzztime $(FUZZTIME) ./pkg/volpath
	go test -run '^$$' -fuzz '^FuzzMkdirAllConfined$$' -fuzztime $(FUZZTIME) ./pkg/exportfs
	NFS_PROVISIONER_REQUIRE_CONTROLPLANE=1 go test -p 1 -count=1 -timeout 40m ./test/...

.PHONY: test-unit
test-unit: ## Unit tests only (no control plane, no NFS server)
	go test -short -race ./...

.PHONY: test-e2e
test-e2e: deps ## End-to-end and chart tests only
	NFS_PROVISIONER_REQUIRE_CONTROLPLANE=1 go test -p 1 -count=1 -timeout 40m ./test/...

.PHONY: bench
bench: deps bench-go ## Go benchmarks, then throughput, latency and memory at scale on a local control plane (not in test); BENCH_ARGS=-help lists options
	go run ./test/bench $(BENCH_ARGS)

.PHONY: bench-go
bench-go: ## Go benchmarks only: pattern evaluation, path resolution, export filesystem calls, tree copy against cp -a
	go test -run '^$$' -bench . -benchmem ./pkg/volpath ./pkg/exportfs ./pkg/clone

.PHONY: verify
verify: ## gofmt, go vet and a tidy go.mod
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change: $$out"; exit 1; fi
	go vet ./...
	go mod tidy -diff

.PHONY: chart-lint
chart-lint: $(HELM) ## helm lint the chart with the CI values
	$(HELM) lint --strict $(CHART) -f $(CHART)/ci/default-values.yaml

$(HELM):
	test/scripts/install-helm.sh >/dev/null

##@ Run

.PHONY: demo
demo: deps ## Control plane + NFS server + provisioner binding a 3-replica StatefulSet; Ctrl-C stops
	go run ./test/demo

.PHONY: demo-down
demo-down: ## Stop a demo started from another shell
	@if [ -f .cache/demo/demo.pid ]; then \
		pid=$$(cat .cache/demo/demo.pid); kill -TERM $$pid 2>/dev/null || true; \
		while kill -0 $$pid 2>/dev/null; do sleep 0.2; done; echo "demo stopped"; \
	else echo "no demo running"; fi

.PHONY: clean
clean: ## Remove build output (keeps the cached control plane and helm)
	rm -rf bin dist .cache/demo

.PHONY: help
help: ## This list
	@awk 'BEGIN {FS = ":.*##"} /^[a-zA-Z0-9_.-]+:.*##/ {printf "  %-12s %s\n", $$1, $$2} /^##@/ {printf "\n%s\n", substr($$0, 5)}' $(MAKEFILE_LIST)
