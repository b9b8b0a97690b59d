# mproc's front door. On a fresh Debian 12 machine:
#   make demo   installs missing packages, builds, runs the seed's examples under every start method
#   make test   installs missing packages, builds, runs every test (unit, fault, packaging)

BUILD ?= build
BUILD_TYPE ?= RelWithDebInfo
BENCH_BUILD ?= build-release

.PHONY: all deps build demo test bench clean

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

# Placeholder until the benchmark issue fills in bench/run.
bench: deps
	cmake -S . -B $(BENCH_BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Release
	cmake --build $(BENCH_BUILD)
	if [ -x bench/run ]; then bench/run $(BENCH_BUILD); else echo "bench/run does not exist yet"; fi

clean:
	rm -rf $(BUILD) $(BENCH_BUILD)
