// The frame: a fixed 24-byte header, then the payload. Everything that reads one from another
// process goes through parse_header, so the checks live in one place.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

#include "mproc/detail/serialize.hpp"
#include "mproc/errors.hpp"

namespace mproc::detail {

constexpr std::uint32_t kFrameMagic = 0x4352504d;  // "MPRC" little-endian
constexpr std::uint16_t kFrameVersion = 1;
constexpr std::size_t kFrameHeaderSize = 24;
/// Type fingerprint of raw bytes (send_bytes); typed frames never use it.
constexpr std::uint64_t kBytesType = 0;

/// Frame flags (the high half of what was a 32-bit version word, so a frame without flags has
/// the same bytes as before flags existed).
/// kFrameInMemfd: the payload is not in the stream. It is the whole content of a sealed memfd
/// that travels with the header's bytes as SCM_RIGHTS; length is its size. Only Unix sockets
/// can carry it, and only when the receiver accepts it.
constexpr std::uint16_t kFrameInMemfd = 1;
constexpr std::uint16_t kKnownFrameFlags = kFrameInMemfd;

struct FrameHeader {
  std::uint32_t magic;
  std::uint16_t version;
  std::uint16_t flags;
  std::uint64_t type;
  std::uint64_t length;
};
static_assert(sizeof(FrameHeader) == kFrameHeaderSize);

inline void write_header(void* at, std::uint64_t type, std::uint64_t length, std::uint16_t flags = 0) {
  FrameHeader h{kFrameMagic, kFrameVersion, flags, type, length};
  std::memcpy(at, &h, sizeof h);
}

/// Throws ProtocolError naming what is wrong: not a frame, unknown version, unknown flags, a
/// flag outside allowed_flags, a shared-memory frame that is empty, or a length over max.
FrameHeader parse_header(const void* bytes, std::size_t max_length, std::uint16_t allowed_flags = 0);

/// One whole frame holding obj (for messages that travel in one piece, such as a start-up message).
template <class T>
std::string encode_frame(const T& obj) {
  std::string frame(kFrameHeaderSize, '\0');
  encode(frame, obj);
  write_header(frame.data(), type_fingerprint<T>(), frame.size() - kFrameHeaderSize);
  return frame;
}

/// The T in a whole frame; ProtocolError when the bytes are not exactly one frame holding a T.
template <class T>
T decode_frame(const std::string& frame) {
  if (frame.size() < kFrameHeaderSize) throw ProtocolError("message is shorter than a frame header");
  FrameHeader h = parse_header(frame.data(), frame.size() - kFrameHeaderSize);
  if (h.type != type_fingerprint<T>() || h.length != frame.size() - kFrameHeaderSize)
    throw ProtocolError("message is not one frame holding " + std::string(type_name<T>()));
  return decode<T>(frame.data() + kFrameHeaderSize, frame.size() - kFrameHeaderSize);
}

}  // namespace mproc::detail
