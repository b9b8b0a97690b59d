# mproc's front door. On a fresh Debian 12 machine:
#   make demo   installs missing packages, builds, runs the seed's examples under every start method
#   make test   installs missing packages, builds, runs every test (unit, fault, packaging), then
#               the reliability checks below (what CI runs; docs/reliability.md)
#   make check-asan   the suite under AddressSanitizer + UndefinedBehaviorSanitizer
#   make check-tsan   the thread-heavy tests under ThreadSanitizer
#   make check-fuzz   every fuzz target for FUZZ_SECONDS each (clang + libFuzzer)

BUILD ?= build
BUILD_TYPE ?= RelWithDebInfo
BENCH_BUILD ?= build-release
ASAN_BUILD ?= build-asan
TSAN_BUILD ?= build-tsan
FUZZ_BUILD ?= build-fuzz
FUZZ_SECONDS ?= 45

.PHONY: all deps build demo test check check-asan check-tsan check-fuzz bench clean

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
	$(MAKE) --no-print-directory check

# The reliability checks, each of which fails on any report.
check: check-asan check-tsan check-fuzz

# Debug build with ASan + UBSan, every report fatal; the per-test watchdog is 3 times longer
# (180 s), as sanitized code runs slower (10,000 processes take about a minute). The packaging and compile-fail tests are
# left out: they build consumer projects and snippets, which checks the build, not memory safety.
# Without the MPI backend (-DMPROC_MPI=OFF): Debian's OpenMPI is not built for sanitizers, and its
# own allocations kept for the process's life are LeakSanitizer reports that say nothing of mproc.
check-asan: deps
	cmake -S . -B $(ASAN_BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Debug "-DMPROC_SANITIZE=address;undefined" -DMPROC_BUILD_BENCH=OFF \
	  -DMPROC_MPI=OFF
	cmake --build $(ASAN_BUILD)
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:detect_stack_use_after_return=0 \
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 MPROC_TEST_TIMEOUT_MULTIPLIER=3 \
	ctest --test-dir $(ASAN_BUILD) --output-on-failure --no-tests=error -j2 --timeout 600 -LE "packaging|compile"

# ThreadSanitizer on the tests whose code runs threads of its own in one process: the pool's
# handler thread (pool, executor, progress), the manager server's thread per client, the queues
# and locks that threads of one process share (queues, synchronize), inherited/per_process's lock;
# and the fault tests whose killer thread races the pool, and the managers' under failure.
# Each test runs its processes too, but TSan sees one process: what it checks is the threads.
# tests/tsan.supp says why each suppression is not a race.
TEST_HELPERS = mproc_test_no_init mproc_test_shm_owner mproc_test_manager_client mproc_test_pool_ctrl_c
TSAN_TESTS = test_pool test_executor test_progress test_managers test_queues test_synchronize test_inherited \
  test_pool_kills test_manager_faults
check-tsan: deps
	cmake -S . -B $(TSAN_BUILD) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMPROC_SANITIZE=thread \
	  -DMPROC_BUILD_BENCH=OFF -DMPROC_BUILD_EXAMPLES=OFF -DMPROC_MPI=OFF
	cmake --build $(TSAN_BUILD) --target $(TSAN_TESTS) $(TEST_HELPERS)
	TSAN_OPTIONS="halt_on_error=1 abort_on_error=1 second_deadlock_stack=1 suppressions=$(CURDIR)/tests/tsan.supp" \
	MPROC_TEST_TIMEOUT_MULTIPLIER=3 \
	ctest --test-dir $(TSAN_BUILD) --output-on-failure --no-tests=error -j2 --timeout 600 \
	  -R "^($(subst $() ,|,$(TSAN_TESTS)))\\."

# libFuzzer targets (fuzz/), each run for FUZZ_SECONDS from its seed corpus (fuzz/run).
check-fuzz: deps
	CXX=clang++-16 cmake -S . -B $(FUZZ_BUILD) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMPROC_BUILD_FUZZ=ON -DMPROC_MPI=OFF \
	  "-DMPROC_SANITIZE=address;undefined" -DMPROC_BUILD_TESTS=OFF -DMPROC_BUILD_BENCH=OFF -DMPROC_BUILD_EXAMPLES=OFF
	cmake --build $(FUZZ_BUILD) --target fuzz
	FUZZ_SECONDS=$(FUZZ_SECONDS) fuzz/run $(FUZZ_BUILD)

# mproc, the Python peers and the raw limits in one run (bench/run; RUNS=, QUICK=1, STEPS=):
# bench/results/<date>.{jsonl,md} and the scaling chart. Only the benchmarks are built.
bench: deps
	cmake -S . -B $(BENCH_BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Release -DMPROC_BUILD_TESTS=OFF -DMPROC_BUILD_EXAMPLES=OFF
	cmake --build $(BENCH_BUILD)
	bench/run $(BENCH_BUILD)

clean:
	rm -rf $(BUILD) $(BENCH_BUILD) $(ASAN_BUILD) $(TSAN_BUILD) $(FUZZ_BUILD)
