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

std::string format_remote(const std::string& type_bytes, const std::string& message_bytes,
                          const std::string& worker_bytes, int pid, const std::string& stack_bytes) {
  std::string type = visible(type_bytes), message = visible(message_bytes), worker = visible(worker_bytes),
              stack = visible(stack_bytes);
  // The order of Python's print: the remote traceback first, then the exception itself.
  std::string out = "\n\"\"\"\nRemote traceback (" + worker + ", pid " + std::to_string(pid) + "):\n";
  out += stack.empty() ? "  (stack not captured)\n" : stack;
  out += type + (message.empty() ? "" : ": " + message) + "\n\"\"\"\n";
  out += type + (message.empty() ? "" : ": " + message);
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
