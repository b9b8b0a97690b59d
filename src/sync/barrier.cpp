// Barrier: Python's threading.Barrier algorithm (filling, draining, resetting, broken) over a
// robust mutex, plus detection of parties that die while waiting.
//
// Each party inside wait() holds the robust mutex of a slot. While it sleeps, the others look
// at the occupied slots every kLivenessPoll (and whenever they wake): a trylock that returns
// EOWNERDEAD means that party died. Its place is given back; if the barrier was filling, it is
// broken, since the cycle can no longer complete with the parties that are left. A party that
// dies holding the barrier's own mutex is handled the same way by whoever takes the mutex next.
#include <pthread.h>

#include <cerrno>
#include <climits>
#include <string>

#include "mproc/detail/callable.hpp"
#include "mproc/synchronize.hpp"
#include "os/fd.hpp"
#include "os/futex.hpp"
#include "sync/block.hpp"
#include "sync/robust_mutex.hpp"
#include "sync/states.hpp"

namespace mproc {
namespace {

using detail::BarrierSlot;
using detail::BarrierState;
using detail::Block;
using detail::MutexState;

constexpr double kLivenessPoll = 0.1;  // seconds between looks at sleeping parties

enum State : std::int32_t { st_filling = 0, st_draining = 1, st_resetting = -1, st_broken = -2 };
enum Why : std::uint32_t { why_none, why_abort, why_timeout, why_action, why_dead_party };

constexpr std::size_t kMaxParties = 1u << 20;

std::size_t slots_bytes(std::size_t parties) { return detail::kSlotsOffset + parties * sizeof(BarrierSlot); }

detail::BlockSpec barrier_spec(std::size_t parties) {
  return {.kind = detail::BlockKind::barrier, .state_size = slots_bytes(parties), .mutex = true, .count = parties};
}

BarrierSlot* slots_of(BarrierState& s) {
  return reinterpret_cast<BarrierSlot*>(reinterpret_cast<char*>(&s) + detail::kSlotsOffset);
}

std::string broken_message(const BarrierState& s) {
  switch (s.why) {
    case why_abort: return "the barrier was aborted";
    case why_timeout: return "the barrier is broken: a party timed out waiting";
    case why_action: return "the barrier is broken: its action threw";
    case why_dead_party: return "the barrier is broken: party pid " + std::to_string(s.dead_pid) + " died while waiting";
    default: return "the barrier is broken";
  }
}

// Holds the barrier's mutex for one operation, and does what needs it.
class Guard {
 public:
  Guard(MutexState& m, BarrierState& s) : m_(m), s_(s), slots_(slots_of(s)) { lock(); }
  ~Guard() {
    if (held_) {
      try {
        unlock();
      } catch (...) {  // a destructor reports nothing it cannot fix
      }
    }
  }
  Guard(const Guard&) = delete;
  Guard& operator=(const Guard&) = delete;

  BarrierState& s() { return s_; }

  void notify_all() {
    s_.seq.fetch_add(1);
    os::futex_wake(s_.seq, INT_MAX);
  }

  void break_barrier(Why why) {
    s_.state = st_broken;
    s_.why = why;
    notify_all();
  }

  // Gives back the places of parties that died while waiting (all but `mine`).
  void sweep(int mine) {
    bool changed = false;
    for (int i = 0; i < s_.parties; ++i) {
      BarrierSlot& slot = slots_[i];
      if (i == mine || !slot.occupied) continue;
      int r = ::pthread_mutex_trylock(&slot.mutex);
      if (r == EBUSY) continue;  // alive: it holds its slot
      if (r == EOWNERDEAD) ::pthread_mutex_consistent(&slot.mutex);
      if (r == 0 || r == EOWNERDEAD) ::pthread_mutex_unlock(&slot.mutex);
      slot.occupied = 0;
      --s_.count;
      s_.dead_pid = slot.pid;
      if (s_.state == st_filling) {
        s_.state = st_broken;
        s_.why = why_dead_party;
      }
      changed = true;
    }
    if (changed) {
      leave_check();
      notify_all();
    }
  }

  // Python's _exit: the last party out of a draining or resetting barrier refills it.
  void leave_check() {
    if (s_.count == 0 && (s_.state == st_draining || s_.state == st_resetting)) {
      s_.state = st_filling;
      notify_all();
    }
  }

  int take_slot() {
    for (int i = 0; i < s_.parties; ++i) {
      BarrierSlot& slot = slots_[i];
      if (slot.occupied) continue;
      int r = ::pthread_mutex_trylock(&slot.mutex);
      if (r == EOWNERDEAD) ::pthread_mutex_consistent(&slot.mutex);  // a party died leaving it
      else if (r != 0) continue;
      slot.pid = ::getpid();
      slot.occupied = 1;
      ++s_.count;
      return i;
    }
    throw Error("internal error: a Barrier has no free slot");  // count < parties guarantees one
  }

  void leave(int slot) {
    slots_[slot].occupied = 0;
    ::pthread_mutex_unlock(&slots_[slot].mutex);
    --s_.count;
    leave_check();
  }

  // Releases the mutex, sleeps until the state changes, the deadline or the next liveness
  // look, takes the mutex again and looks at the other parties.
  void wait_change(const os::Deadline& deadline, int mine) {
    std::uint32_t seq = s_.seq.load();
    unlock();
    os::futex_wait(s_.seq, seq, deadline.earliest(os::Deadline::after(kLivenessPoll)));
    lock();
    sweep(mine);
  }

 private:
  void lock() {
    detail::mutex_acquire(m_, false, true, os::Deadline::never(), "Barrier");
    held_ = true;
    if (m_.owner_died) {
      // A party died inside an operation. Every change of count and slots happens together
      // under this mutex, so recounting the occupied slots repairs whatever it left.
      m_.owner_died = 0;
      int occupied = 0;
      for (int i = 0; i < s_.parties; ++i) occupied += slots_[i].occupied ? 1 : 0;
      s_.count = occupied;
      sweep(-1);
      leave_check();
      notify_all();
    }
  }
  void unlock() {
    held_ = false;
    detail::mutex_release(m_, false, "Barrier");
  }

  MutexState& m_;
  BarrierState& s_;
  BarrierSlot* slots_;
  bool held_ = false;
};

void init_slot_mutex(pthread_mutex_t& m) {
  pthread_mutexattr_t attr;
  ::pthread_mutexattr_init(&attr);
  ::pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
  ::pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
  int r = ::pthread_mutex_init(&m, &attr);
  ::pthread_mutexattr_destroy(&attr);
  if (r != 0) os::throw_errno("pthread_mutex_init of a Barrier slot", r);
}

}  // namespace

Barrier::Barrier(int parties, BarrierOptions options) : action_(options.action), timeout_(options.timeout) {
  detail::check_timeout(timeout_, "Barrier");  // refused now, not at every wait()
  if (parties < 1 || static_cast<std::size_t>(parties) > kMaxParties)
    throw ValueError("a Barrier needs between 1 and " + std::to_string(kMaxParties) + " parties, not " + std::to_string(parties));
  block_ = detail::create_block(barrier_spec(static_cast<std::size_t>(parties)));
  b_ = block_->at<BarrierState>(detail::kStateOffset);
  b_->parties = parties;
  BarrierSlot* slots = slots_of(*b_);
  for (int i = 0; i < parties; ++i) init_slot_mutex(slots[i].mutex);
}

int Barrier::wait(std::optional<seconds> timeout) const {
  detail::check_timeout(timeout, "Barrier.wait");
  if (!timeout) timeout = timeout_;
  const auto deadline = timeout ? os::Deadline::after(timeout->count()) : os::Deadline::never();
  auto* m = block_->at<MutexState>(detail::kMutexOffset);
  Guard g(*m, *b_);
  auto& s = g.s();
  g.sweep(-1);
  // Python's _enter: wait while the previous cycle drains or a reset completes.
  while (s.state == st_draining || s.state == st_resetting) {
    if (deadline.passed()) {
      g.break_barrier(why_timeout);
      throw BrokenBarrierError(broken_message(s));
    }
    g.wait_change(deadline, -1);
  }
  if (s.state != st_filling) throw BrokenBarrierError(broken_message(s));

  const int index = s.count;
  const int slot = g.take_slot();
  if (s.count == s.parties) {
    // The last party: run the action (under the mutex: nobody is released before it ends).
    try {
      if (action_) action_();
    } catch (...) {
      g.break_barrier(why_action);
      g.leave(slot);
      throw;
    }
    s.state = st_draining;
    ++s.cycle;
    g.notify_all();
    g.leave(slot);
    return index;
  }
  const std::uint32_t cycle = s.cycle;
  for (;;) {
    // Released once the cycle completes, even if the barrier breaks after that.
    if (s.cycle != cycle) break;
    if (s.state != st_filling) {
      std::string why = s.state == st_resetting ? "the barrier was reset while this party waited" : broken_message(s);
      g.leave(slot);
      throw BrokenBarrierError(why);
    }
    if (deadline.passed()) {
      g.break_barrier(why_timeout);
      g.leave(slot);
      throw BrokenBarrierError("the barrier is broken: this party timed out waiting");
    }
    g.wait_change(deadline, slot);
  }
  g.leave(slot);
  return index;
}

void Barrier::reset() const {
  Guard g(*block_->at<MutexState>(detail::kMutexOffset), *b_);
  auto& s = g.s();
  g.sweep(-1);
  if (s.count > 0) {
    if (s.state == st_filling || s.state == st_broken) s.state = st_resetting;
  } else {
    s.state = st_filling;
  }
  s.why = why_none;
  g.notify_all();
}

void Barrier::abort() const {
  Guard g(*block_->at<MutexState>(detail::kMutexOffset), *b_);
  g.break_barrier(why_abort);
}

int Barrier::parties() const { return b_->parties; }

int Barrier::n_waiting() const {
  Guard g(*block_->at<MutexState>(detail::kMutexOffset), *b_);
  g.sweep(-1);
  return g.s().state == st_filling ? g.s().count : 0;
}

bool Barrier::broken() const {
  Guard g(*block_->at<MutexState>(detail::kMutexOffset), *b_);
  g.sweep(-1);
  return g.s().state == st_broken;
}

void Barrier::save(detail::OutArchive& ar) const {
  detail::save_block(ar, *block_);
  bool has_action = action_ != nullptr;
  ar(has_action);
  if (has_action)
    ar(detail::code_ref(reinterpret_cast<const void*>(action_), detail::type_fingerprint<void (*)()>()));
  ar(timeout_);
}

void Barrier::load(detail::InArchive& ar) {
  auto b = detail::load_block(ar, {detail::BlockKind::barrier});
  const auto& h = b->header();
  if (!b->has_mutex() || h.count < 1 || h.count > kMaxParties || h.size < detail::block_size_for(barrier_spec(h.count)))
    detail::throw_bad_block("a Barrier's header does not match its size");
  auto* st = b->at<BarrierState>(detail::kStateOffset);
  if (static_cast<std::uint64_t>(st->parties) != h.count) detail::throw_bad_block("a Barrier's parties do not match its header");
  bool has_action = false;
  ar(has_action);
  void (*action)() = nullptr;
  if (has_action) {
    detail::CodeRef ref;
    ar(ref);
    action = reinterpret_cast<void (*)()>(const_cast<void*>(detail::resolve_code(ref, detail::type_fingerprint<void (*)()>())));
  }
  std::optional<seconds> timeout;
  ar(timeout);
  block_ = std::move(b);
  b_ = st;
  action_ = action;
  timeout_ = timeout;
}

}  // namespace mproc
