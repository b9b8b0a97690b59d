// How Queue<T> turns an item into bytes in the ring and back. Not API: see queues.hpp.
//
// Three encodings, chosen at compile time, each copying the item's bytes once on the way in
// and once on the way out where it can:
//  - trivially copyable T: its bytes;
//  - std::string and std::vector of arithmetic elements: a 64-bit element count, then the
//    elements, written straight from the container into the ring and read straight from the
//    ring into the new container, even when the item is larger than the ring and streams
//    through it in chunks;
//  - anything else: cereal (serialize.hpp), encoded into a per-thread buffer that is reused.
//    An item that fits in one record is decoded in place from the ring.
#pragma once

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "mproc/detail/serialize.hpp"

namespace mproc::detail {

/// Receives one item from the ring: whole() when it is in one record (the bytes are valid only
/// during the call), else begin(total), part() for each chunk in order, end().
class ItemSink {
 public:
  virtual void whole(const std::byte* p, std::size_t n) = 0;
  virtual void begin(std::size_t total) = 0;
  virtual void part(const std::byte* p, std::size_t n) = 0;
  virtual void end() = 0;

 protected:
  ~ItemSink() = default;
};

/// Types that travel as their bytes: what encode() does for them too, without the archive.
template <class T>
constexpr bool is_raw_item = is_memcpy_type<T> || (std::is_arithmetic_v<T> && !std::is_same_v<T, bool>);

template <class T>
struct is_byte_container : std::false_type {};
template <>
struct is_byte_container<std::string> : std::true_type {};
template <class U, class A>
struct is_byte_container<std::vector<U, A>>
    : std::bool_constant<std::is_arithmetic_v<U> && !std::is_same_v<U, bool>> {};

[[noreturn]] void throw_bad_queue_item(const char* why);

/// Keeps the per-thread encoding buffer from holding on to the memory of one huge item.
inline void trim_buffer(std::string& buf) {
  if (buf.capacity() > (std::size_t{4} << 20)) std::string().swap(buf);
}

template <class Core, class T>
void put_item(const Core& core, const T& item, bool block, std::optional<std::chrono::duration<double>> timeout) {
  check_serializable<T>();
  if constexpr (is_byte_container<T>::value) {
    const std::uint64_t count = item.size();
    const std::array<std::span<const std::byte>, 2> parts{
        std::as_bytes(std::span(&count, 1)), std::as_bytes(std::span(item.data(), item.size()))};
    core.put(parts, block, timeout);
  } else if constexpr (is_raw_item<T>) {
    const std::array<std::span<const std::byte>, 1> parts{std::as_bytes(std::span(std::addressof(item), 1))};
    core.put(parts, block, timeout);
  } else {
    thread_local std::string buf;
    buf.clear();
    encode(buf, item);
    const std::array<std::span<const std::byte>, 1> parts{std::as_bytes(std::span(buf.data(), buf.size()))};
    try {
      core.put(parts, block, timeout);
    } catch (...) {
      trim_buffer(buf);
      throw;
    }
    trim_buffer(buf);
  }
}

/// Sink for std::string / std::vector<arithmetic>: element count, then the elements.
template <class T>
class ContainerSink final : public ItemSink {
 public:
  using Elem = typename T::value_type;
  std::optional<T> out;

  void whole(const std::byte* p, std::size_t n) override {
    begin(n);
    part(p, n);
    end();
  }
  void begin(std::size_t total) override {
    if (total < sizeof(std::uint64_t)) throw_bad_queue_item("a container item without its element count");
    total_ = total;
    got_ = 0;
    out.emplace();
  }
  void part(const std::byte* p, std::size_t n) override {
    if (n > total_ - got_) throw_bad_queue_item("more bytes than the item announced");
    while (n > 0 && got_ < sizeof count_) {  // the count may arrive split, in principle
      reinterpret_cast<std::byte*>(&count_)[got_++] = *p++;
      --n;
      if (got_ == sizeof count_) {
        if (count_ != (total_ - sizeof count_) / sizeof(Elem) || (total_ - sizeof count_) % sizeof(Elem) != 0)
          throw_bad_queue_item("a container's element count does not match its bytes");
        out->resize(static_cast<std::size_t>(count_));
      }
    }
    if (n == 0) return;
    std::memcpy(reinterpret_cast<std::byte*>(out->data()) + (got_ - sizeof count_), p, n);
    got_ += n;
  }
  void end() override {
    if (got_ != total_) throw_bad_queue_item("an item ended before its announced size");
  }

 private:
  std::size_t total_ = 0, got_ = 0;
  std::uint64_t count_ = 0;
};

/// Sink for everything else: decode() from the ring, or from the reassembled chunks.
template <class T>
class DecodeSink final : public ItemSink {
 public:
  std::optional<T> out;

  void whole(const std::byte* p, std::size_t n) override {
    if constexpr (is_raw_item<T>) {
      if (n != sizeof(T)) throw_bad_queue_item("an item of another size than its type");
      out.emplace();
      std::memcpy(static_cast<void*>(std::addressof(*out)), p, sizeof(T));
    } else {
      out.emplace(decode<T>(p, n));
    }
  }
  void begin(std::size_t total) override {
    buf_.clear();
    buf_.reserve(total);
  }
  void part(const std::byte* p, std::size_t n) override { buf_.append(reinterpret_cast<const char*>(p), n); }
  void end() override { out.emplace(decode<T>(buf_.data(), buf_.size())); }

 private:
  std::string buf_;
};

template <class T, class Core>
T get_item(const Core& core, bool block, std::optional<std::chrono::duration<double>> timeout) {
  check_serializable<T>();
  std::conditional_t<is_byte_container<T>::value, ContainerSink<T>, DecodeSink<T>> sink;
  core.get(sink, block, timeout);
  return std::move(*sink.out);
}

}  // namespace mproc::detail
