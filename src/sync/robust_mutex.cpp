#include "sync/robust_mutex.hpp"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "mproc/errors.hpp"
#include "os/fd.hpp"

namespace mproc::detail {

constinit thread_local ThreadIdentity t_self = {0, 0};

namespace {

// How long a waiter sleeps before it looks closely at an owner that does not release: briefly
// the first time (an acquirer that finds a dead owner's lock learns it within about 1 ms), then
// every 50 ms.
constexpr double kFirstCheck = 0.001;
constexpr double kCheckPeriod = 0.05;

void forget_identity_in_child() noexcept { t_self = {0, 0}; }

// Reads the state letter and the start time (field 22, clock ticks since boot) from a
// /proc/.../stat file. False when it cannot be read (the thread is gone, or no /proc).
bool read_stat(const char* path, char& state, std::uint64_t& start) noexcept {
  int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  char buf[1024];
  ssize_t n = os::retry([&] { return ::read(fd, buf, sizeof buf - 1); });
  ::close(fd);
  if (n <= 0) return false;
  buf[n] = '\0';
  const char* p = std::strrchr(buf, ')');  // the command name may hold anything, even ')'
  if (!p || p[1] != ' ' || p[2] == '\0') return false;
  p += 2;  // field 3, the state
  state = *p;
  for (int field = 3; field < 22; ++field) {
    p = std::strchr(p, ' ');
    if (!p) return false;
    ++p;
  }
  start = std::strtoull(p, nullptr, 10);
  return true;
}

// The thread no longer exists: certain (a thread that exited, a process that was reaped).
bool owner_gone(std::uint32_t tid) noexcept { return ::kill(static_cast<pid_t>(tid), 0) == -1 && errno == ESRCH; }

// A closer look: gone, a zombie (killed, not yet reaped), or a new thread that reused the tid.
bool owner_dead(const MutexState& m, std::uint32_t tid) noexcept {
  if (owner_gone(tid)) return true;
  char path[48];
  std::snprintf(path, sizeof path, "/proc/%u/stat", tid);
  char state = '?';
  std::uint64_t start = 0;
  if (!read_stat(path, state, start)) return owner_gone(tid);  // it exited meanwhile, or no /proc
  if (state == 'Z' || state == 'X' || state == 'x') return true;
  std::uint64_t id = m.owner_id.load(std::memory_order_relaxed);
  auto recorded = static_cast<std::uint32_t>(id);
  // The owner records its identity just after taking the word: only compare a record that
  // belongs to this tid, and that has a start time (0: /proc was not readable for the owner).
  return (id >> 32) == tid && recorded != 0 && recorded != static_cast<std::uint32_t>(start);
}

bool took(MutexState& m, const ThreadIdentity& me, bool owner_died) noexcept {
  m.owner_id.store(me.id, std::memory_order_relaxed);
  m.depth = 1;
  m.owner_died = owner_died ? 1 : 0;
  return true;
}

// Takes the word over from a dead owner: only if it still holds exactly what we saw.
bool take_over(MutexState& m, std::uint32_t seen, const ThreadIdentity& me) noexcept {
  return m.word.compare_exchange_strong(seen, me.tid | (seen & kWaiters), std::memory_order_acquire,
                                        std::memory_order_relaxed) &&
         took(m, me, true);
}

}  // namespace

const ThreadIdentity& cache_identity() noexcept {
  static const bool registered = (::pthread_atfork(nullptr, nullptr, forget_identity_in_child), true);
  (void)registered;
  auto tid = static_cast<std::uint32_t>(::gettid());
  char state = '?';
  std::uint64_t start = 0;
  read_stat("/proc/thread-self/stat", state, start);  // stays 0 without /proc: no tid-reuse check then
  t_self = {tid, static_cast<std::uint64_t>(tid) << 32 | static_cast<std::uint32_t>(start)};
  return t_self;
}

void mutex_init(MutexState& m) noexcept {
  m.word.store(0, std::memory_order_relaxed);
  m.depth = 0;
  m.owner_died = 0;
  m.reserved = 0;
  m.owner_id.store(0, std::memory_order_relaxed);
}

bool mutex_locked(const MutexState& m) noexcept {
  std::uint32_t owner = m.word.load(std::memory_order_relaxed) & kTidMask;
  return owner != 0 && !owner_gone(owner);
}

void mutex_wake_one(MutexState& m) noexcept { os::futex_wake(m.word, 1); }

void throw_not_owner(const char* what) {
  throw RuntimeError(std::string("cannot release un-acquired ") + what + ": the calling thread does not hold it");
}

bool mutex_acquire_slow(MutexState& m, bool recursive, bool block, const os::Deadline& deadline, const char* what) {
  const ThreadIdentity& me = self();
  if (mutex_is_mine(m)) {
    if (recursive) {
      ++m.depth;
      return true;
    }
    // Nobody but this thread can release it: waiting out a timeout cannot succeed.
    if (!block || !deadline.is_never()) return false;
    throw RuntimeError(std::string("deadlock: the calling thread already holds this ") + what +
                       " (acquire it once, or use an RLock)");
  }
  bool slept = false;  // after a sleep, keep kWaiters when taking the word: others may sleep too
  double period = kFirstCheck;
  for (;;) {
    std::uint32_t v = m.word.load(std::memory_order_relaxed);
    const std::uint32_t owner = v & kTidMask;
    if (owner == 0) {
      if (m.word.compare_exchange_weak(v, me.tid | (v & kWaiters) | (slept ? kWaiters : 0), std::memory_order_acquire,
                                       std::memory_order_relaxed))
        return took(m, me, false);
      continue;
    }
    if (!block) {
      // Python's acquire(False) gets a dead owner's lock too (one system call, on failure only).
      if (!owner_gone(owner)) return false;
      if (take_over(m, v, me)) return true;
      continue;
    }
    if (!(v & kWaiters)) {
      if (!m.word.compare_exchange_weak(v, v | kWaiters, std::memory_order_relaxed)) continue;
      v |= kWaiters;
    }
    // No liveness check before sleeping: under contention that would add a system call to
    // every acquire that loses a race. The first sleep is short instead.
    auto r = os::futex_wait(m.word, v, deadline.earliest(os::Deadline::after(period)));
    slept = true;
    if (r != os::FutexWait::timed_out) continue;
    period = kCheckPeriod;
    std::uint32_t now = m.word.load(std::memory_order_relaxed);
    if ((now & kTidMask) == owner && owner_dead(m, owner)) {
      if (take_over(m, now, me)) return true;
      continue;
    }
    if (deadline.passed()) {
      now = m.word.load(std::memory_order_relaxed);
      return (now & kTidMask) == 0 &&
             m.word.compare_exchange_strong(now, me.tid | now | kWaiters, std::memory_order_acquire,
                                            std::memory_order_relaxed) &&
             took(m, me, false);
    }
  }
}

MutexSaved mutex_release_all(MutexState& m) {
  MutexSaved saved{m.depth, m.owner_died};
  m.depth = 1;
  mutex_release(m, false, "lock");
  return saved;
}

void mutex_restore(MutexState& m, MutexSaved saved, const char* what) {
  mutex_acquire(m, false, true, os::Deadline::never(), what);
  m.depth = saved.depth;
  m.owner_died = (saved.owner_died || m.owner_died) ? 1 : 0;
}

}  // namespace mproc::detail
