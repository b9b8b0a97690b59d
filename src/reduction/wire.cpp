#include "reduction/wire.hpp"

#include <cstdio>
#include <string>

#include "mproc/errors.hpp"

namespace mproc::detail {

FrameHeader parse_header(const void* bytes, std::size_t max_length, std::uint16_t allowed_flags) {
  FrameHeader h;
  std::memcpy(&h, bytes, sizeof h);
  if (h.magic != kFrameMagic) {
    char buf[96];
    std::snprintf(buf, sizeof buf, "bytes on the channel are not an mproc frame (magic 0x%08x, expected 0x%08x)", h.magic,
                  kFrameMagic);
    throw ProtocolError(buf);
  }
  if (h.version != kFrameVersion)
    throw ProtocolError("mproc frame of version " + std::to_string(h.version) + " (this build speaks " +
                        std::to_string(kFrameVersion) + ")");
  if (h.flags & ~kKnownFrameFlags) {
    char buf[96];
    std::snprintf(buf, sizeof buf, "mproc frame with unknown flags 0x%04x", static_cast<unsigned>(h.flags));
    throw ProtocolError(buf);
  }
  if (h.flags & kFrameInMemfd) {
    if (!(allowed_flags & kFrameInMemfd))
      throw ProtocolError("an mproc frame whose payload is in shared memory arrived on a channel that cannot carry it");
    if (h.length == 0) throw ProtocolError("an mproc frame whose payload is in shared memory announces 0 bytes");
  }
  if (h.length > max_length)
    throw ProtocolError("mproc frame of " + std::to_string(h.length) + " bytes is over the limit of " +
                        std::to_string(max_length) + " bytes (Connection::set_max_message_size)");
  return h;
}

}  // namespace mproc::detail
