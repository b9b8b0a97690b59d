#include "managers/server.hpp"

#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cereal/details/helpers.hpp>

#include "listener_detail.hpp"
#include "mproc/queues.hpp"

namespace mproc::detail::mgr {

struct ServerCore::Client {
  std::uint64_t id = 0;
  int fd = -1;  // the socket (owned by conn), to wake the thread at shutdown
  Connection conn;
  std::thread thread;
  std::atomic<bool> done{false};
  std::unordered_map<std::uint64_t, std::uint64_t> refs;               // references it holds
  std::unordered_map<std::uint64_t, std::weak_ptr<Object>> owned;      // objects it may own (locks)
};

namespace {

constexpr double kHandshakeSeconds = 10;

void error_reply(std::string& out, Err code, const std::string& message) {
  out.assign(1, '\1');
  out.push_back(static_cast<char>(code));
  OutArchive ar(out);
  ar(message);
}

}  // namespace

ServerCore::ServerCore(const connection::Address& address, std::optional<std::string> authkey, Registry registry)
    : authkey_(std::move(authkey)), registry_(std::move(registry)) {
  listener_ = listen_on(address, 128, address_);
  wake_.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!wake_) os::throw_errno("eventfd for a manager server");
}

ServerCore::~ServerCore() {
  stop();
  std::vector<std::shared_ptr<Client>> all;
  {
    std::lock_guard lk(clients_mu_);
    all.swap(clients_);
  }
  for (auto& c : all) {
    ::shutdown(c->fd, SHUT_RDWR);
    if (c->thread.joinable()) c->thread.join();
  }
  if (address_.family == connection::Family::af_unix && !address_.is_abstract()) ::unlink(address_.host.c_str());
}

void ServerCore::stop() noexcept {
  stopping_ = true;
  std::uint64_t one = 1;
  if (wake_) (void)!::write(wake_.get(), &one, sizeof one);
}

void ServerCore::reap_finished() {
  std::lock_guard lk(clients_mu_);
  for (auto it = clients_.begin(); it != clients_.end();) {
    if ((*it)->done) {
      (*it)->thread.join();
      it = clients_.erase(it);
    } else {
      ++it;
    }
  }
}

void ServerCore::serve_forever() {
  while (!stopping_) {
    pollfd p[2] = {{listener_.get(), POLLIN, 0}, {wake_.get(), POLLIN, 0}};
    if (os::retry([&] { return ::poll(p, 2, 1000); }) < 0) break;
    reap_finished();
    if (stopping_ || p[1].revents) break;
    if (!(p[0].revents & POLLIN)) continue;
    int fd = ::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) continue;  // EMFILE, ECONNABORTED...: the next client may do better
    auto c = std::make_shared<Client>();
    c->fd = fd;
    c->conn = connection_from_socket(os::Fd(fd));
    std::lock_guard lk(clients_mu_);
    c->id = next_conn_++;
    c->thread = std::thread([this, c] { serve_client(c); });
    clients_.push_back(std::move(c));
  }
  stopping_ = true;
  listener_.reset();
  // Wake every client thread: blocked reads see EOF, blocking calls see `stopping_`.
  std::vector<std::shared_ptr<Client>> all;
  {
    std::lock_guard lk(clients_mu_);
    all.swap(clients_);
  }
  for (auto& c : all) ::shutdown(c->fd, SHUT_RDWR);
  for (auto& c : all) c->thread.join();
}

std::shared_ptr<Object> ServerCore::lookup(std::uint64_t id) {
  std::lock_guard lk(table_mu_);
  auto it = objects_.find(id);
  return it == objects_.end() ? nullptr : it->second.obj;
}

void ServerCore::decref(std::uint64_t id) {
  std::shared_ptr<Object> dying;  // destroyed outside the table's lock
  std::lock_guard lk(table_mu_);
  auto it = objects_.find(id);
  if (it == objects_.end()) return;
  if (--it->second.refs == 0) {
    dying = std::move(it->second.obj);
    objects_.erase(it);
  }
}

void ServerCore::serve_client(std::shared_ptr<Client> c) {
  if (serve_handshake(c->conn, authkey_, seconds(kHandshakeSeconds))) {
    c->conn.set_max_message_size(kMaxRequest);
    std::string out;
    for (;;) {
      Payload req;
      try {
        req.buf = c->conn.recv_buffer();
      } catch (...) {  // EOF, garbage that is not a frame, a frame over the limit: close
        break;
      }
      CallCtx ctx{c->id, c->fd, &stopping_, {}};
      bool shutdown = false;
      out.assign(1, '\0');
      try {
        if (req.buf.empty()) throw ProtocolError("empty request");
        handle(req, out, ctx, *c, shutdown);
      } catch (const ClientGone&) {
        break;
      } catch (const Reply& r) {
        error_reply(out, r.code, r.message);
      } catch (const FunctionIdentityError& e) {
        error_reply(out, Err::function_identity, e.what());
      } catch (const TypeMismatchError& e) {
        error_reply(out, Err::type_mismatch, e.what());
      } catch (const ProtocolError& e) {
        error_reply(out, Err::protocol, e.what());
      } catch (const KeyError& e) {
        error_reply(out, Err::key, e.what());
      } catch (const IndexError& e) {
        error_reply(out, Err::index, e.what());
      } catch (const ValueError& e) {
        error_reply(out, Err::value, e.what());
      } catch (const BrokenBarrierError& e) {
        error_reply(out, Err::broken_barrier, e.what());
      } catch (const RuntimeError& e) {
        error_reply(out, Err::runtime, e.what());
      } catch (const queue::Empty& e) {
        error_reply(out, Err::empty, e.what());
      } catch (const queue::Full& e) {
        error_reply(out, Err::full, e.what());
      } catch (const TimeoutError& e) {
        error_reply(out, Err::timeout, e.what());
      } catch (const cereal::Exception& e) {
        error_reply(out, Err::protocol, std::string("malformed request: ") + e.what());
      } catch (const std::bad_alloc&) {
        error_reply(out, Err::error, "the manager server is out of memory");
      } catch (const std::exception& e) {
        error_reply(out, Err::error, e.what());
      } catch (...) {
        error_reply(out, Err::error, "unknown error in the manager server");
      }
      try {
        c->conn.send_bytes(out);
      } catch (...) {
        if (ctx.undo) ctx.undo();
        break;
      }
      if (shutdown) stop();
    }
  }
  // Tell the client now (its descriptor is closed when the thread is reaped).
  ::shutdown(c->fd, SHUT_RDWR);
  // The client is gone: what it held goes with it.
  for (auto& [id, weak] : c->owned)
    if (auto obj = weak.lock()) obj->disconnected(c->id);
  for (auto& [id, n] : c->refs)
    for (std::uint64_t i = 0; i < n; ++i) decref(id);
  c->refs.clear();
  c->done = true;
}

void ServerCore::handle(const Payload& req, std::string& out, CallCtx& ctx, Client& c, bool& shutdown) {
  InArchive in(req.buf.data(), req.buf.size());
  std::uint8_t op = 0;
  in(op);
  switch (static_cast<Op>(op)) {
    case Op::call: {
      std::uint64_t id = 0, type = 0;
      std::string method;
      in(id, type, method);
      auto obj = lookup(id);
      if (!obj)
        throw Reply{Err::unknown_object, "the manager has no object " + std::to_string(id) +
                                             " (its last proxy went away, or it never existed)"};
      if (obj->type != type) throw TypeMismatchError("a proxy of another type than the manager's object " + std::to_string(id));
      if (obj->has_owners()) c.owned.emplace(id, obj);
      obj->call(method, in, out, ctx);
      return;
    }
    case Op::create: {
      std::string typeid_;
      std::uint64_t type = 0;
      in(typeid_, type);
      std::shared_ptr<Object> obj;
      if (auto it = registry_.find(typeid_); it != registry_.end()) {
        if (it->second->type != type)
          throw TypeMismatchError("typeid '" + typeid_ + "' is registered for another C++ type on the manager server");
        if (in.left() != 0) throw_trailing_bytes(in.left(), "a create request");
        obj = make_registered(it->second);
      } else {
        obj = make_builtin(typeid_, in, [this](std::uint64_t id) { return lookup(id); });
        if (!obj) throw Reply{Err::error, "the manager has no typeid '" + typeid_ + "' (register_type it in the server)"};
      }
      obj->type = type;
      std::uint64_t id;
      {
        std::lock_guard lk(table_mu_);
        id = next_id_++;
        objects_.emplace(id, Entry{std::move(obj), 1});
      }
      ++c.refs[id];
      OutArchive ar(out);
      ar(id);
      return;
    }
    case Op::incref: {
      std::uint64_t id = 0;
      in(id);
      std::lock_guard lk(table_mu_);
      auto it = objects_.find(id);
      if (it == objects_.end())
        throw Reply{Err::unknown_object, "the manager has no object " + std::to_string(id) + " any more"};
      ++it->second.refs;
      ++c.refs[id];
      return;
    }
    case Op::decref: {
      std::uint64_t id = 0;
      in(id);
      auto it = c.refs.find(id);
      if (it == c.refs.end()) return;  // only what this connection holds can be let go
      if (--it->second == 0) c.refs.erase(it);
      decref(id);
      return;
    }
    case Op::shutdown:
      shutdown = true;
      return;
    case Op::info: {
      std::uint64_t n;
      {
        std::lock_guard lk(table_mu_);
        n = objects_.size();
      }
      OutArchive ar(out);
      ar(static_cast<std::int32_t>(::getpid()), n);
      return;
    }
  }
  throw ProtocolError("unknown manager request " + std::to_string(op));
}

void server_process_main(ServerConfig config, Connection report) {
  // As Python's _run_server: Ctrl-C is for the program, which then shuts its manager down; a
  // client that vanished mid-reply is an error on that connection, not a signal.
  ::signal(SIGINT, SIG_IGN);
  ::signal(SIGPIPE, SIG_IGN);
  std::optional<ServerCore> core;
  try {
    Registry registry;
    for (const auto& [name, ref] : config.registry)
      registry.emplace(name, reinterpret_cast<TypeOpsFn>(const_cast<void*>(resolve_code(ref, type_fingerprint<TypeOpsFn>())))());
    core.emplace(config.address, config.authkey, std::move(registry));
  } catch (const std::exception& e) {
    report.send(std::string(e.what()));
    return;
  }
  report.send(std::string());
  report.send(core->address());
  report.close();
  core->serve_forever();
}

}  // namespace mproc::detail::mgr
