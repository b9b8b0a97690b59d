// The resource tracker process (CPython's resource_tracker.main).
//
// It keeps the names that processes of the program registered and did not unregister. When the
// program is gone -- its root process has exited and every process that talked to the tracker
// has closed its connection, which the kernel does for a process killed with SIGKILL too -- it
// reports what is left on stderr, once, and unlinks it. It unlinks a name only while the name
// still refers to the file that was registered: a name unlinked already, or unlinked and created
// again by someone else, is left alone. Only processes that prove they hold the program's key
// are heard at all.
#include <fcntl.h>
#include <poll.h>
#include <semaphore.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <utility>

#include "os/proc.hpp"
#include "popen/popen.hpp"
#include "resource_tracker/protocol.hpp"
#include "resource_tracker/resource_tracker.hpp"

namespace mproc::detail {

int unlink_if_same(ResourceKind kind, const std::string& name, os::FileIdentity id) noexcept {
  std::string path = kind == ResourceKind::semaphore ? os::semaphore_path(name) : os::shm_path(name);
  os::FileIdentity now = os::identity_of_path(path);
  if (!now) return ENOENT;
  if (now != id) return ESTALE;
  // A window remains between the check and the unlink, in which another process could unlink
  // the name and create it again; there is no unlink-by-descriptor to close it.
  int r = kind == ResourceKind::semaphore ? ::sem_unlink(name.c_str()) : ::shm_unlink(name.c_str());
  return r == 0 ? 0 : errno;
}

namespace tracker {
namespace {

using Clock = std::chrono::steady_clock;

constexpr std::size_t kMaxPeers = 4096;
// A peer must finish the handshake in this time, and a tracker whose root died before anyone
// connected waits this long for the process that started it.
constexpr auto kGrace = std::chrono::seconds(10);

struct Peer {
  os::Fd sock;
  bool ready = false;  // authenticated
  unsigned char challenge[kChallenge];
  Clock::time_point deadline;
};

struct Tracker {
  int listener = -1;
  int root = -1;  // pidfd of the program's root; -1 once it is gone
  bool seen_client = false;
  Clock::time_point started = Clock::now();
  std::map<int, std::unique_ptr<Peer>> peers;  // by socket
  Registry registered;
};

int open_root(int pid, std::uint64_t start) {
  int fd = pidfd_open(pid);
  if (fd < 0) return -1;
  // The pidfd pins one process; the start time says it is the root and not a recycled pid.
  if (start != 0 && os::process_start_time(pid) != start) {
    ::close(fd);
    return -1;
  }
  return fd;
}

void say(const std::string& line) {
  std::string out = "mproc: resource_tracker: " + line + "\n";
  (void)!::write(2, out.data(), out.size());
}

void accept_peers(Tracker& t) {
  for (;;) {
    int fd = ::accept4(t.listener, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd < 0) return;
    if (t.peers.size() >= kMaxPeers) {
      ::close(fd);
      continue;
    }
    auto peer = std::make_unique<Peer>();
    peer->sock.reset(fd);
    peer->deadline = Clock::now() + kGrace;
    std::string ch = random_bytes(kChallenge);
    std::memcpy(peer->challenge, ch.data(), kChallenge);
    unsigned char hello[kHelloSize];
    auto pid = static_cast<std::uint32_t>(::getpid());
    std::memcpy(hello, "CHAL", 4);
    std::memcpy(hello + 4, &pid, 4);
    std::memcpy(hello + 8, peer->challenge, kChallenge);
    if (::send(fd, hello, sizeof hello, MSG_NOSIGNAL) != static_cast<ssize_t>(sizeof hello)) continue;  // gone already
    t.peers.emplace(fd, std::move(peer));
  }
}

// False when the peer is done (failed, or closed its end).
bool serve_handshake(Tracker& t, Peer& p) {
  unsigned char buf[kReplySize];
  ssize_t r = os::retry([&] { return ::recv(p.sock.get(), buf, sizeof buf, MSG_DONTWAIT); });
  if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return true;
  auto pid = static_cast<std::uint32_t>(::getpid());
  Digest expect = answer(kClientLabel, p.challenge, pid);
  if (r != static_cast<ssize_t>(sizeof buf) || !equal_constant_time(expect.data(), buf, 32)) {
    ::send(p.sock.get(), "FAIL", 4, MSG_NOSIGNAL);
    return false;
  }
  unsigned char verdict[kVerdictSize];
  std::memcpy(verdict, "OK..", 4);
  Digest a = answer(kServerLabel, buf + 32, pid);
  std::memcpy(verdict + 4, a.data(), 32);
  if (::send(p.sock.get(), verdict, sizeof verdict, MSG_NOSIGNAL) != static_cast<ssize_t>(sizeof verdict)) return false;
  p.ready = true;
  t.seen_client = true;
  return true;
}

}  // namespace

RequestOutcome handle_request(Registry& registry, const unsigned char* m, std::size_t n) {
  std::uint32_t kind = 0;
  os::FileIdentity id;
  if (n > kRequestHeader) {
    std::memcpy(&kind, m + 4, 4);
    std::memcpy(&id.dev, m + 8, 8);
    std::memcpy(&id.ino, m + 16, 8);
  }
  std::string name(reinterpret_cast<const char*>(m) + std::min(n, kRequestHeader), n - std::min(n, kRequestHeader));
  bool known_kind = kind == static_cast<std::uint32_t>(ResourceKind::shared_memory) ||
                    kind == static_cast<std::uint32_t>(ResourceKind::semaphore);
  bool good_name = name.starts_with('/') && os::shm_name_problem(name).empty();
  auto key = std::make_pair(static_cast<ResourceKind>(kind), name);
  if (known_kind && good_name && std::memcmp(m, kRegister, 4) == 0 && id) {
    auto it = registry.find(key);
    if (it != registry.end()) {
      it->second = id;
    } else {
      if (registry.size() >= kMaxRegistered) return RequestOutcome::registry_full;
      registry.emplace(key, id);
    }
  } else if (known_kind && good_name && std::memcmp(m, kUnregister, 4) == 0) {
    auto it = registry.find(key);
    if (it != registry.end() && (!id || it->second == id)) registry.erase(it);
  } else {
    return RequestOutcome::malformed;
  }
  return RequestOutcome::applied;
}

namespace {

void handle(Tracker& t, const unsigned char* m, std::size_t n) {
  // Python prints the exception and carries on; so do we
  switch (handle_request(t.registered, m, n)) {
    case RequestOutcome::applied: break;
    case RequestOutcome::malformed: say("ignored a malformed request of " + std::to_string(n) + " bytes"); break;
    case RequestOutcome::registry_full:
      say("not tracking " + std::string(reinterpret_cast<const char*>(m) + kRequestHeader, n - kRequestHeader) + ": " +
          std::to_string(kMaxRegistered) + " segments and semaphores are registered already");
      break;
  }
}

// Reads every queued request. False when the peer closed its end (after its last requests).
bool serve_requests(Tracker& t, Peer& p) {
  for (;;) {
    unsigned char buf[kMaxRequest + 1];
    iovec iov{buf, sizeof buf};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    ssize_t r = os::retry([&] { return ::recvmsg(p.sock.get(), &msg, MSG_DONTWAIT); });
    if (r < 0) return errno == EAGAIN || errno == EWOULDBLOCK;
    if (r == 0) return false;
    if (msg.msg_flags & MSG_TRUNC) {
      say("ignored an oversized request");
      continue;
    }
    handle(t, buf, static_cast<std::size_t>(r));
  }
}

bool program_gone(const Tracker& t, Clock::time_point now) {
  return t.root < 0 && t.peers.empty() && (t.seen_client || now - t.started > kGrace);
}

int poll_timeout_ms(const Tracker& t, Clock::time_point now) {
  std::optional<Clock::time_point> next;
  for (const auto& [fd, p] : t.peers)
    if (!p->ready && (!next || p->deadline < *next)) next = p->deadline;
  if (t.root < 0 && !t.seen_client && (!next || t.started + kGrace < *next)) next = t.started + kGrace;
  if (!next) return -1;
  auto ms = std::chrono::ceil<std::chrono::milliseconds>(*next - now).count();
  return static_cast<int>(std::clamp<long long>(ms, 0, 60'000));
}

void run(Tracker& t) {
  for (;;) {
    auto now = Clock::now();
    if (program_gone(t, now)) {
      accept_peers(t);  // a last look: a process that connected just now still gets served
      if (t.peers.empty()) return;
    }
    std::vector<pollfd> fds = {{t.listener, POLLIN, 0}, {t.root, POLLIN, 0}};  // a negative fd is skipped
    for (const auto& [fd, p] : t.peers) fds.push_back({fd, POLLIN, 0});
    if (os::retry([&] { return ::poll(fds.data(), fds.size(), poll_timeout_ms(t, now)); }) < 0) {
      say(std::string("poll failed: ") + std::strerror(errno));
      return;
    }
    if (fds[1].revents) {  // the root exited
      ::close(t.root);
      t.root = -1;
    }
    if (fds[0].revents & POLLIN) accept_peers(t);
    for (std::size_t i = 2; i < fds.size(); ++i) {
      if (!fds[i].revents) continue;
      auto it = t.peers.find(fds[i].fd);
      if (it == t.peers.end()) continue;
      Peer& p = *it->second;
      bool keep = p.ready ? serve_requests(t, p) : serve_handshake(t, p);
      // A handshake that just succeeded may have requests queued behind it already.
      if (keep && p.ready && (fds[i].revents & POLLHUP)) keep = serve_requests(t, p);
      if (!keep) t.peers.erase(it);
    }
    now = Clock::now();
    std::erase_if(t.peers, [&](const auto& kv) { return !kv.second->ready && kv.second->deadline <= now; });
  }
}

void clean_up(Tracker& t) {
  // What is still there and is still the file that was registered; the rest was unlinked by
  // someone already (or now belongs to someone else) and is neither reported nor touched.
  std::map<ResourceKind, std::vector<std::pair<std::string, os::FileIdentity>>> leaked;
  for (const auto& [key, id] : t.registered) {
    const auto& [kind, name] = key;
    std::string path = kind == ResourceKind::semaphore ? os::semaphore_path(name) : os::shm_path(name);
    if (os::identity_of_path(path) == id) leaked[kind].emplace_back(name, id);
  }
  for (const auto& [kind, items] : leaked) {
    std::string names;
    for (std::size_t i = 0; i < items.size() && i < 20; ++i) names += (i ? ", " : "") + items[i].first;
    if (items.size() > 20) names += ", ... (" + std::to_string(items.size() - 20) + " more)";
    say("There appear to be " + std::to_string(items.size()) + " leaked " + resource_kind_name(kind) +
        " objects to clean up at shutdown: " + names);
    for (const auto& [name, id] : items) {
      int err = unlink_if_same(kind, name, id);
      if (err != 0 && err != ENOENT && err != ESTALE) say("'" + name + "': " + std::strerror(err));
    }
  }
}

}  // namespace

void tracker_main(PassedFd listener, std::int32_t root_pid, std::uint64_t root_start) {
  // Outlive the process that started us (any process of the program may have), and let Ctrl-C,
  // "kill <pid>" or a closed terminal end the program's processes, not the one that cleans up
  // after them. Only SIGKILL ends the tracker early (then its records are lost).
  ::prctl(PR_SET_PDEATHSIG, 0);
  for (int sig : {SIGINT, SIGTERM, SIGHUP, SIGPIPE}) ::signal(sig, SIG_IGN);
  sigset_t unblock;
  sigemptyset(&unblock);
  for (int sig : {SIGINT, SIGTERM, SIGHUP}) sigaddset(&unblock, sig);
  ::sigprocmask(SIG_UNBLOCK, &unblock, nullptr);
  // Hold nothing of the program's but stderr (for the report): a reader of its stdout gets EOF
  // when the program ends, and no directory is kept busy.
  {
    os::Fd null = os::open_dev_null();
    ::dup2(null.get(), 1);
  }
  (void)!::chdir("/");
  ::prctl(PR_SET_NAME, "mproc-tracker");
  Tracker t;
  os::Fd owned_listener(listener.fd);
  t.listener = listener.fd;
  ::fcntl(t.listener, F_SETFL, ::fcntl(t.listener, F_GETFL) | O_NONBLOCK);
  t.root = open_root(root_pid, root_start);
  run(t);
  if (t.root >= 0) ::close(t.root);
  owned_listener.reset();  // no one connects any more: a late process starts a new tracker
  clean_up(t);
}

}  // namespace tracker
}  // namespace mproc::detail
