#include "util/stacktrace.hpp"

#include <cxxabi.h>
#include <dlfcn.h>

#include <atomic>
#include <boost/stacktrace.hpp>
#include <cstdlib>
#include <exception>
#include <initializer_list>
#include <memory>
#include <sstream>
#include <string_view>
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
// The qualified function name of a demangled frame: without the return type a template's name
// starts with, and without the parameter list.
std::string_view function_of(std::string_view name) {
  if (name.starts_with("decltype(auto) ")) name.remove_prefix(15);
  int depth = 0;
  std::size_t begin = 0;
  for (std::size_t i = 0; i < name.size(); ++i) {
    char c = name[i];
    if (c == '<') ++depth;
    if (c == '>' && depth > 0) --depth;
    if (depth == 0 && c == '(' && i > 0) return name.substr(begin, i - begin);
    if (depth == 0 && c == ' ') begin = i + 1;
  }
  return name.substr(begin);
}

bool starts_with_any(const std::string& name, std::initializer_list<std::string_view> prefixes) {
  auto fn = function_of(name);
  for (auto p : prefixes)
    if (fn.starts_with(p)) return true;
  return false;
}

// The frame that ran the task (or the child's target): what is below it is the same in every
// report and says nothing about the error.
bool is_machinery_floor(const std::string& name) {
  return starts_with_any(name, {"mproc::detail::run_saved_task", "mproc::detail::bootstrap"});
}

// std::invoke and std::function plumbing, and mproc's own call thunks, between the frame that
// ran the task and the user's function.
bool is_call_glue(const std::string& name) {
  return starts_with_any(name, {"std::__invoke", "std::invoke", "std::__apply_impl", "std::apply<",
                                "std::_Function_handler", "std::function<", "std::enable_if<is_invocable_r_v",
                                "mproc::detail::call_item<", "mproc::detail::map_chunk_thunk<",
                                "mproc::detail::invoke_thunk<"});
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
    std::size_t start = 0;  // the frames up to the hook are the capture machinery, not the user's
    for (std::size_t k = 0; k < t_stack->size() && k < 8; ++k)
      if ((*t_stack)[k].name().find("__cxa_throw") != std::string::npos) start = k + 1;
    for (std::size_t k = start; k < t_stack->size(); ++k) {
      const auto& f = (*t_stack)[k];
      std::string name = f.name();
      if (is_machinery_floor(name)) break;  // below this only mproc's own start-up runs
      if (is_call_glue(name)) continue;
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

