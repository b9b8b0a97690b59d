// BaseManager, SyncManager, Manager(), Server (Python: managers.BaseManager, SyncManager,
// multiprocessing.Manager, managers.Server).
#include <unistd.h>

#include <chrono>

#include "listener_detail.hpp"
#include "managers/protocol.hpp"
#include "managers/server.hpp"
#include "mproc/managers.hpp"
#include "mproc/process.hpp"
#include "util/auth.hpp"

namespace mproc {
namespace detail::mgr {
Payload plain_request(const std::shared_ptr<Endpoint>& ep, Op op);
}

struct BaseManager::Impl {
  ManagerOptions options;
  std::string authkey;
  struct Registration {
    std::string name;
    std::uint64_t type;
    std::string type_name;  // for create<T>'s messages
    detail::CodeRef ref;
    detail::mgr::TypeOpsFn local;
    std::string factory;  // its code identity (save_target), empty when there is none to send
  };
  std::vector<Registration> registrations;
  std::optional<Process> process;
  std::shared_ptr<detail::mgr::Endpoint> endpoint;
  connection::Address address;
};

struct Server::Impl {
  std::unique_ptr<detail::mgr::ServerCore> core;
};

namespace {

connection::Address default_address() {
  std::string name = std::string(1, '\0') + "mproc-manager-" + std::to_string(::getpid()) + "-";
  for (unsigned char b : detail::random_bytes(8)) name += "0123456789abcdef"[b & 15];
  return connection::Address(std::move(name));
}

}  // namespace

BaseManager::BaseManager(ManagerOptions options) : impl_(std::make_unique<Impl>()) {
  impl_->authkey = options.authkey ? *options.authkey : detail::authkey();
  impl_->address = options.address ? detail::resolve_family(*options.address, connection::Family::any) : default_address();
  impl_->options = std::move(options);
}

BaseManager::BaseManager(BaseManager&&) noexcept = default;
BaseManager& BaseManager::operator=(BaseManager&&) noexcept = default;

BaseManager::~BaseManager() {
  if (!impl_) return;
  try {
    shutdown();
  } catch (...) {  // a destructor reports nothing it cannot fix
  }
}

void detail::mgr::ManagerAccess::add_registration(BaseManager& m, const std::string& name, std::uint64_t type, CodeRef ref,
                                                 TypeOpsFn local, std::string factory) {
  auto& impl = *m.impl_;
  if (impl.process) throw ProcessError("register_type() after start(): the server would not know '" + name + "'");
  // Python's register replaces silently; with typed factories and proxies a second type under
  // one name would make create<T> of the first fail far from the cause, so it is refused here.
  if (detail::mgr::is_builtin_typeid(name))
    throw Error("register_type(\"" + name + "\"): '" + name +
                "' is the typeid of a built-in manager type (SyncManager's); register under another name");
  for (const auto& r : impl.registrations)
    if (r.name == name)
      throw Error("register_type(\"" + name + "\"): '" + name + "' is registered already (for " + r.type_name +
                  "); each typeid names one type");
  impl.registrations.push_back({name, type, std::string(local()->name), ref, local, std::move(factory)});
}

void BaseManager::start() {
  if (impl_->process || impl_->endpoint) throw ProcessError("this manager was started or connected already");
  detail::mgr::ServerConfig config{impl_->address, impl_->authkey, {}};
  for (const auto& r : impl_->registrations) config.registry.emplace_back(r.name, r.ref, r.factory);
  auto [reader, writer] = Pipe(false);
  // A daemon: it ends with the program even when nobody calls shutdown().
  Process p(ProcessOptions{.name = "SyncManager", .daemon = true, .context = impl_->options.ctx},
            detail::mgr::server_process_main, std::move(config), writer);
  p.start();
  writer.close();
  // Wait for the server to listen (or fail); never forever.
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (!reader.poll(seconds(0.1))) {
    if (!p.is_alive() || std::chrono::steady_clock::now() > deadline) {
      p.terminate();
      p.join();
      throw ProcessError("the manager server process ended before it listened (exit code " +
                         std::to_string(p.exitcode().value_or(0)) + ")");
    }
  }
  std::string error;
  try {
    error = reader.recv<std::string>();
    if (error.empty()) impl_->address = reader.recv<connection::Address>();
  } catch (const std::exception& e) {
    error = e.what();
  }
  if (!error.empty()) {
    p.join(seconds(5));
    if (p.is_alive()) p.kill();
    p.join();
    throw ProcessError("the manager server could not start: " + error);
  }
  impl_->process = std::move(p);
  impl_->endpoint = detail::mgr::endpoint(impl_->address, impl_->authkey);
}

void BaseManager::connect() {
  if (impl_->process || impl_->endpoint) throw ProcessError("this manager was started or connected already");
  auto ep = detail::mgr::endpoint(impl_->address, impl_->authkey);
  detail::mgr::plain_request(ep, detail::mgr::Op::info);  // proves the address and the key now
  impl_->endpoint = std::move(ep);
}

void BaseManager::shutdown() {
  if (!impl_->process) {
    impl_->endpoint.reset();
    return;
  }
  try {
    detail::mgr::plain_request(impl_->endpoint, detail::mgr::Op::shutdown);
  } catch (const std::exception&) {  // already gone: join below says how it ended
  }
  auto& p = *impl_->process;
  if (!p.join(seconds(5))) {
    p.terminate();
    if (!p.join(seconds(2))) p.kill();
    p.join();
  }
  impl_->process.reset();
  impl_->endpoint.reset();
}

Server BaseManager::get_server() {
  detail::mgr::Registry registry;
  for (const auto& r : impl_->registrations) registry.emplace(r.name, detail::mgr::RegisteredType{r.local(), r.factory});
  auto impl = std::make_unique<Server::Impl>();
  impl->core = std::make_unique<detail::mgr::ServerCore>(impl_->address, impl_->authkey, std::move(registry));
  return Server(std::move(impl));
}

connection::Address BaseManager::address() const { return impl_->address; }

std::optional<int> BaseManager::server_pid() const {
  return impl_->process ? impl_->process->pid() : std::nullopt;
}

std::size_t BaseManager::number_of_objects() const {
  if (!impl_->endpoint) throw ProcessError("the manager is neither started nor connected: call start() or connect()");
  auto p = detail::mgr::plain_request(impl_->endpoint, detail::mgr::Op::info);
  detail::InArchive ar(p.data(), p.size());
  std::int32_t pid = 0;
  std::uint64_t n = 0;
  ar(pid, n);
  return static_cast<std::size_t>(n);
}

std::shared_ptr<detail::mgr::ObjectRef> detail::mgr::ManagerAccess::create(BaseManager& m, std::string_view typeid_,
                                                                         std::uint64_t type, const std::string& args) {
  auto& impl = *m.impl_;
  if (!impl.endpoint) throw ProcessError("the manager is neither started nor connected: call start() or connect()");
  return detail::mgr::create(impl.endpoint, typeid_, type, args, typeid_);
}

std::shared_ptr<detail::mgr::ObjectRef> detail::mgr::ManagerAccess::create_registered(BaseManager& m,
                                                                                    std::string_view typeid_,
                                                                                    std::uint64_t type,
                                                                                    std::string_view type_name,
                                                                                    const std::string& args) {
  auto& impl = *m.impl_;
  const std::string name(typeid_);
  const std::string what = "create<" + std::string(type_name) + ">(\"" + name + "\")";
  // Checked here, before any bytes go: a built-in or another type's name would otherwise make
  // an object the proxy cannot talk to.
  if (detail::mgr::is_builtin_typeid(typeid_))
    throw TypeMismatchError(what + ": '" + name + "' is a built-in manager type (SyncManager's " + name +
                            "), not a registered type, so it cannot make a " + std::string(type_name));
  bool known = false;
  for (const auto& r : impl.registrations)
    if (r.name == typeid_) {
      if (r.type != type)
        throw TypeMismatchError(what + ": '" + name + "' is registered for " + r.type_name + ", not for " +
                                std::string(type_name));
      known = true;
    }
  // A server this manager started has exactly its registrations; one it connected to may have
  // others (a client need not register anything), so that server answers.
  if (!known && impl.process)
    throw KeyError(what + ": no type is registered as '" + name + "' (register_type it before start())");
  if (!impl.endpoint) throw ProcessError("the manager is neither started nor connected: call start() or connect()");
  return detail::mgr::create(impl.endpoint, typeid_, type, args, what);
}

// ------------------------------------------------------------------------------ SyncManager

namespace {
std::string encoded_i64(std::int64_t v) {
  std::string s;
  detail::encode(s, v);
  return s;
}
}  // namespace

NamespaceProxy SyncManager::Namespace() { return detail::mgr::make_proxy<NamespaceProxy>(*this, "Namespace"); }
AcquirerProxy SyncManager::Lock() { return detail::mgr::make_proxy<AcquirerProxy>(*this, "Lock"); }
AcquirerProxy SyncManager::RLock() { return detail::mgr::make_proxy<AcquirerProxy>(*this, "RLock"); }
AcquirerProxy SyncManager::Semaphore(std::int64_t value) {
  return detail::mgr::make_proxy<AcquirerProxy>(*this, "Semaphore", encoded_i64(value));
}
AcquirerProxy SyncManager::BoundedSemaphore(std::int64_t value) {
  return detail::mgr::make_proxy<AcquirerProxy>(*this, "BoundedSemaphore", encoded_i64(value));
}
ConditionProxy SyncManager::Condition(const AcquirerProxy& lock) {
  std::string args;
  detail::encode(args, static_cast<std::uint64_t>(lock ? lock.id() : 0));
  // A Condition answers to the lock methods too: it shares AcquirerProxy's type on the wire.
  return ConditionProxy(detail::mgr::ManagerAccess::create(*this, "Condition", detail::type_fingerprint<AcquirerProxy>(), args));
}
EventProxy SyncManager::Event() { return detail::mgr::make_proxy<EventProxy>(*this, "Event"); }
BarrierProxy SyncManager::Barrier(std::int64_t parties, std::optional<seconds> timeout) {
  std::string args;
  detail::encode(args, parties);
  detail::encode(args, detail::mgr::wire_timeout(timeout, "SyncManager.Barrier"));
  return detail::mgr::make_proxy<BarrierProxy>(*this, "Barrier", args);
}

SyncManager Manager(ManagerOptions options) {
  SyncManager m(std::move(options));
  m.start();
  return m;
}

// ---------------------------------------------------------------------------------- Server

Server::Server(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Server::Server(Server&&) noexcept = default;
Server::~Server() = default;
void Server::serve_forever() { impl_->core->serve_forever(); }
void Server::stop() { impl_->core->stop(); }
connection::Address Server::address() const { return impl_->core->address(); }

}  // namespace mproc
