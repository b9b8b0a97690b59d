// Stacks of exceptions: captured where they are thrown (a __cxa_throw hook), printed where they
// are caught. The hook captures only in child processes, where a report is wanted.
#pragma once

#include <string>

namespace mproc::detail {

struct ExceptionReport {
  std::string type;   // demangled
  std::string what;   // what() for std::exception, empty otherwise
  std::string stack;  // symbolised, one frame per line, innermost first; empty when unknown
};

/// Turns capture at throw on or off for the whole process.
void capture_throw_stacks(bool on);
/// Describes the exception being handled; call from inside a catch block.
ExceptionReport report_current_exception();
/// "Process NAME (pid N):\nTraceback...\nTYPE: WHAT" in the style of Python's traceback print.
std::string format_report(const ExceptionReport& r, const std::string& header);

}  // namespace mproc::detail
