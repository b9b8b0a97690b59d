// The start-up message a spawned or forkserver child reads first (fd 3, or from the fork
// server's socket): decode_frame<StartupMessage>, then the mproc::inherited values it carries
// (restore_inherited), as child_main does before the task (the task's decoder is fuzz_task's).
// Only mproc errors may come out: the child then says it cannot start, and exits.
#include <string>
#include <vector>

#include "common.hpp"
#include "inherited.hpp"
#include "mproc/errors.hpp"
#include "mproc/inherited.hpp"
#include "reduction/wire.hpp"
#include "spawn/spawn.hpp"

namespace {

using namespace mproc::detail;

// Variables whose values the message may carry: a value of the right key and type is loaded
// into them, one of another type is refused.
mproc::inherited<std::string> g_text{"fuzz.text"};
mproc::inherited<std::vector<std::int32_t>> g_numbers{"fuzz.numbers"};
mproc::inherited<std::map<std::string, double>> g_table{"fuzz.table"};

std::vector<std::string> seeds() {
  g_text.set("plugins");
  g_numbers.set({1, 2, 3});
  g_table.set({{"pi", 3.14}});
  StartupMessage m;
  m.authkey = std::string(32, 'k');
  m.name = "Process-1";
  m.identity = {1};
  m.parent_pid = 1234;
  m.parent_name = "MainProcess";
  m.start_method = 2;
  m.method_setting = 1;
  m.forkserver_address = "mproc-forkserver-1234";
  m.forkserver_pid = 1235;
  m.resource_tracker = {"mproc-tracker-1234", 1236, 1234, 99};
  m.nfds = 1;
  m.inherited = save_inherited();
  m.task = std::string(40, 't');
  std::vector<std::string> out = {encode_frame(m)};
  m.inherited.clear();
  m.identity = {1, 2, 3};
  m.daemon = true;
  out.push_back(encode_frame(m));
  return out;
}

}  // namespace

MPROC_FUZZ_SEEDS(seeds)

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t n) {
  try {
    auto msg = decode_frame<StartupMessage>(mproc_fuzz::bytes(data, n));
    restore_inherited(msg.inherited);
  } catch (const mproc::Error&) {
    // "child N cannot start: ..." and exit 255
  }
  return 0;
}
