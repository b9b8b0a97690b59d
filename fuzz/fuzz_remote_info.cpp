// A pool worker's error report (RemoteInfo, src/pool/remote_info.hpp) as the parent decodes it
// into the RemoteError that the task's caller gets: the remote type, message, worker, pid and
// stack. The whole input is the report. Only mproc errors may come out (the task then fails
// with them), and a decoded report keeps every field it carried.
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "common.hpp"
#include "mproc/errors.hpp"
#include "pool/remote_info.hpp"

namespace {

using namespace mproc::detail;

std::string report(RemoteInfo info) {
  std::string out;
  encode(out, info);
  return out;
}

std::vector<std::string> seeds() {
  return {
      report({"std::runtime_error", "boom", "ForkPoolWorker-1", "  #0 f() at task.cpp:3\n", 1234}),
      report({"int", "", "SpawnPoolWorker-2", "", 7}),
      report({"mproc::OSError", "open: Too many open files (EMFILE)", "ForkServerPoolWorker-3",
              std::string(300, 's'), 0x7fffffff}),
      report({"", "", "", "", -1}),
      report({"std::bad_alloc", std::string(1, '\0') + "x\n\"\"\"", "w", "", 1}),
  };
}

}  // namespace

MPROC_FUZZ_SEEDS(seeds)

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* in, std::size_t size) {
  auto data = reinterpret_cast<const std::byte*>(in);
  try {
    mproc::RemoteError e = remote_error_from(data, size);
    // What the caller reads must be what the worker sent: a what() that names the type, the
    // message and the worker (a NUL shown as \0: what() ends at the first NUL).
    std::string what = e.what();
    auto shown = [&](const std::string& field) {
      std::string out;
      for (char c : field) {
        if (c == '\0')
          out += "\\0";
        else
          out += c;
      }
      return what.find(out) != std::string::npos;
    };
    if (!shown(e.type()) || !shown(e.message()) || !shown(e.worker())) {
      std::fprintf(stderr, "RemoteError::what() lost a field\n");
      std::abort();
    }
  } catch (const mproc::Error&) {
    // not a whole report: the task fails with this error instead
  }
  return 0;
}
