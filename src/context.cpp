#include "mproc/context.hpp"

#include <unistd.h>

#include <mutex>
#include <optional>
#include <stdexcept>

#include "mproc/errors.hpp"
#include "pool/engine.hpp"
#include "process_state.hpp"

namespace mproc {
namespace {

constexpr const char* kNames[] = {"fork", "spawn", "forkserver", "mpi"};
constexpr int kMpi = 3;
constexpr int kDefault = 2;  // forkserver, as Python 3.14 on Linux

int parse_method(std::string_view name) {
  for (int i = 0; i < 4; ++i)
    if (name == kNames[i]) {
      if (i == kMpi && !detail::mpi_backend()) detail::throw_mpi_unavailable();
      return i;
    }
  throw std::invalid_argument("unknown start method '" + std::string(name) + "' (valid: fork, spawn, forkserver, mpi)");
}

std::mutex g_mu;
std::optional<int> g_method;  // set by set_start_method, or fixed by first use

}  // namespace

namespace detail {
const char* method_name(Method m) { return kNames[static_cast<int>(m)]; }

int start_method_setting() {
  std::lock_guard lock(g_mu);
  return g_method.value_or(-1);
}

void adopt_start_method_setting(int m) {
  std::lock_guard lock(g_mu);
  if (m >= 0 && m < 4) g_method = m;
}

void throw_mpi_unavailable() {
#ifdef MPROC_HAVE_MPI
  throw Error(
      "the mpi context is unavailable: this program does not link mproc's MPI backend (include <mproc/mpi.hpp> in "
      "the program and link the CMake target mproc::mpi)");
#else
  throw Error(
      "the mpi context is unavailable: mproc was built without MPI (install Debian's libopenmpi-dev and openmpi-bin, "
      "then build mproc again; scripts/install-deps does both)");
#endif
}
}  // namespace detail

Context::Context(std::string_view method) : method_(parse_method(method)) {}

std::string Context::get_start_method() const { return kNames[method_]; }

Context get_context(std::string_view method) {
  if (!method.empty()) return Context(method);
  return Context(get_start_method());
}

void set_start_method(std::string_view method, bool force) {
  int m = parse_method(method);
  std::lock_guard lock(g_mu);
  if (g_method && !force) throw Error("the start method has already been set (pass force = true to change it)");
  g_method = m;
}

std::string get_start_method() {
  std::lock_guard lock(g_mu);
  if (!g_method) g_method = kDefault;  // as Python: asking fixes the default
  return kNames[*g_method];
}

std::vector<std::string> get_all_start_methods() { return {"forkserver", "fork", "spawn"}; }

int cpu_count() {
  long n = ::sysconf(_SC_NPROCESSORS_ONLN);
  return n > 0 ? static_cast<int>(n) : 1;
}

}  // namespace mproc
