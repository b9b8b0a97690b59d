#include "mproc/errors.hpp"

namespace mproc {
namespace {
// what() is a C string: a NUL from the worker's bytes would hide the rest of the report (the
// type, the message) from whoever prints it. The accessors keep the bytes as they came.
std::string visible(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    if (c == '\0')
      out += "\\0";
    else
      out += c;
  }
  return out;
}

std::string format_remote(const std::string& type, const std::string& message, const std::string& worker, int pid,
                          const std::string& stack) {
  // The order of Python's print: the remote traceback first, then the exception itself.
  std::string exception = visible(type);
  if (!message.empty()) exception.append(": ").append(visible(message));
  std::string out = "\n\"\"\"\nRemote traceback (";
  out.append(visible(worker)).append(", pid ").append(std::to_string(pid)).append("):\n");
  out.append(stack.empty() ? "  (stack not captured)\n" : visible(stack));
  out.append(exception).append("\n\"\"\"\n").append(exception);
  return out;
}
}  // namespace

RemoteError::RemoteError(std::string type, std::string message, std::string worker, int pid, std::string stack)
    : Error(format_remote(type, message, worker, pid, stack)),
      type_(std::move(type)),
      message_(std::move(message)),
      worker_(std::move(worker)),
      pid_(pid),
      stack_(std::move(stack)) {}

}  // namespace mproc
