// Payloads in shared memory: the payload of a frame flagged kFrameInMemfd (wire.hpp) is the whole
// content of a sealed memfd that travels beside the header as SCM_RIGHTS. The receiver checks
// the descriptor before it maps or reads anything: a mapping of a file that its sender can still
// shrink turns the receiver's reads into SIGBUS, and one it can still write changes under a
// reader that already validated it.
#pragma once

#include <cstdint>

namespace mproc::detail {

/// The seals a payload memfd must carry.
int required_payload_seals();

/// Returns when fd is a memfd sealed with at least F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE
/// that holds exactly length bytes. Otherwise throws ProtocolError naming the cause (not a
/// memfd, which seals are missing, the size it holds). Never closes fd.
void check_payload_memfd(int fd, std::uint64_t length);

}  // namespace mproc::detail
