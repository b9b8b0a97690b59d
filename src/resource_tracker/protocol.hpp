// What the resource tracker and its clients say to each other. Not API.
//
// SOCK_SEQPACKET over an abstract Unix socket: every message is one datagram, so a message is
// never split or interleaved with another process's.
//
//   tracker -> client   "CHAL" pid:u32 challenge:32          the tracker's pid and a challenge
//   client  -> tracker  answer:32 challenge:32                HMAC(key, client label|challenge|pid)
//   tracker -> client   "OK.." answer:32 | "FAIL"             HMAC(key, server label|challenge|pid)
//   client  -> tracker  op:4 kind:u32 dev:u64 ino:u64 name    op "REG." or "UNRG", name 2..256 bytes;
//                                                             an UNRG with dev = ino = 0 forgets any file
//
// Nothing is answered after the handshake: a datagram that was sent is queued in the tracker's
// socket, and stays readable there even when its sender dies right after.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <map>
#include <string>
#include <utility>

#include "mproc/detail/fd_passing.hpp"
#include "mproc/detail/serialize.hpp"
#include "resource_tracker/resource_tracker.hpp"
#include "util/auth.hpp"

namespace mproc::detail::tracker {

constexpr std::size_t kChallenge = 32;
constexpr std::size_t kHelloSize = 4 + 4 + kChallenge;
constexpr std::size_t kReplySize = 32 + kChallenge;
constexpr std::size_t kVerdictSize = 4 + 32;
constexpr std::size_t kRequestHeader = 4 + 4 + 8 + 8;
constexpr std::size_t kMaxRequest = kRequestHeader + 1 + 255;
constexpr const char* kRegister = "REG.";
constexpr const char* kUnregister = "UNRG";

// Labels keep the two directions (and the fork server's handshake) apart: an answer cannot be
// reflected back as the other side's, nor replayed between the two services.
constexpr const char* kClientLabel = "mproc-resource-tracker-client:";
constexpr const char* kServerLabel = "mproc-resource-tracker-server:";

inline Digest answer(const char* label, const unsigned char* challenge, std::uint32_t tracker_pid) {
  std::string msg = label;
  msg.append(reinterpret_cast<const char*>(challenge), kChallenge);
  msg.append(reinterpret_cast<const char*>(&tracker_pid), sizeof tracker_pid);
  return hmac_sha256(authkey(), msg.data(), msg.size());
}

/// What the tracker holds: the names registered and not unregistered, each with the file it
/// named when it was registered.
using Registry = std::map<std::pair<ResourceKind, std::string>, os::FileIdentity>;

/// Registrations the tracker holds at most: an authenticated client could otherwise grow it
/// without end (names are up to 255 bytes: about 20 MiB at the limit). A program with this many
/// live segments and semaphores has leaked them.
constexpr std::size_t kMaxRegistered = 65536;

enum class RequestOutcome { applied, malformed, registry_full };

/// Applies one request as an authenticated peer sent it (one datagram, any bytes): a register
/// or an unregister. Changes nothing for a malformed request, or for a register of a new name
/// when kMaxRegistered are held. The tracker's only decoder of bytes from another process
/// (fuzz/fuzz_tracker_request.cpp).
RequestOutcome handle_request(Registry& registry, const unsigned char* request, std::size_t n);

/// A descriptor handed to the tracker process as an argument of its task.
struct PassedFd {
  int fd = -1;
  void save(OutArchive& ar) const { ar(export_fd(fd)); }
  void load(InArchive& ar) {
    int slot = -1;
    ar(slot);
    fd = import_fd(slot);
  }
};

/// The tracker's body, run in a spawned child of whichever process started it. listener is bound
/// and listening already (binding it is how the starter won the right to start the tracker).
void tracker_main(PassedFd listener, std::int32_t root_pid, std::uint64_t root_start);

}  // namespace mproc::detail::tracker
