// mproc/managers.hpp — Python's multiprocessing.managers: a server process that owns shared
// objects, proxies that act on them from any process, BaseManager for your own types.
//
//     auto manager = mproc::Manager();                 // a server process (current start method)
//     auto d = manager.dict<std::string, int>();       // a DictProxy: copyable, passable to children
//     d.set("a", 1);
//     d.add("a", 5);                                   // atomic on the server: no lost update
//     d.update_with("a", [](int v) { return v * 2; }); // atomic too (same program only)
//     auto all = d.get_many({"a", "b"});               // one round trip for many keys
//
// docs/managers.md has the whole story: what is atomic, how proxies travel, failures.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "mproc/connection.hpp"
#include "mproc/context.hpp"
#include "mproc/detail/managers.hpp"
#include "mproc/listener.hpp"

namespace mproc {

/// What every proxy is (Python: BaseProxy). A handle on one object in a manager server: copies
/// act on the same object; pass it to a Process, a Pool task or through a Connection under any
/// start method and it arrives as the server's address plus the object's id, and reconnects
/// there with the key (this program's authkey, or the manager's own key, which then travels
/// with it). The server keeps the object while some process holds a proxy of it.
///
/// Every call is one round trip on this thread's connection to the server. A proxy is safe to
/// use from several threads. When the server is gone every call throws ConnectionError.
///
/// Timeouts are read as local objects read them (synchronize.hpp): std::nullopt or +inf waits
/// without a deadline, a negative timeout not at all, NaN throws std::invalid_argument.
class BaseProxy {
 public:
  BaseProxy() = default;
  explicit BaseProxy(std::shared_ptr<detail::mgr::ObjectRef> ref) : ref_(std::move(ref)) {}
  /// The object's id in its server.
  std::uint64_t id() const;
  connection::Address address() const;
  explicit operator bool() const { return ref_ != nullptr; }

  void save(detail::OutArchive& ar) const;
  void load(detail::InArchive& ar);

 protected:
  detail::mgr::ObjectRef& ref() const;
  template <class R = void, class... A>
  R call_(std::string_view method, const A&... a) const { return detail::mgr::call<R>(ref(), method, a...); }
  std::shared_ptr<detail::mgr::ObjectRef> ref_;
};

/// Python: DictProxy (manager.dict()). Keys are compared by their serialised bytes.
/// Atomic (one step on the server, under the object's lock): every single call, including
/// get_many/set_many (a consistent snapshot / all-or-nothing), setdefault, pop, add and
/// update_with. A read followed by a write from the client (`d.set(k, d.at(k) + 1)`) is two
/// steps and can lose updates: use add() or update_with().
template <class K, class V>
class DictProxy : public BaseProxy {
 public:
  using BaseProxy::BaseProxy;
  /// Python: d[k] = v.
  void set(const K& k, const V& v);
  /// Python: d[k]. Throws KeyError.
  V at(const K& k) const;
  /// Python: d.get(k) / d.get(k, default).
  std::optional<V> get(const K& k) const;
  V get(const K& k, const V& fallback) const { return get(k).value_or(fallback); }
  bool contains(const K& k) const;
  /// Python: len(d).
  std::size_t size() const;
  /// Python: del d[k]. Throws KeyError.
  void erase(const K& k);
  /// Python: d.pop(k) (KeyError), d.pop(k, default).
  V pop(const K& k);
  V pop(const K& k, const V& fallback);
  /// Python: d.setdefault(k, v): the value now stored.
  V setdefault(const K& k, const V& v);
  /// Python: d.update(items). All in one round trip, atomically.
  void update(const std::vector<std::pair<K, V>>& items);
  void set_many(const std::vector<std::pair<K, V>>& items) { update(items); }
  /// The values of many keys in one round trip (empty where a key is missing).
  std::vector<std::optional<V>> get_many(const std::vector<K>& keys) const;
  std::vector<K> keys() const;
  std::vector<V> values() const;
  std::vector<std::pair<K, V>> items() const;
  void clear();
  /// Atomically d[k] += delta (0 first when k is missing); returns the new value. V must be an
  /// arithmetic type; no client code runs on the server, so this works from any program.
  V add(const K& k, V delta);
  /// Atomically d[k] = f(d[k]) (f(initial) when k is missing); returns the new value. f is a
  /// plain function or captureless lambda V(V): the server runs it, so the server must run
  /// this program's binary (Manager() and start() do); another program's server refuses it
  /// with FunctionIdentityError. f must not call the manager.
  template <class F>
  V update_with(const K& k, F f, const V& initial = V{});
};

/// Python: ListProxy (manager.list()). Indexes may be negative, as in Python; an index out of
/// range throws IndexError. Every call is atomic; use update_with/add for read-modify-write.
template <class T>
class ListProxy : public BaseProxy {
 public:
  using BaseProxy::BaseProxy;
  void append(const T& v);
  void extend(const std::vector<T>& vs);
  T at(std::int64_t i) const;
  void set(std::int64_t i, const T& v);
  void insert(std::int64_t i, const T& v);
  T pop(std::int64_t i = -1);
  void erase(std::int64_t i);
  /// Python: l.remove(v) (ValueError when absent), l.index(v), l.count(v).
  void remove(const T& v);
  std::size_t index(const T& v) const;
  std::size_t count(const T& v) const;
  std::size_t size() const;
  void clear();
  /// Python: list(l) / l[:]: every item, in one round trip.
  std::vector<T> tolist() const;
  T add(std::int64_t i, T delta);
  template <class F>
  T update_with(std::int64_t i, F f);
};

/// Python: NamespaceProxy (manager.Namespace()): named attributes of any serialisable type.
class NamespaceProxy : public BaseProxy {
 public:
  using BaseProxy::BaseProxy;
  /// Python: ns.name = v.
  template <class T>
  void set(const std::string& name, const T& v);
  /// Python: ns.name. KeyError when there is none, TypeMismatchError when it holds another type.
  template <class T>
  T get(const std::string& name) const;
  bool has(const std::string& name) const;
  void erase(const std::string& name);
  std::vector<std::string> names() const;
};

/// Python: ValueProxy (manager.Value(typecode, value)).
template <class T>
class ValueProxy : public BaseProxy {
 public:
  using BaseProxy::BaseProxy;
  T get() const;
  void set(const T& v);
  T add(T delta);
  template <class F>
  T update_with(F f);
};

/// Python: ArrayProxy (manager.Array(typecode, sequence)). T is trivially copyable.
template <class T>
class ArrayProxy : public BaseProxy {
 public:
  using BaseProxy::BaseProxy;
  T at(std::int64_t i) const;
  void set(std::int64_t i, const T& v);
  std::size_t size() const;
  std::vector<T> tolist() const;
  /// Replaces every element (the length must not change).
  void assign(const std::vector<T>& vs);
  T add(std::int64_t i, T delta);
};

/// Python: a proxy of queue.Queue (manager.Queue(maxsize)). timeout std::nullopt waits
/// forever; queue::Empty / queue::Full as in Python.
template <class T>
class QueueProxy : public BaseProxy {
 public:
  using BaseProxy::BaseProxy;
  void put(const T& v, bool block = true, std::optional<seconds> timeout = {});
  T get(bool block = true, std::optional<seconds> timeout = {});
  void put_nowait(const T& v) { put(v, false); }
  T get_nowait() { return get(false); }
  std::size_t qsize() const;
  bool empty() const { return qsize() == 0; }
  bool full() const;
  /// JoinableQueue only (a plain Queue throws mproc::Error).
  void task_done();
  void join();
};
template <class T>
using JoinableQueueProxy = QueueProxy<T>;

/// Python: AcquirerProxy: Lock, RLock, Semaphore, BoundedSemaphore. A lock is held by the
/// calling thread's connection, so by the thread (as threading.Lock held by a server thread in
/// Python). A client process that dies holding a Lock or RLock releases it.
class AcquirerProxy : public BaseProxy {
 public:
  using BaseProxy::BaseProxy;
  bool acquire(bool blocking = true, std::optional<seconds> timeout = {});
  void release();
  /// Lock/RLock: whether someone holds it. Semaphores: whether the value is 0.
  bool locked() const;
  /// Semaphores: the current value.
  std::int64_t get_value() const;
  // Python's `with lock:` is a std::lock_guard / std::unique_lock over the proxy:
  void lock() { acquire(); }
  void unlock() { release(); }
  bool try_lock() { return acquire(false); }
};

/// Python: ConditionProxy (manager.Condition(lock)).
class ConditionProxy : public AcquirerProxy {
 public:
  using AcquirerProxy::AcquirerProxy;
  /// Releases the lock, waits for a notify (or the timeout), takes the lock back. True unless
  /// it timed out. RuntimeError when this thread does not hold the lock.
  bool wait(std::optional<seconds> timeout = std::nullopt);
  /// Python's wait_for: predicate() is evaluated here, under the lock.
  template <class P>
  bool wait_for(P predicate, std::optional<seconds> timeout = std::nullopt);
  void notify(std::int64_t n = 1);
  void notify_all();
};

/// Python: EventProxy (manager.Event()).
class EventProxy : public BaseProxy {
 public:
  using BaseProxy::BaseProxy;
  void set();
  void clear();
  bool is_set() const;
  bool wait(std::optional<seconds> timeout = std::nullopt);
};

/// Python: BarrierProxy (manager.Barrier(parties, timeout)). A party whose process dies while
/// waiting breaks the barrier (BrokenBarrierError for the others), rather than hanging them.
class BarrierProxy : public BaseProxy {
 public:
  using BaseProxy::BaseProxy;
  std::int64_t wait(std::optional<seconds> timeout = std::nullopt);
  void abort();
  void reset();
  std::int64_t parties() const;
  std::int64_t n_waiting() const;
  bool broken() const;
};

/// A proxy of a registered type T (Python: AutoProxy). Call its registered methods by member
/// pointer; arguments convert to the method's parameter types, the server checks the
/// signature. Each call runs on the server under the object's lock, so methods are atomic.
/// A method that returns std::shared_ptr<U> or std::unique_ptr<U> leaves the U on the server
/// and gives a Proxy<U> (empty for nullptr; Python's method_to_typeid): U must be registered.
///
///     int n = counter.call<&Counter::add>(5);
///     mproc::Proxy<Node> child = tree.call<&Tree::child>(0);
template <class T>
class Proxy : public BaseProxy {
 public:
  using BaseProxy::BaseProxy;
  template <auto M, class... A>
  auto call(A&&... a);
};

class Server;

/// Python: BaseManager(address, authkey) options. ctx: the start method of start()'s server
/// process (the current one when empty).
struct ManagerOptions {
  /// Empty: a fresh abstract Unix name. A TCP address ({"127.0.0.1", 0}) makes the server
  /// reachable by other programs.
  std::optional<connection::Address> address{};
  /// Empty: current_process().authkey(), as in Python.
  std::optional<std::string> authkey{};
  std::optional<Context> ctx{};
};

/// Python: multiprocessing.managers.BaseManager.
///
///     mproc::BaseManager m({.address = connection::Address("127.0.0.1", 50000), .authkey = "k"});
///     m.register_type<Counter, &Counter::add, &Counter::get>("Counter");
///     m.start();                                   // or m.get_server().serve_forever();
///     auto c = m.create<Counter>("Counter");       // elsewhere: m.connect(); m.create<...>
class BaseManager {
 public:
  explicit BaseManager(ManagerOptions options = {});
  BaseManager(BaseManager&&) noexcept;
  BaseManager& operator=(BaseManager&&) noexcept;
  /// Shuts down a server this manager started.
  virtual ~BaseManager();

  /// Python: BaseManager.register(typeid, callable): create<T>(typeid, args...) makes a T on
  /// the server, default-constructed, or by `factory` (a plain function or captureless lambda
  /// taking create()'s arguments and returning T, std::unique_ptr<T> or std::shared_ptr<T>);
  /// the methods Ms are callable through Proxy<T>::call. Register before start() or
  /// get_server(), in the server's program; a client program need not register anything.
  /// A typeid registered already, or a built-in one ("dict", "Queue", ...), is an mproc::Error
  /// (Python replaces silently; here a second type under one name is almost always a bug).
  ///
  ///     m.register_type<Counter, &Counter::add>("Counter", [](long start) { return Counter{start}; });
  ///     auto c = m.create<Counter>("Counter", 10L);
  template <class T, auto... Ms>
  void register_type(const std::string& typeid_);
  template <class T, auto... Ms, class F>
  void register_type(const std::string& typeid_, F factory);
  /// Starts the server in a new process (Python: start()); waits until it listens.
  void start();
  /// Python: connect(): uses a server someone else started at options.address.
  void connect();
  /// Python: shutdown(): stops a server this manager started (a connected manager just lets
  /// go of it). Proxies then throw ConnectionError.
  void shutdown();
  /// Python: get_server(): a server in this process, listening already; serve_forever() runs it.
  Server get_server();
  connection::Address address() const;
  /// The server process's pid (start() only).
  std::optional<int> server_pid() const;
  /// Python: _number_of_objects(): objects the server holds now (for leak checks).
  std::size_t number_of_objects() const;

  /// Python: manager.Typeid(*args): a new object of a registered type. The arguments must have
  /// exactly the types of the factory's parameters (a string literal passes as std::string),
  /// else TypeMismatchError; an exception thrown by the factory is a RemoteError. A typeid
  /// registered for another type than T, or a built-in one, is a TypeMismatchError naming both
  /// types, raised before anything is sent; an unknown typeid is a KeyError.
  template <class T, class... A>
  Proxy<T> create(const std::string& typeid_, A&&... args);

 private:
  friend struct detail::mgr::ManagerAccess;  // the templates' way in
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

/// Python: SyncManager, the manager of mproc::Manager(): creators of the standard proxies.
class SyncManager : public BaseManager {
 public:
  using BaseManager::BaseManager;
  template <class K, class V>
  DictProxy<K, V> dict();
  template <class T>
  ListProxy<T> list(const std::vector<T>& initial = {});
  NamespaceProxy Namespace();
  template <class T>
  ValueProxy<T> Value(const T& initial = T{});
  template <class T>
  ArrayProxy<T> Array(const std::vector<T>& initial);
  template <class T>
  QueueProxy<T> Queue(std::int64_t maxsize = 0);
  template <class T>
  JoinableQueueProxy<T> JoinableQueue(std::int64_t maxsize = 0);
  AcquirerProxy Lock();
  AcquirerProxy RLock();
  AcquirerProxy Semaphore(std::int64_t value = 1);
  AcquirerProxy BoundedSemaphore(std::int64_t value = 1);
  /// With no lock, a new RLock (as Python); else a Lock or RLock of this manager.
  ConditionProxy Condition(const AcquirerProxy& lock = {});
  EventProxy Event();
  BarrierProxy Barrier(std::int64_t parties, std::optional<seconds> timeout = std::nullopt);
};

/// Python: multiprocessing.Manager(): a started SyncManager.
SyncManager Manager(ManagerOptions options = {});

/// Python: managers.Server: a manager server running in this process.
class Server {
 public:
  Server(Server&&) noexcept;
  ~Server();
  /// Serves clients until stop() or a shutdown request (which the shutdown() of a manager
  /// that start()ed a server sends), then ends every connection and returns.
  void serve_forever();
  /// Makes serve_forever() return (from another thread), as a shutdown request does.
  void stop();
  connection::Address address() const;

 private:
  friend class BaseManager;
  struct Impl;
  explicit Server(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace mproc

#include "mproc/detail/manager_proxies.hpp"  // the template bodies
