# Builds and runs one consumer project of tests/packaging/ the way a user would.
#   CONSUMER=find_package      installs mproc into WORK_DIR/prefix, then builds the consumer with
#                              find_package(mproc CONFIG), and once more through pkg-config.
#   CONSUMER=add_subdirectory  builds the consumer with add_subdirectory(<mproc source> mproc).
# Run by ctest (tests/CMakeLists.txt passes the variables); fails on the first failing step.

cmake_minimum_required(VERSION 3.25)

set(consumer_source ${CMAKE_CURRENT_LIST_DIR}/${CONSUMER})
set(prefix ${WORK_DIR}/prefix)
set(build ${WORK_DIR}/build)

function(step what)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "${CONSUMER}: ${what} failed (${rc})")
  endif()
endfunction()

# The consumer is built like mproc itself: same generator, compiler, build type and sanitizers.
set(consumer_args -G ${GENERATOR} -DCMAKE_MAKE_PROGRAM=${MAKE_PROGRAM}
  -DCMAKE_CXX_COMPILER=${CXX_COMPILER} -DCMAKE_BUILD_TYPE=${CONFIG}
  "-DCMAKE_CXX_FLAGS=${SANITIZE_FLAGS}" "-DCMAKE_EXE_LINKER_FLAGS=${SANITIZE_FLAGS}")
set(install_config)
if(CONFIG)
  set(install_config --config ${CONFIG})
endif()

if(CONSUMER STREQUAL "find_package")
  file(REMOVE_RECURSE ${WORK_DIR})
  step("cmake --install" ${CMAKE_COMMAND} --install ${MPROC_BINARY_DIR} --prefix ${prefix}
    ${install_config})
  step("configure" ${CMAKE_COMMAND} -S ${consumer_source} -B ${build} ${consumer_args}
    -DCMAKE_PREFIX_PATH=${prefix} -DCMAKE_FIND_PACKAGE_NO_PACKAGE_REGISTRY=ON)
  step("build" ${CMAKE_COMMAND} --build ${build})
  step("run" ${build}/consumer)

  # The same program through pkg-config (--static: libmproc is a static library by default).
  set(ENV{PKG_CONFIG_PATH} ${prefix}/${INSTALL_LIBDIR}/pkgconfig)
  execute_process(COMMAND ${PKG_CONFIG} --cflags --static --libs mproc
    OUTPUT_VARIABLE flags OUTPUT_STRIP_TRAILING_WHITESPACE RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "${CONSUMER}: pkg-config --cflags --static --libs mproc failed (${rc})")
  endif()
  separate_arguments(flags UNIX_COMMAND "${flags}")
  separate_arguments(sanitize UNIX_COMMAND "${SANITIZE_FLAGS}")
  step("pkg-config build" ${CXX_COMPILER} ${sanitize} ${consumer_source}/main.cpp
    -o ${WORK_DIR}/consumer-pkg-config ${flags}
    -Wl,-rpath,${prefix}/${INSTALL_LIBDIR})  # for -DBUILD_SHARED_LIBS=ON
  step("pkg-config run" ${WORK_DIR}/consumer-pkg-config)
elseif(CONSUMER STREQUAL "add_subdirectory")
  # The build folder is kept between runs, so only what changed is rebuilt.
  step("configure" ${CMAKE_COMMAND} -S ${consumer_source} -B ${build} ${consumer_args}
    -DMPROC_SOURCE_DIR=${MPROC_SOURCE_DIR})
  step("build" ${CMAKE_COMMAND} --build ${build} --target consumer)
  step("run" ${build}/consumer)
else()
  message(FATAL_ERROR "unknown CONSUMER '${CONSUMER}'")
endif()
