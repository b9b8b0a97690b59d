// ShareableList (CPython's shared_memory.ShareableList) with a layout of its own:
//
//   header   magic "MPSL":u32 version:u32 count:u64 size:u64 reserved:u64          32 bytes
//   slots    count x { type:u32 length:u32 offset:u64 capacity:u64 }               24 bytes each
//   data     each item's storage at its offset, 8-aligned, capacity bytes
//
// offset and capacity are fixed at creation; type and length change with set(). A string keeps
// its length, so bytes ending in NUL survive (Python strips them). The segment is shared with
// other processes, so nothing read from it is trusted: offsets and capacities are checked once
// at attach and kept here, type and length are checked on every read.
#include <atomic>
#include <bit>
#include <cstring>
#include <limits>

#include "mproc/shared_memory.hpp"

namespace mproc {
namespace detail {

namespace {
constexpr std::uint32_t kMagic = 0x4c53504d;  // "MPSL" little-endian
constexpr std::uint32_t kVersion = 1;
constexpr std::size_t kHeader = 32;
constexpr std::size_t kSlot = 24;
enum Type : std::uint32_t { none = 0, int64 = 1, float64 = 2, boolean = 3, str = 4, bytes = 5 };

// Scalars other processes may write at the same time go through atomic_ref: a racing reader sees
// an old or a new value, never a torn one. (Strings are plain bytes: guard them with a Lock.)
template <class T>
T read_shared(const std::byte* p) {
  return std::atomic_ref<T>(*reinterpret_cast<T*>(const_cast<std::byte*>(p))).load(std::memory_order_acquire);
}
template <class T>
void write_shared(std::byte* p, T v) {
  std::atomic_ref<T>(*reinterpret_cast<T*>(p)).store(v, std::memory_order_release);
}
}  // namespace

struct ShareableListImpl {
  SharedMemory shm;
  std::vector<std::uint64_t> offset, capacity;  // validated copies of the slots' fixed fields

  std::byte* base() const { return shm.buf().data(); }
  std::byte* slot(std::size_t i) const { return base() + kHeader + kSlot * i; }
};

}  // namespace detail

namespace {

using detail::Type;

std::size_t storage_for(const ShareableValue& v) {
  // Python's rule: 8 bytes, or 8 * (n // 8 + 1) for a str or bytes of n bytes.
  if (auto* s = std::get_if<std::string>(&v)) return 8 * (s->size() / 8 + 1);
  if (auto* b = std::get_if<Bytes>(&v)) return 8 * (b->size() / 8 + 1);
  return 8;
}

[[noreturn]] void corrupt(const SharedMemory& shm, const std::string& why) {
  throw ValueError("shared memory segment '" + shm.name() + "' does not hold a valid ShareableList: " + why);
}

void validate_and_cache(detail::ShareableListImpl& l) {
  const std::size_t size = l.shm.size();
  const std::byte* b = l.base();
  if (size < detail::kHeader) corrupt(l.shm, "too small for its header");
  if (detail::read_shared<std::uint32_t>(b) != detail::kMagic) corrupt(l.shm, "no ShareableList header");
  if (detail::read_shared<std::uint32_t>(b + 4) != detail::kVersion) corrupt(l.shm, "unknown layout version");
  auto count = detail::read_shared<std::uint64_t>(b + 8);
  if (count > (size - detail::kHeader) / detail::kSlot) corrupt(l.shm, "its item count does not fit in it");
  std::uint64_t end = detail::kHeader + detail::kSlot * count;  // data starts here
  l.offset.resize(count);
  l.capacity.resize(count);
  for (std::size_t i = 0; i < count; ++i) {
    auto off = detail::read_shared<std::uint64_t>(l.slot(i) + 8);
    auto cap = detail::read_shared<std::uint64_t>(l.slot(i) + 16);
    if (off < end || off % 8 != 0 || cap < 8 || cap > size || off > size - cap)
      corrupt(l.shm, "item " + std::to_string(i) + " lies outside its segment or over another item");
    l.offset[i] = off;
    l.capacity[i] = cap;
    end = off + cap;
  }
}

void write_item(detail::ShareableListImpl& l, std::size_t i, const ShareableValue& v) {
  std::byte* s = l.slot(i);
  std::byte* data = l.base() + l.offset[i];
  auto set_scalar = [&](Type t, std::uint64_t bits) {
    detail::write_shared<std::uint64_t>(data, bits);
    detail::write_shared<std::uint32_t>(s + 4, 0);
    detail::write_shared<std::uint32_t>(s, t);
  };
  auto set_blob = [&](Type t, const void* p, std::size_t n) {
    if (n > l.capacity[i])
      throw ValueError("bytes/str item exceeds available storage (" + std::to_string(n) + " bytes for " +
                       std::to_string(l.capacity[i]) + " at index " + std::to_string(i) + ")");
    if (n) std::memcpy(data, p, n);
    detail::write_shared<std::uint32_t>(s + 4, static_cast<std::uint32_t>(n));
    detail::write_shared<std::uint32_t>(s, t);
  };
  std::visit(
      [&](const auto& x) {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, std::nullptr_t>) set_scalar(detail::none, 0);
        else if constexpr (std::is_same_v<T, std::int64_t>) set_scalar(detail::int64, static_cast<std::uint64_t>(x));
        else if constexpr (std::is_same_v<T, double>) set_scalar(detail::float64, std::bit_cast<std::uint64_t>(x));
        else if constexpr (std::is_same_v<T, bool>) set_scalar(detail::boolean, x ? 1 : 0);
        else if constexpr (std::is_same_v<T, std::string>) set_blob(detail::str, x.data(), x.size());
        else set_blob(detail::bytes, x.data(), x.size());
      },
      v);
}

// Writes the header, the slots and the items into a new segment.
void fill(detail::ShareableListImpl& l, const std::vector<ShareableValue>& sequence, std::vector<std::uint64_t>& offset,
          std::vector<std::uint64_t>& capacity) {
  const std::uint64_t n = sequence.size();
  const std::uint64_t size = l.shm.size();
  std::byte* b = l.base();
  detail::write_shared<std::uint64_t>(b + 8, n);
  detail::write_shared<std::uint64_t>(b + 16, size);
  for (std::size_t i = 0; i < n; ++i) {
    detail::write_shared<std::uint64_t>(l.slot(i) + 8, offset[i]);
    detail::write_shared<std::uint64_t>(l.slot(i) + 16, capacity[i]);
  }
  l.offset = std::move(offset);
  l.capacity = std::move(capacity);
  for (std::size_t i = 0; i < n; ++i) write_item(l, i, sequence[i]);
  // Last: a process that attaches by a name it guessed sees a complete list or none.
  detail::write_shared<std::uint32_t>(b + 4, detail::kVersion);
  detail::write_shared<std::uint32_t>(b, detail::kMagic);
}
}  // namespace

ShareableList::ShareableList(const std::vector<ShareableValue>& sequence, ShareableListOptions options)
    : impl_(std::make_shared<detail::ShareableListImpl>()) {
  const std::uint64_t n = sequence.size();
  if (n > (std::numeric_limits<std::uint32_t>::max)()) throw ValueError("a ShareableList holds at most 2^32 - 1 items");
  std::uint64_t size = detail::kHeader + detail::kSlot * n;
  std::vector<std::uint64_t> offset(n), capacity(n);
  for (std::size_t i = 0; i < n; ++i) {
    capacity[i] = storage_for(sequence[i]);
    if (capacity[i] > (std::numeric_limits<std::uint32_t>::max)()) throw ValueError("a ShareableList item is limited to 4 GiB");
    offset[i] = size;
    size += capacity[i];
  }
  auto& l = *impl_;
  l.shm = SharedMemory({.name = options.name, .create = true, .size = size, .track = options.track});
  try {
    fill(l, sequence, offset, capacity);
  } catch (...) {  // out of memory: do not leave a half-made list behind
    l.shm.unlink();
    throw;
  }
}

ShareableList ShareableList::attach(const std::string& name) {
  ShareableList out;
  out.impl_ = std::make_shared<detail::ShareableListImpl>();
  out.impl_->shm = SharedMemory({.name = name});
  validate_and_cache(*out.impl_);
  return out;
}

detail::ShareableListImpl& ShareableList::impl() const {
  if (!impl_) throw ValueError("empty ShareableList handle (default-constructed)");
  return *impl_;
}

namespace {
std::size_t position(const detail::ShareableListImpl& l, std::ptrdiff_t i) {
  auto n = static_cast<std::ptrdiff_t>(l.offset.size());
  std::ptrdiff_t p = i < 0 ? i + n : i;
  if (p < 0 || p >= n) throw IndexError("ShareableList index " + std::to_string(i) + " out of range (size " + std::to_string(n) + ")");
  return static_cast<std::size_t>(p);
}
}  // namespace

ShareableValue ShareableList::operator[](std::ptrdiff_t i) const {
  auto& l = impl();
  std::size_t p = position(l, i);
  const std::byte* s = l.slot(p);
  const std::byte* data = l.base() + l.offset[p];
  auto type = detail::read_shared<std::uint32_t>(s);
  auto length = detail::read_shared<std::uint32_t>(s + 4);
  switch (type) {
    case detail::none: return nullptr;
    case detail::int64: return static_cast<std::int64_t>(detail::read_shared<std::uint64_t>(data));
    case detail::float64: return std::bit_cast<double>(detail::read_shared<std::uint64_t>(data));
    case detail::boolean: return detail::read_shared<std::uint64_t>(data) != 0;
    case detail::str:
    case detail::bytes:
      if (length > l.capacity[p]) corrupt(l.shm, "item " + std::to_string(p) + " claims more bytes than its storage");
      if (type == detail::str) return std::string(reinterpret_cast<const char*>(data), length);
      return Bytes(data, data + length);
  }
  corrupt(l.shm, "item " + std::to_string(p) + " has unknown type code " + std::to_string(type));
}

void ShareableList::set(std::ptrdiff_t i, const ShareableValue& value) {
  auto& l = impl();
  write_item(l, position(l, i), value);
}

std::size_t ShareableList::size() const { return impl().offset.size(); }

std::size_t ShareableList::count(const ShareableValue& value) const {
  std::size_t n = 0;
  for (std::size_t i = 0; i < size(); ++i) n += (*this)[static_cast<std::ptrdiff_t>(i)] == value;
  return n;
}

std::size_t ShareableList::index(const ShareableValue& value) const {
  for (std::size_t i = 0; i < size(); ++i)
    if ((*this)[static_cast<std::ptrdiff_t>(i)] == value) return i;
  throw ValueError("value not in this ShareableList");
}

std::vector<ShareableValue> ShareableList::to_vector() const {
  std::vector<ShareableValue> out;
  for (std::size_t i = 0; i < size(); ++i) out.push_back((*this)[static_cast<std::ptrdiff_t>(i)]);
  return out;
}

SharedMemory ShareableList::shm() const { return impl().shm; }

void ShareableList::save(detail::OutArchive& ar) const { ar(impl().shm.name()); }

void ShareableList::load(detail::InArchive& ar) {
  std::string name;
  ar(name);
  *this = attach(name);
}

}  // namespace mproc
