#include "managers/server.hpp"

#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "listener_detail.hpp"

namespace mproc::detail::mgr {

struct ServerCore::Client {
  int fd = -1;  // the socket (owned by conn), to wake the thread at shutdown
  Connection conn;
  std::thread thread;
  std::atomic<bool> done{false};
};

namespace {
constexpr double kHandshakeSeconds = 10;
}  // namespace

ServerCore::ServerCore(const connection::Address& address, std::optional<std::string> authkey, Registry registry)
    : authkey_(std::move(authkey)), dispatcher_(std::move(registry)) {
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

void ServerCore::serve_client(std::shared_ptr<Client> c) {
  Session session = dispatcher_.open_session();
  if (serve_handshake(c->conn, authkey_, seconds(kHandshakeSeconds))) {
    c->conn.set_max_message_size(kMaxRequest);
    std::string out;
    for (;;) {
      Buffer req;
      try {
        req = c->conn.recv_buffer();
      } catch (...) {  // EOF, garbage that is not a frame, a frame over the limit: close
        break;
      }
      CallCtx ctx{session.id, c->fd, &stopping_, {}, nullptr};
      Outcome outcome = dispatcher_.handle(session, req.data(), req.size(), out, ctx);
      if (outcome == Outcome::close) break;
      try {
        c->conn.send_bytes(out);
      } catch (...) {
        if (ctx.undo) ctx.undo();
        break;
      }
      if (outcome == Outcome::shutdown) stop();
    }
  }
  // Tell the client now (its descriptor is closed when the thread is reaped).
  ::shutdown(c->fd, SHUT_RDWR);
  // The client is gone: what it held goes with it.
  dispatcher_.close_session(session);
  c->done = true;
}

void server_process_main(ServerConfig config, Connection report) {
  // As Python's _run_server: Ctrl-C is for the program, which then shuts its manager down; a
  // client that vanished mid-reply is an error on that connection, not a signal.
  ::signal(SIGINT, SIG_IGN);
  ::signal(SIGPIPE, SIG_IGN);
  std::optional<ServerCore> core;
  try {
    Registry registry;
    for (auto& [name, ref, factory] : config.registry) {
      auto ops = reinterpret_cast<TypeOpsFn>(const_cast<void*>(resolve_code(ref, type_fingerprint<TypeOpsFn>())));
      registry.emplace(name, RegisteredType{ops(), std::move(factory)});
    }
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
