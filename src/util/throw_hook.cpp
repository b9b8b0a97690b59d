// Interposes the C++ runtime's throw so that the stack is taken where an exception starts: by
// the time a catch block runs, that stack is gone. Kept apart from <cxxabi.h>, whose declaration
// of __cxa_throw this definition must not meet.
#include <dlfcn.h>

#include <cstdlib>
#include <typeinfo>

namespace mproc::detail {
void capture_stack_at_throw(void* obj) noexcept;
// Referenced from stacktrace.cpp so that this object is always linked: from a static library the
// linker would otherwise take __cxa_throw from whichever shared library it met first (the
// sanitizer runtimes define it too) and leave the hook out.
void throw_hook_anchor() noexcept {}
}  // namespace mproc::detail

extern "C" [[noreturn]] void __cxa_throw(void* obj, std::type_info* type, void (*dest)(void*)) {
  using real_fn = void (*)(void*, std::type_info*, void (*)(void*));
  static const auto real = reinterpret_cast<real_fn>(dlsym(RTLD_NEXT, "__cxa_throw"));
  mproc::detail::capture_stack_at_throw(obj);
  real(obj, type, dest);
  std::abort();  // unreachable: the real __cxa_throw does not return
}
