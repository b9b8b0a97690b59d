// How a call crosses a process boundary: a function identity checked on arrival, a target and
// its arguments serialised after it. Not API.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>

#include "mproc/detail/serialize.hpp"

namespace mproc::detail {

/// Where a function lives: the module (a hash of its build-id), the offset from the module's
/// base (so ASLR does not matter), and a tag (HMAC with the program's key) that proves a process
/// of this program wrote it. The tag also covers the kind of pointer (the fingerprint of its
/// type), so a valid identity cannot be replayed where a function of another signature or role
/// is expected. A receiver calls nothing that fails any of these checks.
struct CodeRef {
  std::uint64_t module = 0;
  std::uint64_t offset = 0;
  std::array<std::uint8_t, 16> tag{};
  template <class A>
  void serialize(A& a) {
    a(module, offset, tag);
  }
};

CodeRef code_ref(const void* code, std::uint64_t kind = 0);
/// Fills the table of loaded modules now (init, and before a fork), so that no child has to.
void prime_code_identity();
/// The main program's build id, hashed: processes that did not start each other (MPI ranks)
/// compare it before they trust each other's function identities.
std::uint64_t program_id();
/// Throws FunctionIdentityError unless ref names executable code of a module loaded here and its
/// tag verifies with this program's key for this kind.
const void* resolve_code(const CodeRef& ref, std::uint64_t kind = 0);

template <class F>
constexpr bool is_function_pointer = std::is_pointer_v<F> && std::is_function_v<std::remove_pointer_t<F>>;

template <class F>
constexpr bool is_stateless_callable = std::is_class_v<F> && std::is_empty_v<F> && std::is_default_constructible_v<F>;

template <class F>
constexpr void check_target() {
  static_assert(is_function_pointer<F> || is_stateless_callable<F> || (std::is_class_v<F> && is_cereal_serializable<F>),
                "mproc: this callable cannot cross a process boundary. A lambda that captures variables cannot be "
                "rebuilt in another process (under spawn and forkserver its captures do not exist there): pass the "
                "state as an argument instead, as in mproc::Process(f, state), or use a captureless lambda, a plain "
                "function, or a function object with a serialize() member.");
}

template <class T>
void save_value(OutArchive& ar, const T& v) {
  check_serializable<T>();
  if constexpr (is_memcpy_type<T>)
    ar.saveBinary(std::addressof(v), sizeof(T));
  else
    ar(v);
}

template <class T>
void load_value(InArchive& ar, T& v) {
  if constexpr (is_memcpy_type<T>)
    ar.loadBinary(static_cast<void*>(std::addressof(v)), sizeof(T));
  else
    ar(v);
}

template <class F>
void save_target(OutArchive& ar, const F& f) {
  if constexpr (is_function_pointer<F>)
    ar(code_ref(reinterpret_cast<const void*>(f), type_fingerprint<F>()));
  else if constexpr (!is_stateless_callable<F>)
    ar(f);
}

template <class F>
F load_target(InArchive& ar) {
  if constexpr (is_function_pointer<F>) {
    CodeRef ref;
    ar(ref);
    return reinterpret_cast<F>(const_cast<void*>(resolve_code(ref, type_fingerprint<F>())));
  } else if constexpr (is_stateless_callable<F>) {
    return F{};
  } else {
    F f{};
    ar(f);
    return f;
  }
}

/// The receiving end of a call: rebuilds the target and arguments, calls, and appends the
/// encoded result to *result when there is one to keep.
using Invoker = void (*)(InArchive& in, std::string* result);

template <class F, class... Args>
void invoke_thunk(InArchive& in, std::string* result) {
  F f{};
  std::tuple<Args...> args{};
  try {
    f = load_target<F>(in);
    std::apply([&](auto&... a) { (load_value(in, a), ...); }, args);
  } catch (const cereal::Exception& e) {
    throw_decode_failed("a task's arguments", e.what());
  }
  if (in.left() != 0) throw_trailing_bytes(in.left(), "a task's arguments");
  // The arguments are this call's own: moved into a target that takes them by value (no copy
  // of a large one), as lvalues to one that takes references.
  auto call = [&]() -> decltype(auto) {
    if constexpr (std::is_invocable_v<F&, Args&&...>)
      return std::apply(f, std::move(args));
    else
      return std::apply(f, args);
  };
  using R = std::invoke_result_t<F&, Args&...>;
  if constexpr (std::is_void_v<R>) {
    call();
  } else {
    R r = call();
    if (result) encode(*result, r);
  }
}

/// Writes a call of f with args as Task::save does, straight from the caller's objects.
template <class F, class... Args>
void save_call(OutArchive& ar, const F& f, const Args&... args) {
  ar(code_ref(reinterpret_cast<const void*>(&invoke_thunk<F, Args...>), type_fingerprint<Invoker>()));
  save_target(ar, f);
  (save_value(ar, args), ...);
}

/// A call bound to its arguments, ready to run here (fork) or to be written for another process.
struct Task {
  std::function<void()> call;
  std::function<void(OutArchive&)> save;
};

template <class F, class... Args>
constexpr void check_call() {
  check_target<F>();
  (check_serializable<Args>(), ...);
  static_assert(std::is_invocable_v<F&, Args&...>, "mproc: the target cannot be called with these arguments");
}

template <class F, class... Args>
Task make_task(F f, Args... args) {
  check_call<F, Args...>();
  auto bound = std::make_shared<std::tuple<F, Args...>>(std::move(f), std::move(args)...);
  Task t;
  t.call = [bound] { std::apply([](F& fn, Args&... a) { std::invoke(fn, a...); }, *bound); };
  t.save = [bound](OutArchive& ar) { std::apply([&](const F& fn, const Args&... a) { save_call(ar, fn, a...); }, *bound); };
  return t;
}

/// Runs a task written by Task::save; the bytes must hold exactly one call.
void run_saved_task(const void* data, std::size_t n, std::string* result);

}  // namespace mproc::detail
