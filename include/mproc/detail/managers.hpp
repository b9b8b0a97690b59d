// The machinery behind mproc/managers.hpp: one round trip to a manager server, the shared
// state of a proxy, and the thunks that let a server run a client's function or a registered
// type's methods. Not API.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "mproc/connection.hpp"
#include "mproc/detail/callable.hpp"
#include "mproc/detail/serialize.hpp"

namespace mproc {
class BaseManager;
}

namespace mproc::detail::mgr {

struct ObjectRef;
struct TypeOps;
using TypeOpsFn = const TypeOps* (*)();

/// What the templates of BaseManager and SyncManager (detail/manager_proxies.hpp) need of a
/// manager, kept out of its public class.
struct ManagerAccess {
  /// A built-in object (SyncManager's creators).
  static std::shared_ptr<ObjectRef> create(BaseManager& m, std::string_view typeid_, std::uint64_t type,
                                           const std::string& args);
  /// An object of a registered type: the typeid is checked against T (type, type_name) first.
  static std::shared_ptr<ObjectRef> create_registered(BaseManager& m, std::string_view typeid_, std::uint64_t type,
                                                      std::string_view type_name, const std::string& args);
  static void add_registration(BaseManager& m, const std::string& name, std::uint64_t type, CodeRef ref, TypeOpsFn local,
                               std::string factory);
};

/// Where a manager server is, and the key that opens it. Shared by every proxy of that server
/// in this process; owns the process's connections to it (one per thread for calls, one
/// "session" that holds this process's references: when the process dies, the server sees
/// the session close and drops them).
struct Endpoint;
std::shared_ptr<Endpoint> endpoint(const connection::Address& address, const std::string& authkey);
const connection::Address& endpoint_address(const Endpoint& e);
const std::string& endpoint_authkey(const Endpoint& e);

/// One object in a server, as a proxy sees it: copies of a proxy share one ObjectRef, which
/// holds one reference to the object while it lives in the process that took it.
struct ObjectRef {
  std::shared_ptr<Endpoint> endpoint;
  std::uint64_t id = 0;
  std::uint64_t type = 0;  // what the proxy's C++ type is; the server checks it on every call
  std::atomic<int> ref_pid{0};  // the process whose session holds our reference (0: none)
  ObjectRef() = default;
  ObjectRef(const ObjectRef&) = delete;
  ObjectRef& operator=(const ObjectRef&) = delete;
  ~ObjectRef();
};

/// A reply's payload: the bytes after its status byte.
struct Payload {
  Buffer buf;
  const std::byte* data() const { return buf.data() + 1; }
  std::size_t size() const { return buf.size() - 1; }
};

/// A proxy call's timeout as the server reads it (a negative number: none), under the rules of
/// detail/timeout.hpp, so a manager Lock waits as a local one would: NaN throws
/// std::invalid_argument naming `call`, a negative timeout becomes 0 (the server would read it
/// as none), +inf none.
double wire_timeout(std::optional<std::chrono::duration<double>> timeout, const char* call);

/// A request's arguments are appended to a string that starts with the request header; the
/// reply's payload is what the server encoded.
std::string begin_call(const ObjectRef& ref, std::string_view method);
/// Sends the request and returns the reply's payload, or throws the server's error as the
/// matching mproc exception (KeyError, IndexError, ...), or ConnectionError when the server
/// is gone.
Payload finish_call(ObjectRef& ref, std::string& request, std::string_view method);

/// Creates an object of `typeid` with the encoded arguments; the reference belongs to this
/// process's session. `what` names the request in errors.
std::shared_ptr<ObjectRef> create(const std::shared_ptr<Endpoint>& ep, std::string_view typeid_, std::uint64_t type,
                                  const std::string& args, std::string_view what);
/// The object a registered method returned (its id; the calling thread's connection holds its
/// reference): the reference moves to this process's session.
std::shared_ptr<ObjectRef> adopt_returned(ObjectRef& parent, std::uint64_t id, std::uint64_t type);
/// Proxies that arrive from another process (cereal): take a reference of our own.
void save_ref(OutArchive& ar, const std::shared_ptr<ObjectRef>& ref);
std::shared_ptr<ObjectRef> load_ref(InArchive& ar);

template <class T>
T as(const Payload& b) {
  return decode<T>(b.data(), b.size());
}

template <class R>
R decode_reply(Payload& b) {
  if constexpr (std::is_void_v<R>) {
    return;
  } else if constexpr (std::is_same_v<R, Payload>) {
    return std::move(b);
  } else {
    return decode<R>(b.data(), b.size());
  }
}

/// A value's encoding, which the server keeps as it is.
template <class T>
std::string blob(const T& v) {
  std::string s;
  encode(s, v);
  return s;
}

// Replies that hold many values are a count, then each value's encoding (each one is
// self-delimiting once its type is known, which only the client knows).
template <class T>
T load_one(InArchive& ar) {
  T v{};
  load_value(ar, v);
  return v;
}

// A presence byte, then the value when there is one.
template <class T>
std::optional<T> load_optional(InArchive& ar) {
  std::uint8_t present = 0;
  ar(present);
  if (!present) return std::nullopt;
  return load_one<T>(ar);
}

template <class T>
std::optional<T> decode_optional(const Payload& b) {
  InArchive ar(b.data(), b.size());
  return load_optional<T>(ar);
}

// A count, then that many items, each read by load(ar).
template <class Item, class Load>
std::vector<Item> decode_counted(const Payload& b, Load load) {
  InArchive ar(b.data(), b.size());
  std::uint64_t n = 0;
  ar(cereal::make_size_tag(n));
  std::vector<Item> out;
  out.reserve(static_cast<std::size_t>(n));
  for (std::uint64_t i = 0; i < n; ++i) out.push_back(load(ar));
  return out;
}

template <class T>
std::vector<T> decode_list(const Payload& b) {
  return decode_counted<T>(b, load_one<T>);
}

template <class T>
std::vector<std::optional<T>> decode_optional_list(const Payload& b) {
  return decode_counted<std::optional<T>>(b, load_optional<T>);
}

template <class K, class V>
std::vector<std::pair<K, V>> decode_items(const Payload& b) {
  return decode_counted<std::pair<K, V>>(b, [](InArchive& ar) {
    K k = load_one<K>(ar);
    return std::pair<K, V>(std::move(k), load_one<V>(ar));
  });
}

/// One call: method(args...) on the object, returning R.
template <class R, class... Args>
R call(ObjectRef& ref, std::string_view method, const Args&... args) {
  std::string req = begin_call(ref, method);
  if constexpr (sizeof...(Args) > 0) {
    OutArchive ar(req);
    (save_value(ar, args), ...);
  }
  Payload b = finish_call(ref, req, method);
  return decode_reply<R>(b);
}

// ------------------------------------------------------------------ functions run by the server

/// A value update run by the server under the object's lock: decodes the stored value (or
/// uses the default that came with the request), calls f, stores the encoding of its result.
using UpdateFn = void (*)(InArchive& in, std::string& value, bool exists);

template <class V, class F>
void update_thunk(InArchive& in, std::string& value, bool exists) {
  F f = load_target<F>(in);
  V v{};
  load_value(in, v);  // the default, used when there is no value yet
  if (exists) v = decode<V>(value.data(), value.size());
  if (in.left() != 0) throw_trailing_bytes(in.left(), "an update's function");
  V out = std::invoke(f, std::move(v));
  value.clear();
  encode(value, out);
}

template <class V, class F>
void save_update(OutArchive& ar, const F& f, const V& initial) {
  check_target<F>();
  static_assert(std::is_invocable_r_v<V, F&, V>, "mproc: update_with(f) needs f(V) -> V");
  ar(code_ref(reinterpret_cast<const void*>(&update_thunk<V, F>), type_fingerprint<UpdateFn>()));
  save_target(ar, f);
  save_value(ar, initial);
}

/// Arithmetic types that the server can add without running client code (so `add` works for
/// remote clients of another program too).
template <class T>
constexpr std::uint8_t arith_code() {
  if constexpr (std::is_same_v<T, bool> || !std::is_arithmetic_v<T>) return 0;
  else if constexpr (std::is_floating_point_v<T>) return sizeof(T) == 4 ? 1 : sizeof(T) == 8 ? 2 : 0;
  else if constexpr (std::is_signed_v<T>) return static_cast<std::uint8_t>(10 + sizeof(T));
  else return static_cast<std::uint8_t>(20 + sizeof(T));
}

// ------------------------------------------------------------------ registered types

/// Where a registered method that returns an object (std::shared_ptr<U>, std::unique_ptr<U>)
/// puts it: the server's table, which gives it an id; the caller receives a Proxy<U> (Python's
/// method_to_typeid). U must be registered with the same server.
class ObjectSink {
 public:
  virtual std::uint64_t adopt(std::shared_ptr<void> obj, std::uint64_t type, std::string_view type_name) = 0;

 protected:
  ~ObjectSink() = default;
};

/// A registered type's method: decodes the arguments, calls, encodes the result.
using MethodFn = void (*)(void* obj, InArchive& in, std::string& out, ObjectSink& sink);
/// Makes an object: from the factory (its identity in `factory`) and the arguments of create().
using CreateFn = std::shared_ptr<void> (*)(InArchive& factory, InArchive& args);
struct TypeOps {
  std::uint64_t type;
  std::string_view name;
  std::uint64_t args_type;  // the fingerprint of the factory's parameters, as std::tuple<...>
  std::string_view args_name;
  CreateFn create;
  std::vector<std::pair<std::string_view, MethodFn>> methods;
};

template <auto M>
constexpr std::string_view method_name() {
  std::string_view p = __PRETTY_FUNCTION__;  // "... [with auto M = &ns::Type::name; ...]"
  auto start = p.find("M = ") + 4;
  auto end = p.find_first_of(";]", start);
  auto full = p.substr(start, end - start);
  return full.substr(full.rfind("::") + 2);
}

/// The result and (decayed) parameters of a member function, a function pointer or a
/// captureless lambda.
template <class M>
struct fn_traits : fn_traits<decltype(&M::operator())> {};
template <class R, class... A>
struct fn_traits<R (*)(A...)> {
  using result = R;
  using args = std::tuple<std::decay_t<A>...>;
};
template <class R, class... A>
struct fn_traits<R (*)(A...) noexcept> : fn_traits<R (*)(A...)> {};
template <class T, class R, class... A>
struct fn_traits<R (T::*)(A...)> : fn_traits<R (*)(A...)> {};
template <class T, class R, class... A>
struct fn_traits<R (T::*)(A...) const> : fn_traits<R (*)(A...)> {};
template <class T, class R, class... A>
struct fn_traits<R (T::*)(A...) noexcept> : fn_traits<R (*)(A...)> {};
template <class T, class R, class... A>
struct fn_traits<R (T::*)(A...) const noexcept> : fn_traits<R (*)(A...)> {};
template <class M>
using member_traits = fn_traits<M>;

/// std::shared_ptr<U> / std::unique_ptr<U>: a method result that stays on the server as an object.
template <class R>
struct served_object : std::false_type {};
template <class U>
struct served_object<std::shared_ptr<U>> : std::true_type {
  using type = U;
};
template <class U, class D>
struct served_object<std::unique_ptr<U, D>> : std::true_type {
  using type = U;
};

/// What create() sends for an argument: a string literal travels as the std::string it names.
template <class A>
using create_arg_t = std::conditional_t<std::is_same_v<std::decay_t<A>, const char*> || std::is_same_v<std::decay_t<A>, char*>,
                                        std::string, std::decay_t<A>>;

[[noreturn]] void throw_signature_mismatch(std::string_view method);
[[noreturn]] void throw_null_object(std::string_view type);

template <class T, auto M>
void invoke_method(void* obj, InArchive& in, std::string& out, ObjectSink& sink) {
  using traits = member_traits<decltype(M)>;
  using R = std::decay_t<typename traits::result>;
  std::uint64_t sig = 0;
  in(sig);
  if (sig != type_fingerprint<decltype(M)>()) throw_signature_mismatch(method_name<M>());
  typename traits::args args{};
  std::apply([&](auto&... a) { (load_value(in, a), ...); }, args);
  if (in.left() != 0) throw_trailing_bytes(in.left(), "a method's arguments");
  auto* self = static_cast<T*>(obj);
  if constexpr (std::is_void_v<R>) {
    std::apply([&](auto&... a) { (self->*M)(a...); }, args);
  } else if constexpr (served_object<R>::value) {
    using U = typename served_object<R>::type;
    R r = std::apply([&](auto&... a) { return (self->*M)(a...); }, args);
    std::uint64_t id = 0;
    if (r) id = sink.adopt(std::shared_ptr<U>(std::move(r)), type_fingerprint<U>(), type_name<U>());
    encode(out, id);
  } else {
    encode(out, std::apply([&](auto&... a) { return (self->*M)(a...); }, args));
  }
}

/// T from create()'s arguments: default-constructed (F = void), or what the factory F returns
/// (T, std::unique_ptr<T> or std::shared_ptr<T>).
template <class T, class F>
std::shared_ptr<void> construct(InArchive& factory, InArchive& in) {
  if constexpr (std::is_void_v<F>) {
    (void)factory;
    if (in.left() != 0) throw_trailing_bytes(in.left(), "a create request");
    return std::make_shared<T>();
  } else {
    F f = load_target<F>(factory);
    typename fn_traits<F>::args args{};
    std::apply([&](auto&... a) { (load_value(in, a), ...); }, args);
    if (in.left() != 0) throw_trailing_bytes(in.left(), "a create request");
    using R = std::decay_t<typename fn_traits<F>::result>;
    if constexpr (served_object<R>::value) {
      std::shared_ptr<T> p(std::apply(f, std::move(args)));
      if (!p) throw_null_object(type_name<T>());
      return p;
    } else {
      return std::make_shared<T>(std::apply(f, std::move(args)));
    }
  }
}

template <class T, class F, auto... Ms>
const TypeOps* type_ops() {
  using Args = typename fn_traits<std::conditional_t<std::is_void_v<F>, void (*)(), F>>::args;
  static const TypeOps ops{type_fingerprint<T>(), type_name<T>(),   type_fingerprint<Args>(),
                           type_name<Args>(),     &construct<T, F>, {{method_name<Ms>(), &invoke_method<T, Ms>}...}};
  return &ops;
}

template <class T, class F, auto... Ms>
CodeRef type_ops_ref() {
  return code_ref(reinterpret_cast<const void*>(&type_ops<T, F, Ms...>), type_fingerprint<TypeOpsFn>());
}

template <class T, class F>
constexpr void check_factory() {
  if constexpr (std::is_void_v<F>) {
    static_assert(std::is_default_constructible_v<T>,
                  "mproc: register_type<T>(name) default-constructs T; give a factory for T's constructor arguments: "
                  "register_type<T, ...>(name, [](A a, B b) { return T(a, b); })");
  } else {
    check_target<F>();
    using R = std::decay_t<typename fn_traits<F>::result>;
    static_assert(std::is_same_v<R, T> || std::is_same_v<R, std::unique_ptr<T>> || std::is_same_v<R, std::shared_ptr<T>>,
                  "mproc: a register_type factory returns T, std::unique_ptr<T> or std::shared_ptr<T>");
  }
}

}  // namespace mproc::detail::mgr
