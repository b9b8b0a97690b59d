# mproc_add_test(<source> LABEL <label> TIMEOUT <seconds> [LIBS <targets>...] [EMULATOR <command>...])
#
# Builds test_<name> from tests/.../test_<name>.cpp plus the shared support code in
# mproc_test_support (tests/support/*.cpp, whose main.cpp calls mproc::init before GoogleTest),
# and registers every GoogleTest case in it with ctest as "<target>.<Suite>.<Test>", with the
# given label and timeout and MPROC_TEST=1 in its environment. LIBS are linked besides the
# support code; EMULATOR runs the binary, for its test list and for each test (tests/mpi/run).

include(GoogleTest)

function(mproc_add_test source)
  cmake_parse_arguments(PARSE_ARGV 1 arg "" "LABEL;TIMEOUT" "LIBS;EMULATOR")
  get_filename_component(target ${source} NAME_WE)
  if(TARGET ${target})
    message(FATAL_ERROR "mproc_add_test: two test files are named ${target}.cpp (${source})")
  endif()

  add_executable(${target} ${source})
  target_link_libraries(${target} PRIVATE mproc_test_support ${arg_LIBS})
  if(arg_EMULATOR)
    set_target_properties(${target} PROPERTIES CROSSCOMPILING_EMULATOR "${arg_EMULATOR}")
  endif()
  get_filename_component(dir ${source} DIRECTORY)
  file(RELATIVE_PATH dir ${CMAKE_CURRENT_SOURCE_DIR} ${dir})
  set_target_properties(${target} PROPERTIES
    RUNTIME_OUTPUT_DIRECTORY ${CMAKE_CURRENT_BINARY_DIR}/${dir})

  gtest_discover_tests(${target}
    TEST_PREFIX ${target}.
    DISCOVERY_TIMEOUT 60
    PROPERTIES
      LABELS ${arg_LABEL}
      TIMEOUT ${arg_TIMEOUT}
      ENVIRONMENT MPROC_TEST=1)
endfunction()
