# ctest bench.report: bench/report.py turns a small sample of results (testdata/sample.jsonl:
# mproc, Python and raw-limit records of a few operations, worker-death outcomes and a scaling
# sweep) into the Markdown report and, when gnuplot is there, the chart.
# -DPYTHON=... -DSOURCE_DIR=bench/ -DWORK_DIR=scratch directory
file(REMOVE_RECURSE ${WORK_DIR})
file(MAKE_DIRECTORY ${WORK_DIR})
find_program(GNUPLOT gnuplot)
set(chart_args)
if(GNUPLOT)
  set(chart_args --chart ${WORK_DIR}/sample-scaling.png)
endif()
execute_process(
  COMMAND ${PYTHON} ${SOURCE_DIR}/report.py ${SOURCE_DIR}/testdata/sample.jsonl ${chart_args}
  OUTPUT_VARIABLE report ERROR_VARIABLE errors RESULT_VARIABLE status)
if(NOT status EQUAL 0)
  message(FATAL_ERROR "report.py failed (${status}):\n${errors}")
endif()
foreach(expected IN ITEMS
    "| Pool.map x*x, default chunksize, items/s [fork] | higher |"
    "| pool_map_sigkill | fork | error:WorkerCrashed |"
    "### Scaling (fork"
    "#### map_throughput")
  string(FIND "${report}" "${expected}" at)
  if(at EQUAL -1)
    message(FATAL_ERROR "the report lacks '${expected}':\n${report}")
  endif()
endforeach()
if(GNUPLOT AND NOT EXISTS ${WORK_DIR}/sample-scaling.png)
  message(FATAL_ERROR "report.py --chart wrote no PNG:\n${errors}")
endif()
