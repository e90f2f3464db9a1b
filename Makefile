# ironlite — see README.md. `make test` is the one test command CI runs.
GO        ?= go
BIN       := bin
STATICCHECK_VERSION := v0.8.2
export CGO_ENABLED := 0

.PHONY: all build test unit test-cli lint initramfs e2e demo bench-api bench-boot deps clean

all: build

build: ## static binaries into bin/
	$(GO) build -trimpath -o $(BIN)/ironlite ./controller/cmd/ironlite
	@if [ -d agent/cmd/ironlite-agent ]; then $(GO) build -trimpath -o $(BIN)/ironlite-agent ./agent/cmd/ironlite-agent; fi

unit: ## Go unit and integration tests (real SQLite, ipmi_sim, loop files)
	$(GO) vet ./...
	$(GO) test -count=1 ./...

test-cli: build ## the real `openstack baremetal` client and our CLI against `ironlite serve`
	bash scripts/test-cli

test: unit test-cli e2e test-raid-vm ## everything CI runs

.PHONY: test-raid-vm
test-raid-vm: initramfs ## software RAID on real md arrays (loop devices) in qemu on the ramdisk's kernel: agent/raid's array tests
	bash agent/raid/testdata/vmtest.sh

lint: ## gofmt, go vet, staticcheck
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) ./...

initramfs: ## build/ironlite-agent.cpio.gz + build/vmlinuz (u-root + agent + modules + mdadm), with a size report
	bash initramfs/build.sh

e2e: initramfs ## qemu (TCG): the agent against a stand-in; inspection, and full deploys (BIOS, UEFI) in the virtual lab against `ironlite serve`
	IRONLITE_E2E_SKIP_BUILD=1 $(GO) test -tags e2e -count=1 -v -timeout 30m ./agent/e2e/ ./controller/e2e/

demo: ## the main job on a fresh machine: deps, build, a virtual machine with a BMC, enroll -> clean -> deploy -> boot (root)
	bash scripts/demo

deps: ## Debian packages the tests and the lab need (run as root)
	bash scripts/install-deps

bench-api: build ## API throughput/latency vs Ironic (see scripts/bench-api)
	bash scripts/bench-api

bench-boot: initramfs ## qemu start to first heartbeat, ramdisk size
	bash scripts/bench-boot

clean:
	rm -rf $(BIN) build
