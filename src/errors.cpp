#include "mproc/errors.hpp"

namespace mproc {
namespace {
std::string format_remote(const std::string& type, const std::string& message, const std::string& worker, int pid,
                          const std::string& stack) {
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
