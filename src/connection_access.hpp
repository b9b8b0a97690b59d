// What the pool needs of a Connection beyond its public API: several frames per system call,
// and whether a whole frame is already read ahead. Not API.
#pragma once

#include <optional>
#include <span>
#include <string_view>

#include "mproc/connection.hpp"

namespace mproc::detail {

struct Slab;  // reduction/shm_payload.hpp

struct ConnectionAccess {
  /// Sends each part as one bytes frame (what send_bytes sends; recv_bytes and recv_buffer read
  /// them one by one), in as few system calls as the sizes allow: small frames go together in
  /// one sendmsg, a large one through shared memory as send_bytes does.
  static void send_bytes_many(Connection& c, std::span<const std::string_view> parts);
  /// Sends the first n bytes of slab's payload as one bytes frame, by passing the slab itself
  /// (no copy; c must be a Unix socket). Its receiver releases it; the caller must not write it
  /// until then.
  static void send_slab(Connection& c, Slab& slab, std::size_t n);
  /// True when the next recv is answered from bytes already read ahead, without a system call
  /// (and so without blocking).
  static bool frame_buffered(const Connection& c);
  /// The payload of the next frame when it is whole in the read-ahead buffer (not in shared
  /// memory): no copy, no allocation. Valid until the next call on c; consume() moves past it.
  /// An empty optional when the frame is not there (use recv_buffer).
  static std::optional<std::span<const std::byte>> peek_buffered(Connection& c);
  static void consume_buffered(Connection& c);
  /// Sets c's shared-memory threshold to bytes, unless MPROC_SHM_THRESHOLD chose one for every
  /// connection (the program's word wins over the pool's default).
  static void default_shm_threshold(Connection& c, std::size_t bytes);
  /// MPROC_SHM_THRESHOLD's value when set, else bytes.
  static std::size_t shm_threshold_or(std::size_t bytes);
};

}  // namespace mproc::detail
