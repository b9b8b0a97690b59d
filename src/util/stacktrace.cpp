#include "util/stacktrace.hpp"

#include <cxxabi.h>
#include <dlfcn.h>

#include <atomic>
#include <boost/stacktrace.hpp>
#include <cstdlib>
#include <exception>
#include <memory>
#include <sstream>
#include <typeinfo>

namespace mproc::detail {
std::atomic<bool> g_capture{false};
thread_local std::unique_ptr<boost::stacktrace::stacktrace> t_stack;
thread_local void* t_thrown = nullptr;

void capture_stack_at_throw(void* obj) noexcept {
  static thread_local bool in_capture = false;  // a bad_alloc while capturing comes back here
  if (!g_capture.load(std::memory_order_relaxed) || in_capture) return;
  in_capture = true;
  try {
    t_stack = std::make_unique<boost::stacktrace::stacktrace>();
    t_thrown = obj;
  } catch (...) {  // out of memory while capturing: the exception goes on without a stack
    t_stack.reset();
  }
  in_capture = false;
}

namespace {

std::string demangle(const char* name) {
  int status = 0;
  std::unique_ptr<char, void (*)(void*)> d(abi::__cxa_demangle(name, nullptr, nullptr, &status), std::free);
  return status == 0 && d ? d.get() : name;
}
}  // namespace

void throw_hook_anchor() noexcept;

void capture_throw_stacks(bool on) {
  throw_hook_anchor();
  g_capture.store(on, std::memory_order_relaxed);
}

ExceptionReport report_current_exception() {
  ExceptionReport r;
  std::type_info* t = abi::__cxa_current_exception_type();
  r.type = t ? demangle(t->name()) : "unknown exception";
  void* obj = nullptr;
  try {
    throw;
  } catch (const std::exception& e) {
    r.what = e.what();
    obj = const_cast<void*>(dynamic_cast<const void*>(&e));
  } catch (...) {
  }
  // The captured stack belongs to this exception when the object matches; for non-class
  // exceptions (throw 42) the address is unknown and the latest throw on this thread is it.
  if (t_stack && (obj == nullptr || obj == t_thrown)) {
    std::ostringstream os;
    std::size_t i = 0;
    for (const auto& f : *t_stack) {
      std::string name = f.name();
      if (i == 0 && name.find("__cxa_throw") != std::string::npos) continue;  // the hook itself
      os << "  #" << i++ << " " << name;
      auto file = f.source_file();
      if (!file.empty()) os << " at " << file << ":" << f.source_line();
      os << "\n";
    }
    r.stack = os.str();
  }
  return r;
}

std::string format_report(const ExceptionReport& r, const std::string& header) {
  std::string out = header + "\n";
  out += r.stack.empty() ? "Stack: not captured\n" : "Stack (most recent call first):\n" + r.stack;
  out += r.type;
  if (!r.what.empty()) out += ": " + r.what;
  out += "\n";
  return out;
}

}  // namespace mproc::detail

