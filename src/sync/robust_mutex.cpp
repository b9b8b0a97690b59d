#include "sync/robust_mutex.hpp"

#include <linux/futex.h>
#include <unistd.h>

#include <cerrno>
#include <string>
#include <system_error>

#include "mproc/errors.hpp"

namespace mproc::detail {
namespace {

// gettid() is a system call; the lock's fast path asks for it on every acquire. A fork child
// inherits the parent's thread-local copy, so the atfork handler clears it there (mproc's fork
// and fork server both go through fork(), which runs the handlers).
thread_local pid_t t_tid = 0;

void forget_tid_in_child() noexcept { t_tid = 0; }

[[noreturn]] void throw_pthread(int err, const char* op, const char* what) {
  throw std::system_error(err, std::system_category(), std::string(op) + " on a " + what);
}

// The tid in the futex word of a robust mutex: the kernel writes the owner's tid there, and
// clears it (leaving FUTEX_OWNER_DIED) when the owner dies. Our own `owner` field alone could
// claim a dead owner's lock for a new thread that happens to reuse its tid.
pid_t futex_owner(const MutexState& m) noexcept {
#ifdef __GLIBC__
  auto word = std::atomic_ref<int>(const_cast<int&>(m.mutex.__data.__lock)).load(std::memory_order_relaxed);
  return static_cast<pid_t>(static_cast<unsigned>(word) & FUTEX_TID_MASK);
#else
  return m.owner.load(std::memory_order_relaxed);
#endif
}

void check(int err, const char* op) {
  if (err != 0) throw std::system_error(err, std::system_category(), op);
}

}  // namespace

pid_t current_tid() noexcept {
  if (t_tid == 0) [[unlikely]] {
    static const bool registered = (::pthread_atfork(nullptr, nullptr, forget_tid_in_child), true);
    (void)registered;
    t_tid = ::gettid();
  }
  return t_tid;
}

void mutex_init(MutexState& m) {
  pthread_mutexattr_t attr;
  check(::pthread_mutexattr_init(&attr), "pthread_mutexattr_init");
  check(::pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED), "pthread_mutexattr_setpshared");
  check(::pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST), "pthread_mutexattr_setrobust");
  // ERRORCHECK: unlock by a thread that does not hold it fails instead of corrupting the lock
  // (recursion is counted by us, in depth).
  check(::pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_ERRORCHECK), "pthread_mutexattr_settype");
  int err = ::pthread_mutex_init(&m.mutex, &attr);
  ::pthread_mutexattr_destroy(&attr);
  check(err, "pthread_mutex_init");
  m.owner.store(0, std::memory_order_relaxed);
  m.depth = 0;
  m.owner_died = 0;
  m.takeovers.store(0, std::memory_order_relaxed);
}

bool mutex_is_mine(const MutexState& m) noexcept {
  pid_t me = current_tid();
  return m.owner.load(std::memory_order_relaxed) == me && futex_owner(m) == me;
}

bool mutex_locked(const MutexState& m) noexcept { return futex_owner(m) != 0; }

namespace {

// Takes the pthread mutex; returns false on timeout / busy, sets owner_died on a takeover.
bool take(MutexState& m, bool block, const os::Deadline& deadline, bool& took_over, const char* what) {
  int r;
  if (!block)
    r = ::pthread_mutex_trylock(&m.mutex);
  else if (deadline.is_never())
    r = ::pthread_mutex_lock(&m.mutex);
  else
    r = ::pthread_mutex_clocklock(&m.mutex, CLOCK_MONOTONIC, deadline.abs());
  took_over = false;
  switch (r) {
    case 0: return true;
    case EOWNERDEAD:
      // The previous owner died holding the lock. Repair the mutex now (iceoryx's
      // make_consistent) so that it stays usable, and tell the new holder through owner_died():
      // it is the one who can check the data the lock protects.
      ::pthread_mutex_consistent(&m.mutex);
      m.takeovers.fetch_add(1, std::memory_order_relaxed);
      took_over = true;
      return true;
    case EBUSY:
    case ETIMEDOUT: return false;
    case EDEADLK: throw RuntimeError(std::string("deadlock: the calling thread already holds this ") + what);
    case ENOTRECOVERABLE:
      // Only if a holder released it without making it consistent, which mproc never does.
      throw Error(std::string("the ") + what + " is unusable: its owner died and it was never made consistent");
    default: throw_pthread(r, "pthread_mutex_lock", what);
  }
}

}  // namespace

bool mutex_acquire(MutexState& m, bool recursive, bool block, const os::Deadline& deadline, const char* what) {
  pid_t me = current_tid();
  if (m.owner.load(std::memory_order_relaxed) == me && futex_owner(m) == me) {
    if (recursive) {
      ++m.depth;
      return true;
    }
    // Nobody but this thread can release it: waiting out a timeout cannot succeed.
    if (!block || !deadline.is_never()) return false;
    throw RuntimeError(std::string("deadlock: the calling thread already holds this ") + what +
                       " (acquire it once, or use an RLock)");
  }
  bool took_over = false;
  if (!take(m, block, deadline, took_over, what)) return false;
  m.owner.store(me, std::memory_order_relaxed);
  m.depth = 1;
  m.owner_died = took_over ? 1 : 0;
  return true;
}

void mutex_release(MutexState& m, bool recursive, const char* what) {
  if (!mutex_is_mine(m))
    throw RuntimeError(std::string("cannot release un-acquired ") + what + ": the calling thread does not hold it");
  if (recursive && m.depth > 1) {
    --m.depth;
    return;
  }
  m.depth = 0;
  m.owner_died = 0;
  m.owner.store(0, std::memory_order_relaxed);
  int r = ::pthread_mutex_unlock(&m.mutex);
  if (r != 0) throw_pthread(r, "pthread_mutex_unlock", what);
}

MutexSaved mutex_release_all(MutexState& m) {
  MutexSaved saved{m.depth, m.owner_died};
  m.depth = 1;
  mutex_release(m, false, "lock");
  return saved;
}

void mutex_restore(MutexState& m, MutexSaved saved, const char* what) {
  bool took_over = false;
  take(m, true, os::Deadline::never(), took_over, what);
  m.owner.store(current_tid(), std::memory_order_relaxed);
  m.depth = saved.depth;
  m.owner_died = (saved.owner_died || took_over) ? 1 : 0;
}

}  // namespace mproc::detail
