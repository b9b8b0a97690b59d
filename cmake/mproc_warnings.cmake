# Warnings for mproc's own code only: the library links this target PRIVATE (through
# $<BUILD_INTERFACE:...>, so it stays out of the installed export), tests, examples and benchmarks
# link it too. Consumers never see these flags.

add_library(mproc_warnings INTERFACE)
target_compile_options(mproc_warnings INTERFACE
  -Wall -Wextra -Wpedantic
  $<$<BOOL:${MPROC_WERROR}>:-Werror>)
