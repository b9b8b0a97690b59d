# Build options. Tests, examples and benchmarks are on by default only when mproc is the
# top-level project (fmt's FMT_MASTER_PROJECT), so a project that add_subdirectory()s mproc
# builds the library alone.

option(MPROC_BUILD_TESTS "Build the tests" ${PROJECT_IS_TOP_LEVEL})
option(MPROC_BUILD_EXAMPLES "Build the examples" ${PROJECT_IS_TOP_LEVEL})
option(MPROC_BUILD_BENCH "Build the benchmarks" ${PROJECT_IS_TOP_LEVEL})
option(MPROC_WERROR "Treat compiler warnings as errors" OFF)
option(MPROC_BUILD_FUZZ "Build the libFuzzer targets in fuzz/ (clang only)" OFF)
set(MPROC_SANITIZE "" CACHE STRING
  "Sanitizers for everything in the project, e.g. 'address;undefined' or 'thread'")

if(PROJECT_IS_TOP_LEVEL AND NOT CMAKE_BUILD_TYPE AND NOT CMAKE_CONFIGURATION_TYPES)
  set(CMAKE_BUILD_TYPE RelWithDebInfo CACHE STRING "Build type" FORCE)
endif()

if(MPROC_BUILD_FUZZ)
  if(NOT CMAKE_CXX_COMPILER_ID STREQUAL "Clang")
    message(FATAL_ERROR "MPROC_BUILD_FUZZ needs clang (libFuzzer): configure with CXX=clang++-16")
  endif()
  # Coverage feedback from the library as well as the harness; the fuzzer's main is linked into
  # the fuzz targets alone (fuzz/CMakeLists.txt).
  list(APPEND MPROC_SANITIZE fuzzer-no-link)
endif()

if(MPROC_SANITIZE)
  list(JOIN MPROC_SANITIZE "," mproc_sanitizers)
  # Directory scope: applies to the library, tests, examples and benchmarks alike.
  # Any report fails: undefined behaviour aborts instead of printing and going on.
  set(MPROC_SANITIZE_FLAGS -fsanitize=${mproc_sanitizers} -fno-sanitize-recover=all -fno-omit-frame-pointer)
  add_compile_options(${MPROC_SANITIZE_FLAGS})
  add_link_options(${MPROC_SANITIZE_FLAGS})
endif()
