#include "spawn/forkserver.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <map>
#include <mutex>

#include "mproc/errors.hpp"
#include "popen/popen.hpp"
#include "reduction/wire.hpp"
#include "spawn/spawn.hpp"
#include "util/auth.hpp"
#include "util/challenge.hpp"

namespace mproc::detail {
namespace {

constexpr std::size_t kChallenge = challenge::kSize;
constexpr std::uint32_t kForkRequest = 0x4b524f46;  // "FORK"
constexpr std::size_t kMaxPassedFds = 200;          // with the fixed four, below SCM_MAX_FD (253)
// The handshake's bytes are util/challenge's; these labels make its answers good for the fork
// server only.
constexpr challenge::Labels kLabels{"mproc-forkserver-client:", "mproc-forkserver-server:"};

sockaddr_un abstract_address(const std::string& name, socklen_t& len) {
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  a.sun_path[0] = '\0';
  std::memcpy(a.sun_path + 1, name.data(), std::min(name.size(), sizeof(a.sun_path) - 2));
  len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + name.size());
  return a;
}

ssize_t send_with_fds(int sock, const void* data, std::size_t n, const std::vector<int>& fds) {
  iovec iov{const_cast<void*>(data), n};
  msghdr m{};
  m.msg_iov = &iov;
  m.msg_iovlen = 1;
  std::vector<char> control(CMSG_SPACE(sizeof(int) * fds.size()));
  if (!fds.empty()) {
    m.msg_control = control.data();
    m.msg_controllen = control.size();
    cmsghdr* c = CMSG_FIRSTHDR(&m);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
  }
  return os::retry([&] { return ::sendmsg(sock, &m, MSG_NOSIGNAL); });
}

// One datagram and the descriptors that came with it (all owned by the caller).
ssize_t recv_with_fds(int sock, void* data, std::size_t n, std::vector<int>& fds, int flags) {
  iovec iov{data, n};
  msghdr m{};
  m.msg_iov = &iov;
  m.msg_iovlen = 1;
  std::vector<char> control(CMSG_SPACE(sizeof(int) * (kMaxPassedFds + 4)));
  m.msg_control = control.data();
  m.msg_controllen = control.size();
  ssize_t r = os::retry([&] { return ::recvmsg(sock, &m, MSG_CMSG_CLOEXEC | flags); });
  if (r < 0) return r;
  for (cmsghdr* c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    std::size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (std::size_t i = 0; i < count; ++i) {
      int fd;
      std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
      fds.push_back(fd);
    }
  }
  if (m.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) {  // something was cut off: refuse it all
    for (int fd : fds) ::close(fd);
    fds.clear();
    errno = EMSGSIZE;
    return -1;
  }
  return r;
}

// ---------------------------------------------------------------------------------------------
// Client side: one per process; a fork child gets a fresh one.

struct Client {
  std::mutex mu;
  std::string address;
  int server_pid = 0;
  bool started_here = false;
  os::Fd alive;  // write end held by the process that started the server: its EOF stops it
  os::Fd conn;   // authenticated; never shared with a fork child
  Client* parents = nullptr;  // the parent's, in a fork child: kept reachable (see ProcessState)
};

Client* g_client = new Client;  // leaked on purpose: a fork child must not destroy the parent's

void start_server(Client& c) {
  std::string name = "mproc-forkserver-" + std::to_string(::getpid()) + "-";
  for (unsigned char b : random_bytes(8)) {
    char h[3];
    std::snprintf(h, sizeof h, "%02x", b);
    name += h;
  }
  os::Fd listener(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
  if (!listener) os::throw_errno("socket for the fork server");
  socklen_t len;
  sockaddr_un addr = abstract_address(name, len);
  if (::bind(listener.get(), reinterpret_cast<sockaddr*>(&addr), len) != 0) os::throw_errno("bind the fork server socket");
  if (::listen(listener.get(), 128) != 0) os::throw_errno("listen on the fork server socket");
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) os::throw_errno("pipe for the fork server");
  os::Fd alive_r(p[0]), alive_w(p[1]);

  StartupMessage msg;
  msg.authkey = authkey();
  msg.name = "ForkServer";
  msg.parent_pid = ::getpid();
  msg.parent_name = state().name;
  msg.nfds = 2;
  std::string frame = encode_frame(msg);
  os::Fd memfd = os::memfd_with("mproc-forkserver", frame.data(), frame.size());
  int pid = 0;
  try {
    pid = spawn_self(kForkserverMarker, memfd.get(), {listener.get(), alive_r.get()});
  } catch (const OSError& e) {  // say which process could not be spawned: not the one asked for
    throw OSError(std::string("cannot start the fork server: ") + e.what(), e.code());
  }
  c.address = name;
  c.server_pid = pid;
  c.started_here = true;
  c.alive = std::move(alive_w);
}

void reset_after_death(Client& c) {
  if (c.started_here && c.server_pid > 0) ::waitpid(c.server_pid, nullptr, WNOHANG);  // reap it
  c.conn.reset();
  c.alive.reset();
  c.address.clear();
  c.server_pid = 0;
  c.started_here = false;
}

[[noreturn]] void server_died(Client& c, const char* during) {
  int pid = c.server_pid;
  reset_after_death(c);
  throw ProcessError("the fork server (pid " + std::to_string(pid) + ") died (noticed while " + during +
                     "); the process was not started. The next start() starts a new fork server.");
}

// Mutual challenge-response: the server proves itself as well, so a stranger listening on a
// recycled address learns nothing and cannot answer for us.
void handshake(Client& c) {
  unsigned char buf[challenge::kHelloSize];
  ssize_t r = os::retry([&] { return ::recv(c.conn.get(), buf, sizeof buf, 0); });
  std::string reply, mine;
  if (r < 0 || challenge::reply(authkey(), kLabels, buf, static_cast<std::size_t>(r), reply, mine) != challenge::Outcome::ok)
    server_died(c, "authenticating");
  if (::send(c.conn.get(), reply.data(), reply.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(reply.size()))
    server_died(c, "authenticating");
  unsigned char verdict[challenge::kVerdictSize];
  r = os::retry([&] { return ::recv(c.conn.get(), verdict, sizeof verdict, 0); });
  switch (r < 0 ? challenge::Outcome::malformed
                : challenge::check_verdict(authkey(), kLabels, mine, verdict, static_cast<std::size_t>(r))) {
    case challenge::Outcome::ok:
      return;
    case challenge::Outcome::refused:
      throw AuthenticationError("the fork server refused this process's key");
    case challenge::Outcome::unproven:
      throw AuthenticationError("the fork server did not prove that it holds this program's key");
    case challenge::Outcome::malformed:
      server_died(c, "authenticating");
  }
}

void ensure_connected(Client& c) {
  if (c.conn) return;
  if (c.address.empty()) start_server(c);
  for (int attempt = 0; attempt < 2; ++attempt) {
    os::Fd s(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
    if (!s) os::throw_errno("socket to the fork server");
    socklen_t len;
    sockaddr_un addr = abstract_address(c.address, len);
    if (os::retry([&] { return ::connect(s.get(), reinterpret_cast<sockaddr*>(&addr), len); }) == 0) {
      c.conn = std::move(s);
      handshake(c);
      return;
    }
    if (attempt == 0 && !c.started_here && (errno == ECONNREFUSED || errno == ENOENT)) {
      reset_after_death(c);  // the inherited server is gone: start one of our own
      start_server(c);
      continue;
    }
    server_died(c, "connecting");
  }
}

// ---------------------------------------------------------------------------------------------
// Server side.

struct Peer {
  os::Fd sock;
  enum { challenged, ready } stage = challenged;
  unsigned char challenge[kChallenge];
};

struct Child {
  os::Fd status;  // where its exit code goes
  int peer;       // the socket of the process that asked for it
  bool daemon;
};

struct Server {
  int listener, alive, sigfd;
  std::map<int, std::unique_ptr<Peer>> peers;  // by socket fd
  std::map<int, Child> children;               // by pid
};

// Request: kind, count of passed descriptors, flags; descriptors [status, message, stdout,
// stderr, passed...]. The child writes to its requester's stdout and stderr, not the server's,
// so that a redirection in the program applies to forkserver children as to the others.
constexpr std::size_t kRequestSize = 12;
constexpr std::uint32_t kDaemonFlag = 1;
constexpr std::size_t kFixedFds = 4;

[[noreturn]] void run_forked_child(Server& s, int parent, std::vector<int>& fds) {
  // fds: [status, message, passed...]. Everything else of the server closes here.
  ::close(s.listener);
  ::close(s.alive);
  ::close(s.sigfd);
  for (auto& [fd, peer] : s.peers) ::close(peer->sock.release());
  for (auto& [pid, child] : s.children) ::close(child.status.release());
  ::close(fds[0]);
  ::dup2(fds[2], 1);
  ::dup2(fds[3], 2);
  ::close(fds[2]);
  ::close(fds[3]);
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);  // delivers what was sent while it was blocked
  std::string framed;
  try {
    framed = os::read_whole(fds[1], std::size_t{1} << 30);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mproc: fork server child cannot read its start-up message: %s\n", e.what());
    ::_exit(255);
  }
  ::close(fds[1]);
  child_main(framed, std::vector<int>(fds.begin() + kFixedFds, fds.end()), parent, -1);
}

// A requester that is gone (its connection closed) cannot join or stop its children any more:
// end them as a dead parent's children end (daemon: SIGKILL, others SIGTERM). A requester that
// exits normally has joined them already.
void drop_peer(Server& s, int fd) {
  for (auto& [pid, child] : s.children)
    if (child.peer == fd) ::kill(pid, child.daemon ? SIGKILL : SIGTERM);
  s.peers.erase(fd);
}

void serve_request(Server& s, Peer& p) {
  unsigned char buf[kRequestSize];
  std::vector<int> fds;
  ssize_t r = recv_with_fds(p.sock.get(), buf, sizeof buf, fds, MSG_DONTWAIT);
  if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
  std::uint32_t kind = 0, nfds = 0, flags = 0;
  if (r == static_cast<ssize_t>(sizeof buf)) {
    std::memcpy(&kind, buf, 4);
    std::memcpy(&nfds, buf + 4, 4);
    std::memcpy(&flags, buf + 8, 4);
  }
  if (r != static_cast<ssize_t>(sizeof buf) || kind != kForkRequest || fds.size() != nfds + kFixedFds) {
    for (int fd : fds) ::close(fd);
    drop_peer(s, p.sock.get());  // not a request we understand: this client is done
    return;
  }
  int self = ::getpid();
  pid_t pid = ::fork();
  if (pid == 0) run_forked_child(s, self, fds);
  // A failed fork (EAGAIN: out of processes) is told as -errno, so that the client reports the
  // cause instead of taking the EOF for the death of a server that still runs.
  std::int32_t pid32 = pid < 0 ? -errno : pid;  // before the closes below, which may set errno
  os::Fd st(fds[0]);
  for (std::size_t i = 1; i < fds.size(); ++i) ::close(fds[i]);
  if (pid < 0) {
    ::send(st.get(), &pid32, sizeof pid32, MSG_NOSIGNAL);
    return;
  }
  if (::send(st.get(), &pid32, sizeof pid32, MSG_NOSIGNAL) == sizeof pid32)
    s.children.emplace(pid, Child{std::move(st), p.sock.get(), (flags & kDaemonFlag) != 0});
}

void serve_handshake(Server& s, Peer& p) {
  unsigned char buf[challenge::kReplySize];
  ssize_t r = os::retry([&] { return ::recv(p.sock.get(), buf, sizeof buf, MSG_DONTWAIT); });
  if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
  bool ok = false;
  std::string v = challenge::verdict(authkey(), kLabels, p.challenge, buf, r < 0 ? 0 : static_cast<std::size_t>(r), ok);
  ::send(p.sock.get(), v.data(), v.size(), MSG_NOSIGNAL);
  if (!ok) {
    drop_peer(s, p.sock.get());
    return;
  }
  p.stage = Peer::ready;
}

void reap_children(Server& s) {
  signalfd_siginfo si;
  while (::read(s.sigfd, &si, sizeof si) == sizeof si) {
  }
  for (;;) {
    int st = 0;
    pid_t pid = ::waitpid(-1, &st, WNOHANG);
    if (pid <= 0) break;
    auto it = s.children.find(pid);
    if (it == s.children.end()) continue;
    std::int32_t rc = returncode_from_status(st);
    ::send(it->second.status.get(), &rc, sizeof rc, MSG_NOSIGNAL);
    s.children.erase(it);
  }
}

}  // namespace

ForkserverEndpoint forkserver_endpoint() {
  std::lock_guard lock(g_client->mu);
  return {g_client->address, g_client->server_pid};
}

std::vector<int> forkserver_client_fds() {
  std::lock_guard lock(g_client->mu);
  std::vector<int> fds;
  for (const os::Fd* fd : {&g_client->alive, &g_client->conn})
    if (*fd) fds.push_back(fd->get());
  return fds;
}

void adopt_forkserver_endpoint(ForkserverEndpoint ep) {
  std::lock_guard lock(g_client->mu);
  g_client->address = std::move(ep.address);
  g_client->server_pid = ep.pid;
  g_client->started_here = false;
}

void forkserver_reset_in_child() noexcept {
  Client* old = g_client;
  // The parent's descriptors are copies here; close ours without touching its mutex.
  if (old->conn) ::close(old->conn.release());
  if (old->alive) ::close(old->alive.release());
  auto* fresh = new Client;
  fresh->address = old->address;
  fresh->server_pid = old->server_pid;
  fresh->parents = old;
  g_client = fresh;
}

ForkserverChild forkserver_launch(int message_fd, const std::vector<int>& fds, bool daemon) {
  if (fds.size() > kMaxPassedFds) throw ProcessError("too many descriptors to pass to a forkserver child");
  std::lock_guard lock(g_client->mu);
  Client& c = *g_client;
  ensure_connected(c);
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) os::throw_errno("socketpair for a forkserver child");
  os::Fd status(sv[0]), status_w(sv[1]);
  std::vector<int> all = {status_w.get(), message_fd, 1, 2};
  all.insert(all.end(), fds.begin(), fds.end());
  unsigned char req[kRequestSize];
  std::uint32_t kind = kForkRequest, n = static_cast<std::uint32_t>(fds.size()), flags = daemon ? kDaemonFlag : 0;
  std::memcpy(req, &kind, 4);
  std::memcpy(req + 4, &n, 4);
  std::memcpy(req + 8, &flags, 4);
  if (send_with_fds(c.conn.get(), req, sizeof req, all) != static_cast<ssize_t>(sizeof req)) server_died(c, "sending a request");
  status_w.reset();
  std::int32_t pid = 0;
  if (os::read_full(status.get(), &pid, sizeof pid, "read from the fork server") != sizeof pid || pid == 0)
    server_died(c, "waiting for the new child's pid");
  if (pid < 0)
    os::throw_errno("the fork server (pid " + std::to_string(c.server_pid) + ") could not fork the child", -pid);
  return {pid, std::move(status)};
}

void forkserver_stop() noexcept {
  std::lock_guard lock(g_client->mu);
  Client& c = *g_client;
  if (!c.started_here) return;
  int pid = c.server_pid;
  c.conn.reset();
  c.alive.reset();  // EOF on its pipe: the server exits
  ::waitpid(pid, nullptr, 0);
  c.address.clear();
  c.server_pid = 0;
  c.started_here = false;
}

void forkserver_main(const std::string& framed, int listener, int alive) {
  StartupMessage msg;
  try {
    msg = decode_frame<StartupMessage>(framed);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mproc: fork server cannot start: %s\n", e.what());
    ::_exit(255);
  }
  set_authkey(msg.authkey);
  reset_state_in_child("ForkServer", {}, true, msg.parent_pid, msg.parent_name, Method::spawn);
  // Ctrl-C is for the program, which then stops its children itself. SIGINT is blocked rather
  // than ignored: a child inherits the mask, so a SIGINT sent to it right after fork stays
  // pending until it unblocks, instead of being lost to an inherited SIG_IGN.
  sigset_t blocked, chld;
  sigemptyset(&blocked);
  sigaddset(&blocked, SIGCHLD);
  sigaddset(&blocked, SIGINT);
  ::sigprocmask(SIG_BLOCK, &blocked, nullptr);
  sigemptyset(&chld);
  sigaddset(&chld, SIGCHLD);
  Server s{listener, alive, ::signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK), {}, {}};
  ::fcntl(listener, F_SETFD, FD_CLOEXEC);
  ::fcntl(alive, F_SETFD, FD_CLOEXEC);
  for (;;) {
    std::vector<pollfd> p = {{alive, POLLIN, 0}, {s.sigfd, POLLIN, 0}, {listener, POLLIN, 0}};
    for (auto& [fd, peer] : s.peers) p.push_back({fd, POLLIN, 0});
    if (os::retry([&] { return ::poll(p.data(), p.size(), -1); }) < 0) ::_exit(1);
    if (p[0].revents) ::_exit(0);  // the program is gone (or closed our pipe): so are we
    if (p[1].revents) reap_children(s);
    if (p[2].revents & POLLIN) {
      int fd = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd >= 0 && s.peers.size() < 1024) {
        auto peer = std::make_unique<Peer>();
        peer->sock.reset(fd);
        std::string hello = challenge::hello(peer->challenge);
        ::send(fd, hello.data(), hello.size(), MSG_NOSIGNAL);
        s.peers.emplace(fd, std::move(peer));
      } else if (fd >= 0) {
        ::close(fd);
      }
    }
    for (std::size_t i = 3; i < p.size(); ++i) {
      if (!p[i].revents) continue;
      auto it = s.peers.find(p[i].fd);
      if (it == s.peers.end()) continue;
      if (p[i].revents & (POLLHUP | POLLERR) && !(p[i].revents & POLLIN)) {
        drop_peer(s, p[i].fd);
        continue;
      }
      if (it->second->stage == Peer::challenged)
        serve_handshake(s, *it->second);
      else
        serve_request(s, *it->second);
    }
  }
}

}  // namespace mproc::detail
