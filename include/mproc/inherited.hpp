// mproc/inherited.hpp — global state that is explicit and the same under every start method.
//
// The seed's bug: a registry kept in a plain global is set under fork and empty under spawn.
//
//   mproc::inherited<Registry> registry{"registry"};          // namespace scope
//   mproc::per_process<Plugins> plugins{[] { return load_plugins(); }};
//
//   int main(int argc, char** argv) {
//     mproc::init(argc, argv);
//     registry.set(load_registry());   // every child started from now on sees this value
//     ...                              // in a worker: registry->process(i), plugins->call(i)
//   }
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <new>
#include <optional>
#include <source_location>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

#include "mproc/detail/serialize.hpp"

namespace mproc {

namespace detail {

/// The registry entry behind one inherited<T>: how to write its value into a child's start-up
/// message and read it back there.
class InheritedBase {
 public:
  InheritedBase(std::string_view name, std::source_location where, std::uint64_t fingerprint, std::string_view type);
  ~InheritedBase();
  InheritedBase(const InheritedBase&) = delete;
  InheritedBase& operator=(const InheritedBase&) = delete;

  /// "name" (or "file:line" when unnamed): the key that finds this variable in a child.
  const std::string& key() const noexcept { return key_; }
  std::uint64_t fingerprint() const noexcept { return fingerprint_; }
  virtual bool has_value() const noexcept = 0;
  virtual void save(std::string& out) const = 0;
  virtual void load(const char* data, std::size_t n) = 0;
  virtual void clear() noexcept = 0;

 protected:
  /// Restores a value that reached this process before this variable was constructed (a static
  /// local, or one in a library initialised late); called at the end of the derived constructor.
  void adopt_pending();
  /// Leaves the registry; the derived destructor calls it first, so that no process start can
  /// reach a half-destroyed value. Idempotent.
  void unregister() noexcept;
  [[noreturn]] void throw_unset() const;

 private:
  bool registered_ = true;
  std::string key_;
  std::string where_;
  std::string type_;
  std::uint64_t fingerprint_;
};

/// The registry entry behind one per_process<T>: reset in a forked child, which must build its own.
class PerProcessBase {
 public:
  PerProcessBase();
  ~PerProcessBase();
  PerProcessBase(const PerProcessBase&) = delete;
  PerProcessBase& operator=(const PerProcessBase&) = delete;
  /// In a fresh fork child, single-threaded: forget the parent's object without destroying it
  /// (its destructor could act on resources that are still the parent's) and unlock.
  virtual void forget_after_fork() noexcept = 0;
};

}  // namespace detail

/// A global whose value every child receives under every start method: serialised into the
/// start-up message under spawn and forkserver, copied with the memory under fork. A child sees
/// the value as it was when the child was started (as fork would show it); later set() calls in
/// the parent reach only children started afterwards. Reading one that was never set throws
/// mproc::StateError naming the variable, the process and its start method. Define it at namespace
/// scope so that every process constructs it; T must cross a process boundary (cereal
/// serialize(), or trivially copyable). Access is not synchronised, as with any global: set it
/// before starting children or threads that read it.
template <class T>
class inherited : detail::InheritedBase {
 public:
  explicit inherited(std::string_view name = {}, std::source_location where = std::source_location::current())
      : InheritedBase(name, where, detail::type_fingerprint<T>(), detail::type_name<T>()) {
    detail::check_serializable<T>();
    adopt_pending();
  }
  ~inherited() { unregister(); }

  void set(T v) { value_ = std::move(v); }
  inherited& operator=(T v) {
    set(std::move(v));
    return *this;
  }
  template <class... A>
  T& emplace(A&&... a) {
    return value_.emplace(std::forward<A>(a)...);
  }
  void reset() noexcept { value_.reset(); }

  bool has_value() const noexcept override { return value_.has_value(); }
  explicit operator bool() const noexcept { return has_value(); }
  T& get() {
    if (!value_) throw_unset();
    return *value_;
  }
  const T& get() const {
    if (!value_) throw_unset();
    return *value_;
  }
  T& operator*() { return get(); }
  const T& operator*() const { return get(); }
  T* operator->() { return &get(); }
  const T* operator->() const { return &get(); }

  using InheritedBase::key;

 private:
  void save(std::string& out) const override { detail::encode(out, *value_); }
  void load(const char* data, std::size_t n) override { value_ = detail::decode<T>(data, n); }
  void clear() noexcept override { value_.reset(); }

  std::optional<T> value_;
};

/// An object built lazily, once in each process that uses it (a plugin registry loaded once per
/// worker): Python's Pool initializer pattern without a global pointer. The factory runs at the
/// first access in a process, under a lock; a child started with fork does not share its
/// parent's object but builds its own (the parent's copy is left alone, not destroyed).
template <class T>
class per_process : detail::PerProcessBase {
 public:
  template <class F>
    requires std::is_same_v<std::remove_cv_t<std::invoke_result_t<F&>>, T> || std::is_convertible_v<std::invoke_result_t<F&>, T>
  explicit per_process(F factory)
      : build_([f = std::move(factory)]() mutable { return new T(f()); }) {}  // new T(prvalue): T need not be movable
  ~per_process() { delete object_.load(std::memory_order_relaxed); }

  T& get() {
    if (T* p = object_.load(std::memory_order_acquire)) return *p;
    std::lock_guard lock(mu_);
    T* p = object_.load(std::memory_order_relaxed);
    if (!p) {
      p = build_();
      object_.store(p, std::memory_order_release);
    }
    return *p;
  }
  T& operator*() { return get(); }
  T* operator->() { return &get(); }
  /// Whether this process has built its object yet.
  bool built() const noexcept { return object_.load(std::memory_order_acquire) != nullptr; }

 private:
  void forget_after_fork() noexcept override {
    object_.store(nullptr, std::memory_order_relaxed);
    new (&mu_) std::mutex;  // a parent thread may have held it at fork
  }

  std::function<T*()> build_;
  std::atomic<T*> object_{nullptr};
  std::mutex mu_;
};

}  // namespace mproc
