// Synchronisation objects of a manager server: Lock, RLock, Semaphore, BoundedSemaphore,
// Condition, Event, Barrier, Queue, JoinableQueue. A lock is owned by the connection that took
// it (one per client thread), as Python's are owned by the server thread serving that
// connection. Blocking calls wait here, in the connection's thread, and give up when their
// client goes away (wait_until), so a dead client never holds a server thread forever; the
// locks a dead client held are released (Python keeps them locked forever).
#include <deque>
#include <list>

#include "managers/objects.hpp"
#include "mproc/queues.hpp"

namespace mproc::detail::mgr {
namespace {

template <class T>
T arg(InArchive& in) {
  T v{};
  in(v);
  return v;
}

void no_more(InArchive& in) {
  if (in.left() != 0) throw_trailing_bytes(in.left(), "a manager request");
}

void put_bool(std::string& out, bool b) { out.push_back(b ? '\1' : '\0'); }
void put_i64(std::string& out, std::int64_t v) { out.append(reinterpret_cast<const char*>(&v), sizeof v); }

// ------------------------------------------------------------------------------- Lock, RLock

class LockObj final : public Object {
 public:
  explicit LockObj(bool recursive) : recursive_(recursive) {}

  void call(std::string_view m, InArchive& in, std::string& out, CallCtx& ctx) override {
    if (m == "acquire") {
      bool blocking = arg<bool>(in);
      double timeout = arg<double>(in);
      no_more(in);
      put_bool(out, acquire(ctx, blocking, timeout));
    } else if (m == "release") {
      no_more(in);
      release(ctx.conn);
    } else if (m == "locked") {
      no_more(in);
      std::lock_guard lk(mu_);
      put_bool(out, owner_ != 0);
    } else {
      unknown_method(recursive_ ? "RLock" : "Lock", m);
    }
  }

  bool acquire(const CallCtx& ctx, bool blocking, double timeout) {
    std::unique_lock lk(mu_);
    if (owner_ == ctx.conn && recursive_) {
      ++count_;
      return true;
    }
    if (owner_ == ctx.conn && blocking && timeout < 0)
      throw RuntimeError("acquire() of a manager Lock that this thread holds already would never return");
    if (owner_ != 0) {
      if (!blocking) return false;
      if (!wait_until(lk, cv_, timeout, ctx, [&] { return owner_ == 0; })) return false;
    }
    owner_ = ctx.conn;
    count_ = 1;
    return true;
  }

  void release(std::uint64_t conn) {
    std::lock_guard lk(mu_);
    if (owner_ == 0) throw RuntimeError("release of an unlocked manager lock");
    if (recursive_ && owner_ != conn) throw RuntimeError("cannot release an RLock that this thread does not hold");
    if (recursive_ && --count_ > 0) return;
    owner_ = 0;
    count_ = 0;
    cv_.notify_one();
  }

  bool held_by(std::uint64_t conn) {
    std::lock_guard lk(mu_);
    return owner_ == conn;
  }

  // For Condition.wait: let go completely, then take back as many levels.
  std::int64_t release_all(std::uint64_t conn) {
    std::lock_guard lk(mu_);
    if (owner_ != conn) throw RuntimeError("cannot wait on a Condition whose lock this thread does not hold");
    auto n = count_;
    owner_ = 0;
    count_ = 0;
    cv_.notify_one();
    return n;
  }
  void restore(const CallCtx& ctx, std::int64_t n) {
    std::unique_lock lk(mu_);
    wait_until(lk, cv_, -1, ctx, [&] { return owner_ == 0; });
    owner_ = ctx.conn;
    count_ = n;
  }

  void disconnected(std::uint64_t conn) override {
    std::lock_guard lk(mu_);
    if (owner_ != conn) return;
    owner_ = 0;
    count_ = 0;
    cv_.notify_one();
  }
  bool has_owners() const override { return true; }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool recursive_;
  std::uint64_t owner_ = 0;
  std::int64_t count_ = 0;
};

// -------------------------------------------------------------------- Semaphore, Bounded

class SemaphoreObj final : public Object {
 public:
  SemaphoreObj(std::int64_t value, bool bounded) : value_(value), initial_(value), bounded_(bounded) {
    if (value < 0) throw ValueError("semaphore initial value must be >= 0");
  }
  void call(std::string_view m, InArchive& in, std::string& out, CallCtx& ctx) override {
    std::unique_lock lk(mu_);
    if (m == "acquire") {
      bool blocking = arg<bool>(in);
      double timeout = arg<double>(in);
      no_more(in);
      bool ok = value_ > 0 || (blocking && wait_until(lk, cv_, timeout, ctx, [&] { return value_ > 0; }));
      if (ok) --value_;
      put_bool(out, ok);
    } else if (m == "release") {
      no_more(in);
      if (bounded_ && value_ >= initial_) throw ValueError("BoundedSemaphore released too many times");
      ++value_;
      cv_.notify_one();
    } else if (m == "get_value") {
      no_more(in);
      put_i64(out, value_);
    } else if (m == "locked") {
      no_more(in);
      put_bool(out, value_ == 0);
    } else {
      unknown_method(bounded_ ? "BoundedSemaphore" : "Semaphore", m);
    }
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::int64_t value_, initial_;
  bool bounded_;
};

// --------------------------------------------------------------------------------- Condition

class ConditionObj final : public Object {
 public:
  explicit ConditionObj(std::shared_ptr<LockObj> lock) : lock_(std::move(lock)) {}
  void call(std::string_view m, InArchive& in, std::string& out, CallCtx& ctx) override {
    if (m == "acquire" || m == "release" || m == "locked") return lock_->call(m, in, out, ctx);
    if (m == "wait") {
      double timeout = arg<double>(in);
      no_more(in);
      put_bool(out, wait(ctx, timeout));
    } else if (m == "notify" || m == "notify_all") {
      std::int64_t n = m == "notify" ? arg<std::int64_t>(in) : -1;
      no_more(in);
      if (!lock_->held_by(ctx.conn)) throw RuntimeError("cannot notify on a Condition whose lock this thread does not hold");
      std::lock_guard lk(mu_);
      for (auto it = waiters_.begin(); it != waiters_.end() && n != 0; it = waiters_.erase(it), --n) **it = true;
      cv_.notify_all();
    } else {
      unknown_method("Condition", m);
    }
  }

  bool wait(const CallCtx& ctx, double timeout) {
    bool signalled = false;
    {
      std::lock_guard lk(mu_);
      waiters_.push_back(&signalled);  // before the lock goes: a notify in between is not lost
    }
    std::int64_t levels = 0;
    try {
      levels = lock_->release_all(ctx.conn);
      std::unique_lock lk(mu_);
      wait_until(lk, cv_, timeout, ctx, [&] { return signalled; });
      waiters_.remove(&signalled);
    } catch (...) {
      std::lock_guard lk(mu_);
      waiters_.remove(&signalled);
      throw;
    }
    lock_->restore(ctx, levels);
    return signalled;
  }

  void disconnected(std::uint64_t conn) override { lock_->disconnected(conn); }
  bool has_owners() const override { return true; }

 private:
  std::shared_ptr<LockObj> lock_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::list<bool*> waiters_;
};

// ------------------------------------------------------------------------------------- Event

class EventObj final : public Object {
 public:
  void call(std::string_view m, InArchive& in, std::string& out, CallCtx& ctx) override {
    std::unique_lock lk(mu_);
    if (m == "set") {
      no_more(in);
      flag_ = true;
      cv_.notify_all();
    } else if (m == "clear") {
      no_more(in);
      flag_ = false;
    } else if (m == "is_set") {
      no_more(in);
      put_bool(out, flag_);
    } else if (m == "wait") {
      double timeout = arg<double>(in);
      no_more(in);
      put_bool(out, wait_until(lk, cv_, timeout, ctx, [&] { return flag_; }));
    } else {
      unknown_method("Event", m);
    }
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool flag_ = false;
};

// ----------------------------------------------------------------------------------- Barrier

class BarrierObj final : public Object {
 public:
  BarrierObj(std::int64_t parties, double timeout) : parties_(parties), timeout_(timeout) {
    if (parties < 1) throw ValueError("a Barrier needs at least one party");
  }
  void call(std::string_view m, InArchive& in, std::string& out, CallCtx& ctx) override {
    std::unique_lock lk(mu_);
    if (m == "wait") {
      double timeout = arg<double>(in);
      no_more(in);
      put_i64(out, wait(lk, ctx, timeout < 0 ? timeout_ : timeout));
    } else if (m == "abort") {
      no_more(in);
      broken_ = true;
      cv_.notify_all();
    } else if (m == "reset") {
      no_more(in);
      if (count_ > 0) {  // the parties waiting now see a broken barrier; later ones a fresh one
        reset_gen_ = generation_;
        ++generation_;
        count_ = 0;
      }
      broken_ = false;
      cv_.notify_all();
    } else if (m == "parties") {
      no_more(in);
      put_i64(out, parties_);
    } else if (m == "n_waiting") {
      no_more(in);
      put_i64(out, count_);
    } else if (m == "broken") {
      no_more(in);
      put_bool(out, broken_);
    } else {
      unknown_method("Barrier", m);
    }
  }

 private:
  [[noreturn]] static void broken() { throw BrokenBarrierError("the manager Barrier is broken"); }

  std::int64_t wait(std::unique_lock<std::mutex>& lk, const CallCtx& ctx, double timeout) {
    if (broken_) broken();
    std::int64_t index = count_++;
    std::uint64_t gen = generation_;
    if (count_ == parties_) {
      ++generation_;
      count_ = 0;
      cv_.notify_all();
      return index;
    }
    bool passed = false;
    try {
      passed = wait_until(lk, cv_, timeout, ctx, [&] { return generation_ != gen || broken_; });
    } catch (const ClientGone&) {  // a party that died while waiting breaks the barrier
      broken_ = true;
      cv_.notify_all();
      throw;
    }
    if (!passed) {  // timed out: Python breaks the barrier for everyone
      broken_ = true;
      cv_.notify_all();
      broken();
    }
    if (generation_ != gen && gen != reset_gen_) return index;
    broken();
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::int64_t parties_;
  double timeout_;
  std::int64_t count_ = 0;
  std::uint64_t generation_ = 0;
  std::uint64_t reset_gen_ = ~std::uint64_t{0};
  bool broken_ = false;
};

// --------------------------------------------------------------------- Queue, JoinableQueue

class QueueObj final : public Object, public std::enable_shared_from_this<QueueObj> {
 public:
  QueueObj(std::int64_t maxsize, bool joinable) : maxsize_(maxsize), joinable_(joinable) {}
  void call(std::string_view m, InArchive& in, std::string& out, CallCtx& ctx) override {
    std::unique_lock lk(mu_);
    auto full = [&] { return maxsize_ > 0 && static_cast<std::int64_t>(items_.size()) >= maxsize_; };
    if (m == "put") {
      auto v = arg<std::string>(in);
      bool block = arg<bool>(in);
      double timeout = arg<double>(in);
      no_more(in);
      if (full() && (!block || !wait_until(lk, cv_, timeout, ctx, [&] { return !full(); })))
        throw queue::Full("the manager queue is full");
      items_.push_back(std::move(v));
      ++unfinished_;
      cv_.notify_all();
    } else if (m == "get") {
      bool block = arg<bool>(in);
      double timeout = arg<double>(in);
      no_more(in);
      if (items_.empty() && (!block || !wait_until(lk, cv_, timeout, ctx, [&] { return !items_.empty(); })))
        throw queue::Empty("the manager queue is empty");
      std::string item = std::move(items_.front());
      items_.pop_front();
      out += item;
      cv_.notify_all();
      // A client that died before the item reached it must not lose it.
      ctx.undo = [self = shared_from_this(), item = std::move(item)] {
        std::lock_guard g(self->mu_);
        self->items_.push_front(item);
        self->cv_.notify_all();
      };
    } else if (m == "qsize") {
      no_more(in);
      auto n = static_cast<std::uint64_t>(items_.size());
      out.append(reinterpret_cast<const char*>(&n), sizeof n);
    } else if (m == "full") {
      no_more(in);
      put_bool(out, full());
    } else if (m == "task_done" && joinable_) {
      no_more(in);
      if (unfinished_ <= 0) throw ValueError("task_done() called too many times");
      if (--unfinished_ == 0) cv_.notify_all();
    } else if (m == "join" && joinable_) {
      no_more(in);
      wait_until(lk, cv_, -1, ctx, [&] { return unfinished_ == 0; });
    } else {
      unknown_method(joinable_ ? "JoinableQueue" : "Queue", m);
    }
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::string> items_;
  std::int64_t maxsize_;
  bool joinable_;
  std::int64_t unfinished_ = 0;
};

}  // namespace

std::shared_ptr<Object> make_sync_object(std::string_view t, InArchive& args, const Lookup& lookup) {
  std::shared_ptr<Object> obj;
  if (t == "Lock" || t == "RLock") {
    obj = std::make_shared<LockObj>(t == "RLock");
  } else if (t == "Semaphore" || t == "BoundedSemaphore") {
    obj = std::make_shared<SemaphoreObj>(arg<std::int64_t>(args), t == "BoundedSemaphore");
  } else if (t == "Condition") {
    auto lock_id = arg<std::uint64_t>(args);
    std::shared_ptr<LockObj> lock;
    if (lock_id == 0) {
      lock = std::make_shared<LockObj>(true);
    } else {
      lock = std::dynamic_pointer_cast<LockObj>(lookup(lock_id));
      if (!lock) throw TypeMismatchError("Condition(lock): the lock is not a Lock or RLock of this manager");
    }
    obj = std::make_shared<ConditionObj>(std::move(lock));
  } else if (t == "Event") {
    obj = std::make_shared<EventObj>();
  } else if (t == "Barrier") {
    auto parties = arg<std::int64_t>(args);
    obj = std::make_shared<BarrierObj>(parties, arg<double>(args));
  } else if (t == "Queue" || t == "JoinableQueue") {
    auto maxsize = arg<std::int64_t>(args);
    auto joinable = arg<bool>(args);
    obj = std::make_shared<QueueObj>(maxsize, joinable);
  } else {
    return nullptr;
  }
  no_more(args);
  return obj;
}

}  // namespace mproc::detail::mgr
