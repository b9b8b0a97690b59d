# mproc's front door. On a fresh Debian 12 machine:
#   make demo   installs missing packages, builds, runs the seed's examples under every start method
#   make test   installs missing packages, builds, runs every test (unit, fault, packaging)
#   make check-asan   the suite under AddressSanitizer + UndefinedBehaviorSanitizer

BUILD ?= build
BUILD_TYPE ?= RelWithDebInfo
BENCH_BUILD ?= build-release
ASAN_BUILD ?= build-asan

.PHONY: all deps build demo test check-asan bench clean

all: build

deps:
	scripts/install-deps

build: deps
	cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=$(BUILD_TYPE)
	cmake --build $(BUILD)

demo: build
	scripts/demo $(BUILD)

test: build
	ctest --test-dir $(BUILD) --output-on-failure --no-tests=error -j2 --timeout 300

# Debug build with ASan + UBSan, every report fatal. The packaging and compile-fail tests are
# left out: they build consumer projects and snippets, which checks the build, not memory safety.
check-asan: deps
	cmake -S . -B $(ASAN_BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Debug "-DMPROC_SANITIZE=address;undefined" -DMPROC_BUILD_BENCH=OFF
	cmake --build $(ASAN_BUILD)
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:detect_stack_use_after_return=0 \
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	ctest --test-dir $(ASAN_BUILD) --output-on-failure --no-tests=error -j2 --timeout 600 -LE "packaging|compile"

# mproc, the Python peers and the raw limits in one run (bench/run; RUNS=, QUICK=1, STEPS=):
# bench/results/<date>.{jsonl,md} and the scaling chart. Only the benchmarks are built.
bench: deps
	cmake -S . -B $(BENCH_BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Release -DMPROC_BUILD_TESTS=OFF -DMPROC_BUILD_EXAMPLES=OFF
	cmake --build $(BENCH_BUILD)
	bench/run $(BENCH_BUILD)

clean:
	rm -rf $(BUILD) $(BENCH_BUILD) $(ASAN_BUILD)
