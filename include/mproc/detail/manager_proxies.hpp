// Bodies of the proxy templates of mproc/managers.hpp: which request each method sends (the
// method names and argument encodings the server's objects read, src/managers/objects.cpp).
// The non-template proxies' bodies are in src/managers/proxies.cpp. Not API.
#pragma once

#include <chrono>
#include <cstring>

#include "mproc/managers.hpp"

namespace mproc {
namespace detail::mgr {

/// The delta of an add(): the arithmetic kind, then the value widened to 8 bytes.
template <class T>
std::pair<std::uint8_t, std::string> delta_of(T delta) {
  constexpr std::uint8_t code = arith_code<T>();
  static_assert(code != 0, "mproc: add() needs an arithmetic value type; use update_with(f) for others");
  std::string d(sizeof(T), '\0');
  std::memcpy(d.data(), &delta, sizeof(T));
  return {code, d};
}

/// A built-in object of SyncManager behind a proxy P (the type the server checks calls against).
template <class P>
P make_proxy(BaseManager& m, std::string_view typeid_, const std::string& args = {}) {
  return P(ManagerAccess::create(m, typeid_, type_fingerprint<P>(), args));
}

template <class F, class V>
std::string update_request(const F& f, const V& initial) {
  std::string s;
  OutArchive ar(s);
  save_update<V>(ar, f, initial);
  return s;
}

}  // namespace detail::mgr

// ------------------------------------------------------------------------------ DictProxy

template <class K, class V>
void DictProxy<K, V>::set(const K& k, const V& v) {
  call_("set", detail::mgr::blob(k), detail::mgr::blob(v));
}
template <class K, class V>
V DictProxy<K, V>::at(const K& k) const {
  return call_<V>("get", detail::mgr::blob(k));
}
template <class K, class V>
bool DictProxy<K, V>::contains(const K& k) const {
  return call_<bool>("contains", detail::mgr::blob(k));
}
template <class K, class V>
std::size_t DictProxy<K, V>::size() const {
  return call_<std::uint64_t>("len");
}
template <class K, class V>
void DictProxy<K, V>::erase(const K& k) {
  call_("del", detail::mgr::blob(k));
}
template <class K, class V>
void DictProxy<K, V>::clear() {
  call_("clear");
}
template <class K, class V>
std::optional<V> DictProxy<K, V>::get(const K& k) const {
  return detail::mgr::decode_optional<V>(call_<detail::mgr::Payload>("getopt", detail::mgr::blob(k)));
}
template <class K, class V>
V DictProxy<K, V>::pop(const K& k) {
  return detail::mgr::as<V>(call_<detail::mgr::Payload>("pop", detail::mgr::blob(k)));
}
template <class K, class V>
V DictProxy<K, V>::pop(const K& k, const V& fallback) {
  return detail::mgr::decode_optional<V>(call_<detail::mgr::Payload>("popopt", detail::mgr::blob(k))).value_or(fallback);
}
template <class K, class V>
V DictProxy<K, V>::setdefault(const K& k, const V& v) {
  return detail::mgr::as<V>(call_<detail::mgr::Payload>("setdefault", detail::mgr::blob(k), detail::mgr::blob(v)));
}
template <class K, class V>
void DictProxy<K, V>::update(const std::vector<std::pair<K, V>>& items) {
  std::vector<std::pair<std::string, std::string>> blobs;
  blobs.reserve(items.size());
  for (const auto& [k, v] : items) blobs.emplace_back(detail::mgr::blob(k), detail::mgr::blob(v));
  call_("set_many", blobs);
}
template <class K, class V>
std::vector<std::optional<V>> DictProxy<K, V>::get_many(const std::vector<K>& keys) const {
  std::vector<std::string> blobs;
  blobs.reserve(keys.size());
  for (const auto& k : keys) blobs.push_back(detail::mgr::blob(k));
  return detail::mgr::decode_optional_list<V>(call_<detail::mgr::Payload>("get_many", blobs));
}
template <class K, class V>
std::vector<K> DictProxy<K, V>::keys() const {
  return detail::mgr::decode_list<K>(call_<detail::mgr::Payload>("keys"));
}
template <class K, class V>
std::vector<V> DictProxy<K, V>::values() const {
  return detail::mgr::decode_list<V>(call_<detail::mgr::Payload>("values"));
}
template <class K, class V>
std::vector<std::pair<K, V>> DictProxy<K, V>::items() const {
  return detail::mgr::decode_items<K, V>(call_<detail::mgr::Payload>("items"));
}
template <class K, class V>
V DictProxy<K, V>::add(const K& k, V delta) {
  auto [code, d] = detail::mgr::delta_of(delta);
  return detail::mgr::as<V>(call_<detail::mgr::Payload>("add", detail::mgr::blob(k), code, d));
}
template <class K, class V>
template <class F>
V DictProxy<K, V>::update_with(const K& k, F f, const V& initial) {
  return detail::mgr::as<V>(call_<detail::mgr::Payload>("update_with", detail::mgr::blob(k), detail::mgr::update_request(f, initial)));
}

// ------------------------------------------------------------------------------ ListProxy

template <class T>
void ListProxy<T>::append(const T& v) {
  call_("append", detail::mgr::blob(v));
}
template <class T>
T ListProxy<T>::at(std::int64_t i) const {
  return call_<T>("get", i);
}
template <class T>
void ListProxy<T>::set(std::int64_t i, const T& v) {
  call_("set", i, detail::mgr::blob(v));
}
template <class T>
void ListProxy<T>::insert(std::int64_t i, const T& v) {
  call_("insert", i, detail::mgr::blob(v));
}
template <class T>
T ListProxy<T>::pop(std::int64_t i) {
  return call_<T>("pop", i);
}
template <class T>
void ListProxy<T>::erase(std::int64_t i) {
  call_("del", i);
}
template <class T>
void ListProxy<T>::remove(const T& v) {
  call_("remove", detail::mgr::blob(v));
}
template <class T>
std::size_t ListProxy<T>::index(const T& v) const {
  return call_<std::uint64_t>("index", detail::mgr::blob(v));
}
template <class T>
std::size_t ListProxy<T>::count(const T& v) const {
  return call_<std::uint64_t>("count", detail::mgr::blob(v));
}
template <class T>
std::size_t ListProxy<T>::size() const {
  return call_<std::uint64_t>("len");
}
template <class T>
void ListProxy<T>::clear() {
  call_("clear");
}
template <class T>
std::vector<T> ListProxy<T>::tolist() const {
  return detail::mgr::decode_list<T>(call_<detail::mgr::Payload>("items"));
}
template <class T>
void ListProxy<T>::extend(const std::vector<T>& vs) {
  std::vector<std::string> blobs;
  blobs.reserve(vs.size());
  for (const auto& v : vs) blobs.push_back(detail::mgr::blob(v));
  call_("extend", blobs);
}
template <class T>
T ListProxy<T>::add(std::int64_t i, T delta) {
  auto [code, d] = detail::mgr::delta_of(delta);
  return detail::mgr::as<T>(call_<detail::mgr::Payload>("add", i, code, d));
}
template <class T>
template <class F>
T ListProxy<T>::update_with(std::int64_t i, F f) {
  return detail::mgr::as<T>(call_<detail::mgr::Payload>("update_with", i, detail::mgr::update_request(f, T{})));
}

// ------------------------------------------------------------------------------ NamespaceProxy

template <class T>
void NamespaceProxy::set(const std::string& name, const T& v) {
  call_("set", name, detail::type_fingerprint<T>(), detail::mgr::blob(v));
}
template <class T>
T NamespaceProxy::get(const std::string& name) const {
  return call_<T>("get", name, detail::type_fingerprint<T>());
}

// ------------------------------------------------------------------------------ ValueProxy

template <class T>
T ValueProxy<T>::get() const {
  return call_<T>("get");
}
template <class T>
void ValueProxy<T>::set(const T& v) {
  call_("set", detail::mgr::blob(v));
}

template <class T>
T ValueProxy<T>::add(T delta) {
  auto [code, d] = detail::mgr::delta_of(delta);
  return detail::mgr::as<T>(call_<detail::mgr::Payload>("add", code, d));
}
template <class T>
template <class F>
T ValueProxy<T>::update_with(F f) {
  return detail::mgr::as<T>(call_<detail::mgr::Payload>("update_with", detail::mgr::update_request(f, T{})));
}

// ------------------------------------------------------------------------------ ArrayProxy

template <class T>
T ArrayProxy<T>::at(std::int64_t i) const {
  return call_<T>("get", i);
}
template <class T>
void ArrayProxy<T>::set(std::int64_t i, const T& v) {
  call_("set", i, detail::mgr::blob(v));
}
template <class T>
std::size_t ArrayProxy<T>::size() const {
  return call_<std::uint64_t>("len");
}

template <class T>
std::vector<T> ArrayProxy<T>::tolist() const {
  detail::mgr::Payload b = call_<detail::mgr::Payload>("items");
  if (b.size() % sizeof(T) != 0) throw ProtocolError("manager Array: reply is not a whole number of elements");
  std::vector<T> out(b.size() / sizeof(T));
  if (!out.empty()) std::memcpy(static_cast<void*>(out.data()), b.data(), b.size());
  return out;
}
template <class T>
void ArrayProxy<T>::assign(const std::vector<T>& vs) {
  std::string raw(vs.size() * sizeof(T), '\0');
  if (!vs.empty()) std::memcpy(raw.data(), static_cast<const void*>(vs.data()), raw.size());
  call_("assign", raw);
}
template <class T>
T ArrayProxy<T>::add(std::int64_t i, T delta) {
  auto [code, d] = detail::mgr::delta_of(delta);
  return detail::mgr::as<T>(call_<detail::mgr::Payload>("add", i, code, d));
}

// ------------------------------------------------------------------------------ QueueProxy

template <class T>
void QueueProxy<T>::put(const T& v, bool block, std::optional<seconds> timeout) {
  call_("put", detail::mgr::blob(v), block, detail::mgr::wire_timeout(timeout, "QueueProxy.put"));
}
template <class T>
T QueueProxy<T>::get(bool block, std::optional<seconds> timeout) {
  return call_<T>("get", block, detail::mgr::wire_timeout(timeout, "QueueProxy.get"));
}
template <class T>
std::size_t QueueProxy<T>::qsize() const {
  return call_<std::uint64_t>("qsize");
}
template <class T>
bool QueueProxy<T>::full() const {
  return call_<bool>("full");
}
template <class T>
void QueueProxy<T>::task_done() {
  call_("task_done");
}
template <class T>
void QueueProxy<T>::join() {
  call_("join");
}

// ------------------------------------------------------------------------------ Proxy<T>

template <class T>
template <auto M, class... A>
auto Proxy<T>::call(A&&... a) {
  using traits = detail::mgr::member_traits<decltype(M)>;
  using R = std::decay_t<typename traits::result>;
  typename traits::args args(std::forward<A>(a)...);
  std::string req = detail::mgr::begin_call(ref(), detail::mgr::method_name<M>());
  {
    detail::OutArchive ar(req);
    ar(detail::type_fingerprint<decltype(M)>());
    std::apply([&](const auto&... x) { (detail::save_value(ar, x), ...); }, args);
  }
  detail::mgr::Payload b = detail::mgr::finish_call(ref(), req, detail::mgr::method_name<M>());
  if constexpr (detail::mgr::served_object<R>::value) {
    using U = typename detail::mgr::served_object<R>::type;
    auto id = detail::mgr::decode_reply<std::uint64_t>(b);
    if (id == 0) return Proxy<U>();
    return Proxy<U>(detail::mgr::adopt_returned(ref(), id, detail::type_fingerprint<U>()));
  } else {
    return detail::mgr::decode_reply<R>(b);
  }
}

// ------------------------------------------------------------------------------ BaseManager

template <class T, auto... Ms>
void BaseManager::register_type(const std::string& typeid_) {
  detail::mgr::check_factory<T, void>();
  detail::mgr::ManagerAccess::add_registration(*this, typeid_, detail::type_fingerprint<T>(),
                                              detail::mgr::type_ops_ref<T, void, Ms...>(),
                                              &detail::mgr::type_ops<T, void, Ms...>, {});
}

template <class T, auto... Ms, class F>
void BaseManager::register_type(const std::string& typeid_, F factory) {
  detail::mgr::check_factory<T, F>();
  std::string identity;
  detail::OutArchive ar(identity);
  detail::save_target(ar, factory);
  detail::mgr::ManagerAccess::add_registration(*this, typeid_, detail::type_fingerprint<T>(),
                                              detail::mgr::type_ops_ref<T, F, Ms...>(), &detail::mgr::type_ops<T, F, Ms...>,
                                              std::move(identity));
}

template <class T, class... A>
Proxy<T> BaseManager::create(const std::string& typeid_, A&&... args) {
  std::string encoded;
  detail::OutArchive ar(encoded);
  ar(detail::type_fingerprint<std::tuple<detail::mgr::create_arg_t<A>...>>());
  (detail::save_value(ar, detail::mgr::create_arg_t<A>(std::forward<A>(args))), ...);
  return Proxy<T>(detail::mgr::ManagerAccess::create_registered(*this, typeid_, detail::type_fingerprint<T>(),
                                                               detail::type_name<T>(), encoded));
}

// ------------------------------------------------------------------------------ Condition

template <class P>
bool ConditionProxy::wait_for(P predicate, std::optional<seconds> timeout) {
  // Checked before the deadline is computed: NaN or a huge timeout would overflow the clock.
  const double t = detail::mgr::wire_timeout(timeout, "ConditionProxy.wait_for");
  const bool limited = t >= 0 && t < 1e9;  // beyond ~30 years: no deadline, as on the server
  const auto deadline = std::chrono::steady_clock::now() +
                        std::chrono::duration_cast<std::chrono::steady_clock::duration>(seconds(limited ? t : 0.0));
  bool result = predicate();
  while (!result) {
    std::optional<seconds> left;
    if (limited) {
      left = std::chrono::duration<double>(deadline - std::chrono::steady_clock::now());
      if (left->count() <= 0) break;
    }
    wait(left);
    result = predicate();
  }
  return result;
}

// ------------------------------------------------------------------------------ SyncManager

template <class K, class V>
DictProxy<K, V> SyncManager::dict() {
  return detail::mgr::make_proxy<DictProxy<K, V>>(*this, "dict");
}
template <class T>
ListProxy<T> SyncManager::list(const std::vector<T>& initial) {
  std::vector<std::string> blobs;
  for (const auto& v : initial) blobs.push_back(detail::mgr::blob(v));
  std::string args;
  detail::encode(args, blobs);
  return detail::mgr::make_proxy<ListProxy<T>>(*this, "list", args);
}
template <class T>
ValueProxy<T> SyncManager::Value(const T& initial) {
  std::string args;
  detail::encode(args, detail::mgr::blob(initial));
  return detail::mgr::make_proxy<ValueProxy<T>>(*this, "Value", args);
}
template <class T>
ArrayProxy<T> SyncManager::Array(const std::vector<T>& initial) {
  static_assert(std::is_trivially_copyable_v<T> && !std::is_pointer_v<T>,
                "mproc: a manager Array holds trivially copyable elements (numbers, plain structs); use list<T> for others");
  std::string raw(initial.size() * sizeof(T), '\0');
  if (!initial.empty()) std::memcpy(raw.data(), static_cast<const void*>(initial.data()), raw.size());
  std::string args;
  detail::encode(args, static_cast<std::uint64_t>(sizeof(T)));
  detail::encode(args, raw);
  return detail::mgr::make_proxy<ArrayProxy<T>>(*this, "Array", args);
}
template <class T>
QueueProxy<T> SyncManager::Queue(std::int64_t maxsize) {
  std::string args;
  detail::encode(args, maxsize);
  detail::encode(args, false);
  return detail::mgr::make_proxy<QueueProxy<T>>(*this, "Queue", args);
}
template <class T>
JoinableQueueProxy<T> SyncManager::JoinableQueue(std::int64_t maxsize) {
  std::string args;
  detail::encode(args, maxsize);
  detail::encode(args, true);
  return detail::mgr::make_proxy<QueueProxy<T>>(*this, "JoinableQueue", args);
}

}  // namespace mproc
