// What a rank of the mpi context decodes from another rank (src/mpi/protocol.hpp): a pool's
// start (Attach), the answer to it (Attached), a failed chunk's report (Failure), and the
// packed messages that carry many chunks or answers ([length: 8][bytes] each). The first byte
// picks the decoder, the rest is the message. Only mproc errors may come out, and a packed
// message's frames must lie inside it. (The decoders need no MPI: this builds without it.)
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "common.hpp"
#include "mpi/protocol.hpp"
#include "mpi/runtime_inl.hpp"
#include "mproc/errors.hpp"

namespace {

using namespace mproc::detail;
using namespace mproc::detail::mpi;

std::string with(char which, const std::string& message) { return std::string(1, which) + message; }

std::string packed(const std::vector<std::string>& frames) {
  std::string out;
  for (const auto& f : frames) {
    std::uint64_t n = f.size();
    out.append(reinterpret_cast<const char*>(&n), sizeof n);
    out += f;
  }
  return out;
}

std::vector<std::string> seeds() {
  Attach a;
  a.program = 0x1234;
  a.authkey = std::string(32, 'k');
  a.initializer = "saved initializer";
  a.maxtasks = 10;
  a.task_timeout = 1.5;
  a.max_retries = 2;
  a.break_on_crash = true;
  a.address_space = 1 << 30;
  std::string chunk(kChunkHeader, '\0');
  chunk[8] = 1;
  chunk += "task bytes";
  return {
      with(0, encoded(a)),
      with(0, encoded(Attach{})),
      with(1, encoded(Attached{"", 4242, "node1"})),
      with(1, encoded(Attached{"rank 2 on node2 runs another program", 7, "node2"})),
      with(2, encoded(Failure{Failure::remote, "std::runtime_error", "boom", "ForkServerPoolWorker-1", "  #0 f()\n", 99, 0})),
      with(2, encoded(Failure{Failure::crashed, {}, "", {}, {}, 100, -9})),
      with(3, packed({chunk, chunk, std::string(kChunkHeader, '\1')})),
      with(3, packed({})),
  };
}

template <class T>
void decode_only(const std::byte* data, std::size_t n) {
  T v = decode<T>(data, n);
  // Encoding what was decoded gives the same bytes back: nothing is read that was not there.
  std::string again = encoded(v);
  if (again.size() != n) {
    std::fprintf(stderr, "decoded %zu bytes but they encode to %zu\n", n, again.size());
    std::abort();
  }
}

}  // namespace

MPROC_FUZZ_SEEDS(seeds)

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* in, std::size_t size) {
  if (size == 0) return 0;
  auto data = reinterpret_cast<const std::byte*>(in + 1);
  const std::size_t n = size - 1;
  try {
    switch (in[0]) {
      case 0: decode_only<Attach>(data, n); break;
      case 1: decode_only<Attached>(data, n); break;
      case 2: decode_only<Failure>(data, n); break;
      case 3: {
        std::string message(reinterpret_cast<const char*>(data), n);
        std::size_t covered = 0, frames = 0;
        for_each_frame(message, [&](const char* p, std::size_t len) {
          if (p < message.data() || p + len > message.data() + message.size()) {
            std::fprintf(stderr, "a frame outside its message\n");
            std::abort();
          }
          covered += 8 + len;
          ++frames;
        });
        if (covered != message.size()) {
          std::fprintf(stderr, "%zu frames cover %zu of %zu bytes\n", frames, covered, message.size());
          std::abort();
        }
        break;
      }
      default: break;
    }
  } catch (const mproc::Error&) {
  }
  return 0;
}
