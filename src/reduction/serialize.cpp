#include <sys/mman.h>

#include <cstdint>
#include <string>

#include "mproc/detail/serialize.hpp"
#include "mproc/errors.hpp"

namespace mproc::detail {

void advise_huge(void* p, std::size_t n) {
  if (n < 2 * kHugePage) return;
  auto first = (reinterpret_cast<std::uintptr_t>(p) + kHugePage - 1) & ~(kHugePage - 1);
  auto last = (reinterpret_cast<std::uintptr_t>(p) + n) & ~(kHugePage - 1);
  if (last > first) ::madvise(reinterpret_cast<void*>(first), last - first, MADV_HUGEPAGE);
}

void reserve_large(std::string& s, std::size_t capacity) {
  if (capacity <= s.capacity()) return;
  // Untouched memory for the whole (malloc maps a fresh block this large), hinted, then the
  // bytes already written are copied over.
  std::string bigger;
  bigger.reserve(capacity);
  advise_huge(bigger.data(), capacity);
  bigger.append(s);
  s.swap(bigger);
}

void throw_truncated_payload(std::size_t wanted, std::size_t left) {
  throw ProtocolError("malformed payload: needs " + std::to_string(wanted) + " more bytes, only " + std::to_string(left) + " left");
}

void throw_bad_length(std::uint64_t length, std::size_t left) {
  throw ProtocolError("malformed payload: a container claims " + std::to_string(length) + " elements with only " +
                      std::to_string(left) + " bytes left");
}

void throw_bad_bool(unsigned value) {
  throw ProtocolError("malformed payload: a bool holds " + std::to_string(value));
}

void throw_trailing_bytes(std::size_t left, std::string_view type) {
  throw ProtocolError("malformed payload: " + std::to_string(left) + " bytes left over after decoding " + std::string(type));
}

void throw_decode_failed(std::string_view type, const char* why) {
  throw ProtocolError("malformed payload for " + std::string(type) + ": " + why);
}

}  // namespace mproc::detail
