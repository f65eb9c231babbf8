# Tether: every entry point installs what it needs first, so a fresh Debian 12 machine works.
#   make run    deps + Release build (in build-release/) + tetherd on etc/tether.yaml (local-only, no cloud needed)
#   make test   deps + build + every test (plain build, then ASan/UBSan build, then bounded fuzzing)
#   make build  deps + optimized build with debug info (RelWithDebInfo, in build/; what the tests use)
#   make bench  deps + Release build + every benchmark against its baseline -> docs/benchmarks.md
#   make soak   long fault suites (kill -9 cycles, WAN flaps, ...)
#   make fuzz   long fuzzing runs (FUZZ_SECONDS per target, default 600)
#   make deb    .deb package in build/ (make deb ARCH=arm64|armhf, or deb-arm64 / deb-armhf:
#               cross-built for a Raspberry Pi, in build-<arch>/)
#   make cross-test   the test suite cross-built for armhf and arm64, run under qemu-user
#   make cross-smoke  the armhf tetherd under qemu: session, durable write, restart (part of make test)

JOBS        ?= $(shell nproc)
BUILD       ?= build
RUN_BUILD   ?= build-release
ASAN_BUILD  ?= build-asan
FUZZ_BUILD  ?= build-fuzz
FUZZ_SECONDS ?= 600
STATE_DIR   ?= $(CURDIR)/$(RUN_BUILD)/state
ARCH        ?= $(shell dpkg --print-architecture)
CROSS_ARCHS := arm64 armhf
# Cross builds: Release like the shipped package, in build-<arch>/, sysroots from
# scripts/install-cross-deps.sh. ccache when the machine has it.
CROSS_LAUNCHER := $(if $(shell command -v ccache),-DCMAKE_C_COMPILER_LAUNCHER=ccache -DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
# The cross suite: tests that cannot run under qemu-user are excluded by name in
# tests/cross/skips.txt (each with its reason, printed before the run).
CROSS_TEST_TIMEOUT ?= 900

.PHONY: all deps peers build build-release build-asan build-fuzz run test lint test-plain test-asan fuzz-smoke fuzz bench soak deb clean \
        $(addprefix cross-deps-,$(CROSS_ARCHS)) $(addprefix deb-,$(CROSS_ARCHS)) $(addprefix cross-build-,$(CROSS_ARCHS)) \
        $(addprefix cross-test-,$(CROSS_ARCHS)) cross-test cross-smoke

all: build

deps:
	@./scripts/install-deps.sh

peers: deps
	@./tests/peers/install.sh

$(BUILD)/CMakeCache.txt:
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo

build: deps $(BUILD)/CMakeCache.txt
	cmake --build $(BUILD) -j $(JOBS)

# The daemon alone, as shipped: Release, no tests or benchmarks.
build-release: deps
	cmake -S . -B $(RUN_BUILD) -DCMAKE_BUILD_TYPE=Release -DTETHER_BUILD_TESTS=OFF -DTETHER_BUILD_BENCH=OFF
	cmake --build $(RUN_BUILD) -j $(JOBS) --target tetherd tetherctl

build-asan: deps
	cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DTETHER_SANITIZE=ON -DTETHER_BUILD_BENCH=OFF
	cmake --build $(ASAN_BUILD) -j $(JOBS)

build-fuzz: deps
	CC=clang CXX=clang++ cmake -S . -B $(FUZZ_BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTETHER_FUZZ=ON \
	  -DTETHER_BUILD_TESTS=OFF -DTETHER_BUILD_BENCH=OFF
	cmake --build $(FUZZ_BUILD) -j $(JOBS) --target tether_fuzzers

run: build-release
	mkdir -p $(STATE_DIR)
	STATE_DIRECTORY=$(STATE_DIR) RUNTIME_DIRECTORY=$(STATE_DIR) ./$(RUN_BUILD)/tetherd --config etc/tether.yaml

test: peers lint test-plain test-asan fuzz-smoke cross-smoke

# One naming convention (docs/architecture.md, "Naming"): clang-tidy over the product's sources.
lint: build
	./scripts/check-naming.py $(BUILD) -j $(JOBS)

# Soak suites (label "soak") run only under `make soak`.
test-plain: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS) --timeout 600 -LE soak

# The sanitizer run skips tests labelled "slow" (they run in the plain build above).
test-asan: build-asan
	cd $(ASAN_BUILD) && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
	  ctest --output-on-failure -j $(JOBS) --timeout 600 -LE 'slow|soak'

fuzz-smoke: build-fuzz
	./scripts/run-fuzzers.sh $(FUZZ_BUILD) 20

fuzz: build-fuzz
	./scripts/run-fuzzers.sh $(FUZZ_BUILD) $(FUZZ_SECONDS)

bench: deps
	cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=Release
	cmake --build build-bench -j $(JOBS) --target tetherd coap_fleet coap_bench_server notify_fleet dtls_fleet sdk_fleet store_bench detection_bench restart_bench upstream_drain_bench
	./bench/run-all.sh build-bench

# Long fault suites: 100 kill -9 cycles of the store and of the daemon under device load.
soak: build
	cd $(BUILD) && TETHER_SOAK=1 ctest --output-on-failure -L 'soak|faults' --timeout 7200

ifeq ($(filter $(ARCH),$(CROSS_ARCHS)),)
deb: build
	cd $(BUILD) && cpack -G DEB
else
deb: deb-$(ARCH)
endif

# --- Raspberry Pi (arm64, armhf): cross builds, run under qemu-user ---------------------------
define CROSS_RULES
cross-deps-$(1):
	@./scripts/install-cross-deps.sh $(1)

build-$(1)/CMakeCache.txt:
	cmake -S . -B build-$(1) -DCMAKE_TOOLCHAIN_FILE=cmake/toolchains/toolchain-$(1).cmake \
	  -DCMAKE_BUILD_TYPE=Release -DTETHER_BUILD_BENCH=OFF $(CROSS_LAUNCHER)

# The shipped binaries only (what deb-$(1) and cross-smoke need).
cross-build-$(1): deps cross-deps-$(1) build-$(1)/CMakeCache.txt
	cmake --build build-$(1) -j $(JOBS) --target tetherd tetherctl

deb-$(1): cross-build-$(1)
	cd build-$(1) && cpack -G DEB
	@dpkg-deb -I build-$(1)/tether_*_$(1).deb | grep -E '^ (Package|Version|Architecture|Depends):'

cross-test-$(1): deps peers cross-deps-$(1) build-$(1)/CMakeCache.txt
	cmake --build build-$(1) -j $(JOBS)
	./tests/cross/run-cross-tests.sh $(1) build-$(1) $(JOBS) $(CROSS_TEST_TIMEOUT)
endef
$(foreach a,$(CROSS_ARCHS),$(eval $(call CROSS_RULES,$(a))))

cross-smoke: cross-build-armhf
	./tests/ops/cross_smoke_test.sh armhf build-armhf

cross-test: cross-test-armhf cross-test-arm64

clean:
	rm -rf $(BUILD) $(RUN_BUILD) $(ASAN_BUILD) $(FUZZ_BUILD) build-bench $(addprefix build-,$(CROSS_ARCHS))
