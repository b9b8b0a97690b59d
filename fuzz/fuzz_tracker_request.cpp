// The resource tracker's requests (handle_request, src/resource_tracker/server.cpp): what it
// makes of the datagrams an authenticated process of the program sends. The input is a series
// of requests, each a 2-byte little-endian length (taken modulo the largest datagram the tracker
// reads, plus one) and that many bytes. After each, the registry must hold only well-formed
// entries (a known kind, a valid name, a file identity), a malformed request must change
// nothing, and a register or unregister must have done exactly that.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "common.hpp"
#include "os/shm.hpp"
#include "resource_tracker/protocol.hpp"

namespace {

using namespace mproc::detail;
using namespace mproc::detail::tracker;

[[noreturn]] void broken(const char* what) {
  std::fprintf(stderr, "resource tracker registry: %s\n", what);
  std::abort();
}

std::string request(const char* op, std::uint32_t kind, std::uint64_t dev, std::uint64_t ino, const std::string& name) {
  std::string m(kRequestHeader, '\0');
  std::memcpy(m.data(), op, 4);
  std::memcpy(m.data() + 4, &kind, 4);
  std::memcpy(m.data() + 8, &dev, 8);
  std::memcpy(m.data() + 16, &ino, 8);
  m += name;
  auto n = static_cast<std::uint16_t>(m.size());
  return std::string(reinterpret_cast<const char*>(&n), 2) + m;
}

std::vector<std::string> seeds() {
  const std::uint32_t shm = 1, sem = 2;
  return {
      request(kRegister, shm, 42, 7, "/mproc_1_00ff"),
      request(kRegister, sem, 42, 8, "/mp-sem") + request(kUnregister, sem, 42, 8, "/mp-sem"),
      request(kRegister, shm, 1, 2, "/a") + request(kUnregister, shm, 0, 0, "/a"),
      request(kRegister, shm, 1, 2, "/a") + request(kUnregister, shm, 1, 3, "/a"),
      request(kRegister, shm, 1, 2, "/" + std::string(255, 'n')),
      request(kRegister, shm, 1, 2, "/a/b") + request(kRegister, 3, 1, 2, "/c") + request("JUNK", shm, 1, 2, "/d"),
      request(kRegister, shm, 0, 0, "/no-identity"),
      std::string("\x05\x00REG.x", 7),
  };
}

bool well_formed(const Registry& r) {
  for (const auto& [key, id] : r) {
    const auto& [kind, name] = key;
    if (kind != ResourceKind::shared_memory && kind != ResourceKind::semaphore) return false;
    if (!name.starts_with('/') || !mproc::os::shm_name_problem(name).empty() || !id) return false;
  }
  return true;
}

}  // namespace

MPROC_FUZZ_SEEDS(seeds)

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* in, std::size_t size) {
  Registry registry;
  std::size_t at = 0;
  while (at + 2 <= size) {
    std::uint16_t len;
    std::memcpy(&len, in + at, 2);
    at += 2;
    std::size_t n = std::min<std::size_t>(len % (kMaxRequest + 2), size - at);
    const unsigned char* m = in + at;
    at += n;
    Registry before = registry;
    bool ok = handle_request(registry, m, n) == RequestOutcome::applied;
    if (!well_formed(registry)) broken("an entry that is not a valid registration");
    if (!ok) {
      if (registry != before) broken("a malformed request changed it");
      continue;
    }
    std::uint32_t kind;
    mproc::os::FileIdentity id;
    std::memcpy(&kind, m + 4, 4);
    std::memcpy(&id.dev, m + 8, 8);
    std::memcpy(&id.ino, m + 16, 8);
    auto key = std::make_pair(static_cast<ResourceKind>(kind), std::string(reinterpret_cast<const char*>(m) + kRequestHeader, n - kRequestHeader));
    auto it = registry.find(key);
    if (std::memcmp(m, kRegister, 4) == 0) {
      if (it == registry.end() || it->second != id || registry.size() > before.size() + 1) broken("a register was not recorded");
    } else if (it != registry.end() && (!id || it->second == id)) {
      broken("an unregister left its registration");
    }
  }
  return 0;
}
