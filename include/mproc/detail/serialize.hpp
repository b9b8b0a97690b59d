// Serialisation of values that cross a process boundary: cereal with two archives of our own.
// Not API: use Connection::send / recv and Process arguments instead.
#pragma once

#include <cereal/cereal.hpp>
#include <cereal/types/array.hpp>
#include <cereal/types/chrono.hpp>
#include <cereal/types/complex.hpp>
#include <cereal/types/deque.hpp>
#include <cereal/types/list.hpp>
#include <cereal/types/map.hpp>
#include <cereal/types/memory.hpp>
#include <cereal/types/optional.hpp>
#include <cereal/types/set.hpp>
#include <cereal/types/string.hpp>
#include <cereal/types/tuple.hpp>
#include <cereal/types/unordered_map.hpp>
#include <cereal/types/unordered_set.hpp>
#include <cereal/types/utility.hpp>
#include <cereal/types/variant.hpp>
#include <cereal/types/vector.hpp>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>

namespace mproc::detail {

/// Large buffers (from kLargeBuffer bytes) are about to be written whole: give them their memory
/// now, with a transparent-huge-page hint, so that it is faulted in 2 MiB at a time (in a virtual
/// machine a 4 KiB fault can cost more than copying the page). Not API.
constexpr std::size_t kLargeBuffer = std::size_t{4} << 20;
constexpr std::size_t kHugePage = std::size_t{2} << 20;  // x86-64's transparent huge page
void advise_huge(void* p, std::size_t n);
void reserve_large(std::string& s, std::size_t capacity);

/// Appends to a std::string: no iostream in the hot path.
class OutArchive : public cereal::OutputArchive<OutArchive, cereal::AllowEmptyClassElision> {
 public:
  explicit OutArchive(std::string& out) : OutputArchive(this), out_(out) {}
  void saveBinary(const void* data, std::size_t n) {
    if (n >= kLargeBuffer) reserve_large(out_, out_.size() + n);
    out_.append(static_cast<const char*>(data), n);
  }
  /// The string written to, for bulk writes in place.
  std::string& buffer() noexcept { return out_; }

 private:
  std::string& out_;
};

[[noreturn]] void throw_truncated_payload(std::size_t wanted, std::size_t left);
[[noreturn]] void throw_bad_length(std::uint64_t length, std::size_t left);
[[noreturn]] void throw_bad_bool(unsigned value);

/// Reads from a byte span and never past it. Bytes come from another process, so every length
/// is checked against what is left before anything is allocated.
class InArchive : public cereal::InputArchive<InArchive, cereal::AllowEmptyClassElision> {
 public:
  InArchive(const void* data, std::size_t n)
      : InputArchive(this), p_(static_cast<const unsigned char*>(data)), left_(n) {}
  void loadBinary(void* dst, std::size_t n) {
    if (n > left_) throw_truncated_payload(n, left_);
    if (n) std::memcpy(dst, p_, n);
    p_ += n;
    left_ -= n;
  }
  std::size_t left() const noexcept { return left_; }
  /// The next n bytes in place (checked as loadBinary is), for bulk reads without a copy.
  const unsigned char* take(std::size_t n) {
    if (n > left_) throw_truncated_payload(n, left_);
    const unsigned char* p = p_;
    p_ += n;
    left_ -= n;
    return p;
  }

 private:
  const unsigned char* p_;
  std::size_t left_;
};

template <class T>
std::enable_if_t<std::is_arithmetic_v<T>> CEREAL_SAVE_FUNCTION_NAME(OutArchive& ar, const T& t) {
  ar.saveBinary(std::addressof(t), sizeof(t));
}
template <class T>
std::enable_if_t<std::is_arithmetic_v<T> && !std::is_same_v<T, bool>> CEREAL_LOAD_FUNCTION_NAME(InArchive& ar, T& t) {
  ar.loadBinary(std::addressof(t), sizeof(t));
}
// A bool holding anything but 0 or 1 is undefined behaviour: check the byte.
template <class T>
std::enable_if_t<std::is_same_v<T, bool>> CEREAL_LOAD_FUNCTION_NAME(InArchive& ar, T& t) {
  unsigned char b = 0;
  ar.loadBinary(&b, 1);
  if (b > 1) throw_bad_bool(b);
  t = b != 0;
}
template <class Archive, class T>
CEREAL_ARCHIVE_RESTRICT(InArchive, OutArchive)
CEREAL_SERIALIZE_FUNCTION_NAME(Archive& ar, cereal::NameValuePair<T>& t) {
  ar(t.value);
}
template <class T>
void CEREAL_SAVE_FUNCTION_NAME(OutArchive& ar, const cereal::SizeTag<T>& t) {
  ar(t.size);
}
/// Counts up to this many pass even with no bytes left: elements of empty types take none.
constexpr std::uint64_t kFreeElements = 4096;

// Other elements take at least one byte on the wire, so a count much larger than the bytes left
// is a lie: refuse it before a container allocates for it.
template <class T>
void CEREAL_LOAD_FUNCTION_NAME(InArchive& ar, cereal::SizeTag<T>& t) {
  ar(t.size);
  auto n = static_cast<std::uint64_t>(t.size);
  if (n > ar.left() && n > kFreeElements) throw_bad_length(n, ar.left());
}
// Strings and vectors of numbers: their memory hinted before it is filled (reserve_large), else
// as cereal reads them.
template <class Traits, class Alloc>
void CEREAL_LOAD_FUNCTION_NAME(InArchive& ar, std::basic_string<char, Traits, Alloc>& str) {
  cereal::size_type size = 0;
  ar(cereal::make_size_tag(size));
  auto n = static_cast<std::size_t>(size);
  const auto* from = reinterpret_cast<const char*>(ar.take(n));
  if (n >= kLargeBuffer && n > str.capacity()) {
    std::basic_string<char, Traits, Alloc>().swap(str);
    str.reserve(n);
    advise_huge(str.data(), n);
  }
  str.assign(from, n);  // one pass: no zero fill before the copy
}
template <class T, class Alloc>
std::enable_if_t<std::is_arithmetic_v<T> && !std::is_same_v<T, bool>> CEREAL_LOAD_FUNCTION_NAME(InArchive& ar,
                                                                                                std::vector<T, Alloc>& v) {
  cereal::size_type size = 0;
  ar(cereal::make_size_tag(size));
  auto n = static_cast<std::size_t>(size);
  if (n > ar.left() / sizeof(T)) throw_bad_length(n, ar.left());
  if (n * sizeof(T) >= kLargeBuffer && n > v.capacity()) {
    std::vector<T, Alloc>().swap(v);
    v.reserve(n);
    advise_huge(v.data(), n * sizeof(T));
  }
  v.resize(n);
  ar.loadBinary(v.data(), n * sizeof(T));
}

template <class T>
void CEREAL_SAVE_FUNCTION_NAME(OutArchive& ar, const cereal::BinaryData<T>& bd) {
  ar.saveBinary(bd.data, static_cast<std::size_t>(bd.size));
}
template <class T>
void CEREAL_LOAD_FUNCTION_NAME(InArchive& ar, cereal::BinaryData<T>& bd) {
  ar.loadBinary(bd.data, static_cast<std::size_t>(bd.size));
}

/// A type's name as the compiler spells it, for messages and for the frame fingerprint.
template <class T>
constexpr std::string_view type_name() {
  std::string_view p = __PRETTY_FUNCTION__;  // "... [with T = NAME; std::string_view = ...]"
  auto start = p.find("T = ") + 4;
  auto end = p.find_first_of(";]", start);
  return p.substr(start, end - start);
}

/// FNV-1a of the type's name: the same type in the same binary gives the same number in every
/// process; a frame carries it so that recv<T> of another type is an error, not garbage.
constexpr std::uint64_t fingerprint_of(std::string_view name) {
  std::uint64_t h = 0xcbf29ce484222325ull;
  for (char c : name) h = (h ^ static_cast<unsigned char>(c)) * 0x100000001b3ull;
  return h | 1;  // 0 is reserved for raw bytes (send_bytes)
}
template <class T>
constexpr std::uint64_t type_fingerprint() {
  constexpr std::uint64_t h = fingerprint_of(type_name<T>());  // at compile time: not per message
  return h;
}

template <class T>
constexpr bool is_cereal_serializable =
    cereal::traits::is_output_serializable<T, OutArchive>::value && cereal::traits::is_input_serializable<T, InArchive>::value;

/// Trivially copyable user types without serialize() travel as their bytes (a memcpy), so
/// plain structs just work. Pointers never do: their value means nothing in another process.
template <class T>
constexpr bool is_memcpy_type = std::is_trivially_copyable_v<T> && !std::is_pointer_v<T> &&
                                !std::is_member_pointer_v<T> && !is_cereal_serializable<T>;

template <class T>
constexpr bool is_serializable = is_cereal_serializable<T> || is_memcpy_type<T>;

template <class T>
void check_serializable() {
  static_assert(!std::is_pointer_v<T>, "mproc: a raw pointer cannot cross a process boundary: its value means nothing in the other process. Pass the value itself.");
  static_assert(is_serializable<T>,
                "mproc: this type cannot cross a process boundary: give it a cereal serialize(Archive&) member (or load/save), or make it trivially copyable.");
}

/// Appends the encoding of v to out.
template <class T>
void encode(std::string& out, const T& v) {
  check_serializable<T>();
  if constexpr (is_memcpy_type<T>) {
    out.append(reinterpret_cast<const char*>(std::addressof(v)), sizeof(T));
  } else {
    OutArchive ar(out);
    ar(v);
  }
}

[[noreturn]] void throw_trailing_bytes(std::size_t left, std::string_view type);
[[noreturn]] void throw_decode_failed(std::string_view type, const char* why);

/// Decodes a T that fills exactly the given bytes.
template <class T>
T decode(const void* data, std::size_t n) {
  check_serializable<T>();
  static_assert(std::is_default_constructible_v<T>, "mproc: a type received from another process must be default-constructible");
  T v{};
  if constexpr (is_memcpy_type<T>) {
    if (n != sizeof(T)) throw_truncated_payload(sizeof(T), n);
    std::memcpy(static_cast<void*>(std::addressof(v)), data, sizeof(T));
  } else {
    InArchive ar(data, n);
    try {
      ar(v);
    } catch (const cereal::Exception& e) {  // e.g. a variant index out of range
      throw_decode_failed(type_name<T>(), e.what());
    }
    if (ar.left() != 0) throw_trailing_bytes(ar.left(), type_name<T>());
  }
  return v;
}

}  // namespace mproc::detail

CEREAL_REGISTER_ARCHIVE(mproc::detail::OutArchive)
CEREAL_REGISTER_ARCHIVE(mproc::detail::InArchive)
CEREAL_SETUP_ARCHIVE_TRAITS(mproc::detail::InArchive, mproc::detail::OutArchive)
