// mproc/sharedctypes.hpp — Python's multiprocessing.sharedctypes: Value, Array, RawValue,
// RawArray.
//
// The objects live in shared memory (an anonymous memfd): every copy of a handle, in this
// process or in a child it was passed to (under fork, spawn or forkserver), sees the same bytes.
// T must be trivially copyable and hold no pointers that matter: other processes read it as
// bytes. Value and Array come with an RLock (Python's default) for read-modify-write:
//
//     mproc::Value<int> counter(0);
//     // in any process that received counter:
//     {
//       std::scoped_lock guard(counter.get_lock());   // Python: with counter.get_lock():
//       ++counter.value();                            //           counter.value += 1
//     }
#pragma once

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <new>
#include <optional>
#include <span>
#include <type_traits>

#include "mproc/detail/serialize.hpp"
#include "mproc/synchronize.hpp"

namespace mproc {

/// Python's keyword argument of Value and Array.
struct ValueOptions {
  /// true: the object has its own RLock (get_lock()); false: it is raw, as RawValue.
  bool lock{true};
};
using ArrayOptions = ValueOptions;

namespace detail {

/// The untyped part of Value / Array: a block of count elements and maybe an RLock. Not API.
class SharedData {
 public:
  SharedData(bool array, std::size_t count, std::size_t elem_size, std::size_t elem_align, std::uint64_t type, bool lock);
  void* data() const noexcept { return data_; }
  std::size_t count() const noexcept { return count_; }
  /// Throws mproc::Error when the object was made without a lock.
  const RLock& get_lock() const;
  void save_data(OutArchive& ar) const;
  void load_data(InArchive& ar, bool array, std::size_t elem_size, std::size_t elem_align, std::uint64_t type);

 private:
  std::shared_ptr<Block> block_;
  void* data_ = nullptr;
  std::size_t count_ = 0;
  std::optional<RLock> lock_;
};

template <class T>
constexpr bool check_shared_type() {
  static_assert(std::is_trivially_copyable_v<T>,
                "mproc: a Value / Array element must be trivially copyable: other processes see it as bytes in "
                "shared memory");
  static_assert(!std::is_pointer_v<T> && !std::is_member_pointer_v<T>,
                "mproc: a pointer in shared memory means nothing to another process: store an index or the value");
  static_assert(alignof(T) <= 4096, "mproc: Value / Array elements may be aligned to at most a page");
  return true;
}

}  // namespace detail

/// Python: multiprocessing.Value. One T in shared memory with an RLock (unless .lock = false).
template <class T>
class Value {
 public:
  /// Value-initialised T. (Also what a handle is before it receives another in a child.)
  Value() : Value(T{}) {}
  explicit Value(const T& init, ValueOptions options = {})
      : d_(false, 1, sizeof(T), alignof(T), detail::type_fingerprint<T>(), options.lock) {
    ::new (d_.data()) T(init);
  }

  /// Python: .value. A reference into shared memory: other processes see writes through it.
  /// Take get_lock() around anything that is not a single atomic access.
  T& value() const noexcept { return *std::launder(static_cast<T*>(d_.data())); }
  /// Python: get_lock(). Throws mproc::Error for a Value made with .lock = false.
  const RLock& get_lock() const { return d_.get_lock(); }

  void save(detail::OutArchive& ar) const { d_.save_data(ar); }
  void load(detail::InArchive& ar) { d_.load_data(ar, false, sizeof(T), alignof(T), detail::type_fingerprint<T>()); }

 private:
  static_assert(detail::check_shared_type<T>());
  detail::SharedData d_;
};

/// Python: multiprocessing.RawValue. A Value without a lock.
template <class T>
class RawValue {
 public:
  RawValue() : RawValue(T{}) {}
  explicit RawValue(const T& init) : d_(false, 1, sizeof(T), alignof(T), detail::type_fingerprint<T>(), false) {
    ::new (d_.data()) T(init);
  }

  T& value() const noexcept { return *std::launder(static_cast<T*>(d_.data())); }

  void save(detail::OutArchive& ar) const { d_.save_data(ar); }
  void load(detail::InArchive& ar) { d_.load_data(ar, false, sizeof(T), alignof(T), detail::type_fingerprint<T>()); }

 private:
  static_assert(detail::check_shared_type<T>());
  detail::SharedData d_;
};

namespace detail {
/// Array and RawArray without the lock. Not API.
template <class T>
class ArrayBase {
 public:
  std::size_t size() const noexcept { return d_.count(); }
  /// Unchecked, as std::vector's.
  T& operator[](std::size_t i) const noexcept { return data()[i]; }
  T* data() const noexcept { return std::launder(static_cast<T*>(d_.data())); }
  std::span<T> span() const noexcept { return {data(), size()}; }
  T* begin() const noexcept { return data(); }
  T* end() const noexcept { return data() + size(); }

  void save(OutArchive& ar) const { d_.save_data(ar); }
  void load(InArchive& ar) { d_.load_data(ar, true, sizeof(T), alignof(T), type_fingerprint<T>()); }

 protected:
  ArrayBase(std::size_t n, bool lock) : d_(true, n, sizeof(T), alignof(T), type_fingerprint<T>(), lock) {
    // The memory is zero-filled, which is T{} for trivial types; build the others.
    if constexpr (!std::is_trivially_default_constructible_v<T>) std::uninitialized_value_construct_n(data(), n);
  }
  ArrayBase(std::span<const T> init, bool lock) : d_(true, init.size(), sizeof(T), alignof(T), type_fingerprint<T>(), lock) {
    std::uninitialized_copy(init.begin(), init.end(), static_cast<T*>(d_.data()));
  }

  static_assert(check_shared_type<T>());
  SharedData d_;
};
}  // namespace detail

/// Python: multiprocessing.Array. n elements of T in shared memory with an RLock (unless
/// .lock = false). Its size is fixed.
///
///     mproc::Array<double> a(1000);           // zero-filled (value-initialised)
///     mproc::Array<int> b{1, 2, 3};           // from a list (braces: the elements)
///     mproc::Array<int> c(values, {.lock = false});   // from a span / vector
template <class T>
class Array : public detail::ArrayBase<T> {
 public:
  /// An empty array (what a handle is before it receives another in a child).
  Array() : Array(std::size_t{0}) {}
  explicit Array(std::size_t n, ArrayOptions options = {}) : detail::ArrayBase<T>(n, options.lock) {}
  explicit Array(std::span<const T> init, ArrayOptions options = {}) : detail::ArrayBase<T>(init, options.lock) {}
  Array(std::initializer_list<T> init, ArrayOptions options = {})
      : detail::ArrayBase<T>(std::span<const T>(init.begin(), init.size()), options.lock) {}

  /// Python: get_lock(). Throws mproc::Error for an Array made with .lock = false.
  const RLock& get_lock() const { return this->d_.get_lock(); }
};

/// Python: multiprocessing.RawArray. An Array without a lock.
template <class T>
class RawArray : public detail::ArrayBase<T> {
 public:
  RawArray() : RawArray(std::size_t{0}) {}
  explicit RawArray(std::size_t n) : detail::ArrayBase<T>(n, false) {}
  explicit RawArray(std::span<const T> init) : detail::ArrayBase<T>(init, false) {}
  RawArray(std::initializer_list<T> init) : detail::ArrayBase<T>(std::span<const T>(init.begin(), init.size()), false) {}
};

}  // namespace mproc
