// Lock, RLock, Semaphore, BoundedSemaphore, Condition, Event (Barrier: sync/barrier.cpp).
#include "mproc/synchronize.hpp"

#include <algorithm>
#include <climits>
#include <stdexcept>
#include <string>

#include "os/futex.hpp"
#include "sync/block.hpp"
#include "sync/robust_mutex.hpp"
#include "sync/states.hpp"

namespace mproc {
namespace detail {

void throw_nan_timeout(const char* call) {
  throw std::invalid_argument(std::string(call) +
                              "(): timeout is NaN (not a number); give seconds, or std::nullopt to wait without a deadline");
}

namespace {

os::Deadline deadline_of(std::optional<seconds> timeout) noexcept {
  return timeout ? os::Deadline::after(timeout->count()) : os::Deadline::never();
}

bool take_one(std::atomic<std::uint32_t>& word) noexcept {
  std::uint32_t v = word.load(std::memory_order_relaxed);
  while (v > 0)
    if (word.compare_exchange_weak(v, v - 1, std::memory_order_acquire, std::memory_order_relaxed)) return true;
  return false;
}

template <class State>
State* state_of(const Block& b) {
  return b.at<State>(kStateOffset);
}

}  // namespace

// ------------------------------------------------------------------------------ Lock / RLock

MutexHandle::MutexHandle(bool recursive)
    : MutexHandle(create_block({.kind = recursive ? BlockKind::rlock : BlockKind::lock, .mutex = true}), recursive) {}

MutexHandle::MutexHandle(std::shared_ptr<Block> block, bool recursive)
    : block_(std::move(block)), m_(block_->at<MutexState>(kMutexOffset)), recursive_(recursive) {}

bool MutexHandle::acquire_slow(bool block, std::optional<seconds> timeout) const {
  return mutex_acquire_slow(*m_, recursive_, block, block ? deadline_of(timeout) : os::Deadline::never(), what());
}

bool MutexHandle::locked() const { return mutex_locked(*m_); }

bool MutexHandle::owner_died() const { return mutex_is_mine(*m_) && m_->owner_died != 0; }

void MutexHandle::save_handle(OutArchive& ar) const { save_block(ar, *block_); }

void MutexHandle::load_handle(InArchive& ar, bool lock_ok, bool rlock_ok) {
  std::shared_ptr<Block> b;
  if (lock_ok && rlock_ok)
    b = load_block(ar, {BlockKind::lock, BlockKind::rlock, BlockKind::condition, BlockKind::value, BlockKind::array});
  else if (lock_ok)
    b = load_block(ar, {BlockKind::lock});
  else
    b = load_block(ar, {BlockKind::rlock, BlockKind::condition, BlockKind::value, BlockKind::array});
  if (!b->has_mutex()) throw_bad_block(std::string("the ") + kind_name(b->kind()) + " has no lock");
  bool recursive = b->kind() != BlockKind::lock;
  *this = MutexHandle(std::move(b), recursive);
}

}  // namespace detail

Lock::Lock() : MutexHandle(false) {}
RLock::RLock() : MutexHandle(true) {}

// ------------------------------------------------------------------------------ Semaphore

namespace {
detail::BlockSpec semaphore_spec(bool bounded) {
  return {.kind = bounded ? detail::BlockKind::bounded_semaphore : detail::BlockKind::semaphore,
          .state_size = sizeof(detail::SemaphoreState)};
}
}  // namespace

Semaphore::Semaphore(int value) : Semaphore(value, false) {}

Semaphore::Semaphore(int value, bool bounded) {
  if (value < 0) throw ValueError("semaphore initial value must be >= 0, not " + std::to_string(value));
  block_ = detail::create_block(semaphore_spec(bounded));
  s_ = detail::state_of<detail::SemaphoreState>(*block_);
  s_->value.store(static_cast<std::uint32_t>(value), std::memory_order_relaxed);
  s_->bound = bounded ? static_cast<std::uint32_t>(value) : static_cast<std::uint32_t>(INT_MAX);
}

BoundedSemaphore::BoundedSemaphore(int value) : Semaphore(value, true) {}

bool Semaphore::acquire(bool block, std::optional<seconds> timeout) const {
  detail::check_timeout(timeout, "Semaphore.acquire");
  auto& s = *s_;
  if (detail::take_one(s.value)) return true;
  if (!block) return false;
  const auto deadline = detail::deadline_of(timeout);
  // Register before looking again: release() increments value, then reads waiters; we
  // increment waiters, then read value (both sequentially consistent), so one of us sees the
  // other and no wake-up is lost.
  s.waiters.fetch_add(1);
  bool got = false;
  for (;;) {
    if ((got = detail::take_one(s.value))) break;
    if (os::futex_wait(s.value, 0, deadline) == os::FutexWait::timed_out) {
      got = detail::take_one(s.value);
      break;
    }
  }
  s.waiters.fetch_sub(1);
  return got;
}

void Semaphore::release() const {
  auto& s = *s_;
  std::uint32_t v = s.value.load(std::memory_order_relaxed);
  do {
    if (v >= s.bound)
      throw ValueError(block_->kind() == detail::BlockKind::bounded_semaphore
                           ? "semaphore or lock released too many times"
                           : "semaphore value would overflow");
  } while (!s.value.compare_exchange_weak(v, v + 1));
  if (s.waiters.load() > 0) os::futex_wake(s.value, 1);
}

int Semaphore::get_value() const { return static_cast<int>(s_->value.load(std::memory_order_relaxed)); }

void Semaphore::save(detail::OutArchive& ar) const { detail::save_block(ar, *block_); }

void Semaphore::load(detail::InArchive& ar) { load_impl(ar, false); }

void Semaphore::load_impl(detail::InArchive& ar, bool bounded_only) {
  auto b = bounded_only ? detail::load_block(ar, {detail::BlockKind::bounded_semaphore})
                        : detail::load_block(ar, {detail::BlockKind::semaphore, detail::BlockKind::bounded_semaphore});
  auto* s = detail::state_of<detail::SemaphoreState>(*b);
  if (s->bound > static_cast<std::uint32_t>(INT_MAX)) detail::throw_bad_block("a semaphore bound out of range");
  block_ = std::move(b);
  s_ = s;
}

// ------------------------------------------------------------------------------ Condition

Condition::Condition()
    : MutexHandle(detail::create_block({.kind = detail::BlockKind::condition,
                                        .state_size = sizeof(detail::ConditionState),
                                        .mutex = true}),
                  true) {
  cblock_ = block_;
  c_ = detail::state_of<detail::ConditionState>(*cblock_);
}

namespace {
std::shared_ptr<detail::Block> condition_block() {
  return detail::create_block({.kind = detail::BlockKind::condition, .state_size = sizeof(detail::ConditionState)});
}
}  // namespace

Condition::Condition(const Lock& lock)
    : MutexHandle(lock), cblock_(condition_block()), c_(detail::state_of<detail::ConditionState>(*cblock_)) {}

Condition::Condition(const RLock& lock)
    : MutexHandle(lock), cblock_(condition_block()), c_(detail::state_of<detail::ConditionState>(*cblock_)) {}

bool Condition::wait(std::optional<seconds> timeout) const {
  detail::check_timeout(timeout, "Condition.wait");
  if (!detail::mutex_is_mine(*m_)) throw RuntimeError("cannot wait on un-acquired lock: acquire the Condition first");
  const auto deadline = detail::deadline_of(timeout);
  auto& c = *c_;
  c.waiters.fetch_add(1);  // under the lock, like every change of waiters
  auto saved = detail::mutex_release_all(*m_);
  bool notified = false;
  for (;;) {
    if ((notified = detail::take_one(c.tokens))) break;
    if (os::futex_wait(c.tokens, 0, deadline) == os::FutexWait::timed_out) {
      notified = detail::take_one(c.tokens);
      break;
    }
  }
  detail::mutex_restore(*m_, saved, what());
  if (!notified) {
    // Timed out, and now under the lock again. A notify() may have granted a token on our
    // behalf meanwhile: take it (we are woken after all); otherwise leave the waiters.
    if (detail::take_one(c.tokens))
      notified = true;
    else if (c.waiters.load() > 0)
      c.waiters.fetch_sub(1);
  }
  return notified;
}

void Condition::notify(int n) const {
  if (!detail::mutex_is_mine(*m_)) throw RuntimeError("cannot notify on un-acquired lock: acquire the Condition first");
  if (n <= 0) return;
  auto& c = *c_;
  std::uint32_t k = std::min(static_cast<std::uint32_t>(n), c.waiters.load());
  if (k == 0) return;
  // Tokens first: a notifier killed between the two lines leaves a spurious wake-up, never a
  // missing one.
  c.tokens.fetch_add(k);
  c.waiters.fetch_sub(k);
  os::futex_wake(c.tokens, static_cast<int>(k));
}

void Condition::notify_all() const { notify(INT_MAX); }

void Condition::save(detail::OutArchive& ar) const {
  detail::save_block(ar, *cblock_);
  bool own_lock = cblock_ == block_;
  ar(own_lock);
  if (!own_lock) save_handle(ar);
}

void Condition::load(detail::InArchive& ar) {
  auto cb = detail::load_block(ar, {detail::BlockKind::condition});
  bool own_lock = false;
  ar(own_lock);
  if (own_lock) {
    if (!cb->has_mutex()) detail::throw_bad_block("a Condition without a lock of its own claims one");
    static_cast<MutexHandle&>(*this) = MutexHandle(cb, true);
  } else {
    load_handle(ar, true, true);
  }
  c_ = detail::state_of<detail::ConditionState>(*cb);
  cblock_ = std::move(cb);
}

// ------------------------------------------------------------------------------ Event

Event::Event()
    : block_(detail::create_block({.kind = detail::BlockKind::event, .state_size = sizeof(detail::EventState)})),
      e_(detail::state_of<detail::EventState>(*block_)) {}

bool Event::is_set() const { return (e_->word.load() & 1u) != 0; }

void Event::set() const {
  auto& e = *e_;
  std::uint32_t w = e.word.load();
  do {
    if (w & 1u) return;  // already set: nobody sleeps
  } while (!e.word.compare_exchange_weak(w, (w + 2u) | 1u));
  if (e.waiters.load() > 0) os::futex_wake(e.word, INT_MAX);
}

void Event::clear() const { e_->word.fetch_and(~1u); }

bool Event::wait(std::optional<seconds> timeout) const {
  detail::check_timeout(timeout, "Event.wait");
  auto& e = *e_;
  const std::uint32_t start = e.word.load();
  if (start & 1u) return true;
  const auto deadline = detail::deadline_of(timeout);
  // A set() changes the counter bits: a wake-up is not missed even when clear() follows at once.
  auto was_set = [&](std::uint32_t w) { return (w & 1u) || (w >> 1) != (start >> 1); };
  e.waiters.fetch_add(1);
  bool result = false;
  for (;;) {
    std::uint32_t w = e.word.load();
    if ((result = was_set(w))) break;
    if (os::futex_wait(e.word, w, deadline) == os::FutexWait::timed_out) {
      result = was_set(e.word.load());
      break;
    }
  }
  e.waiters.fetch_sub(1);
  return result;
}

void Event::save(detail::OutArchive& ar) const { detail::save_block(ar, *block_); }

void Event::load(detail::InArchive& ar) {
  auto b = detail::load_block(ar, {detail::BlockKind::event});
  e_ = detail::state_of<detail::EventState>(*b);
  block_ = std::move(b);
}

}  // namespace mproc
