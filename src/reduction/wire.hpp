// The frame: a fixed 24-byte header, then the payload. Everything that reads one from another
// process goes through parse_header, so the checks live in one place.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

namespace mproc::detail {

constexpr std::uint32_t kFrameMagic = 0x4352504d;  // "MPRC" little-endian
constexpr std::uint32_t kFrameVersion = 1;
constexpr std::size_t kFrameHeaderSize = 24;
/// Type fingerprint of raw bytes (send_bytes); typed frames never use it.
constexpr std::uint64_t kBytesType = 0;

struct FrameHeader {
  std::uint32_t magic;
  std::uint32_t version;
  std::uint64_t type;
  std::uint64_t length;
};
static_assert(sizeof(FrameHeader) == kFrameHeaderSize);

inline void write_header(void* at, std::uint64_t type, std::uint64_t length) {
  FrameHeader h{kFrameMagic, kFrameVersion, type, length};
  std::memcpy(at, &h, sizeof h);
}

/// Throws ProtocolError naming what is wrong: not a frame, unknown version, or a length over max.
FrameHeader parse_header(const void* bytes, std::size_t max_length);

}  // namespace mproc::detail
