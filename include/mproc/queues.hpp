// mproc/queues.hpp — Python's multiprocessing.queues: Queue, SimpleQueue, JoinableQueue, and
// the queue.Empty / queue.Full errors.
//
// A queue is a handle on a ring buffer in shared memory (an anonymous memfd): copies share the
// queue, and a handle passed as a Process argument reaches the child as a descriptor under fork,
// spawn and forkserver alike. Any number of processes and threads may put and get at once; every
// item is received exactly once.
//
//     mproc::Queue<std::string> q;                       // Python: q = Queue()
//     mproc::Process p(produce, q);  p.start();          // produce(mproc::Queue<std::string> q)
//     std::string s = q.get();                           // blocks until an item arrives
//     auto t = q.get(50ms);                              // or throws mproc::queue::Empty
//
// Items are serialised as Process arguments are (trivially copyable types as their bytes,
// others with cereal); put() copies the item into shared memory and get() decodes it from there.
// Where mproc differs from Python, and why (docs/shared-state.md, "Queues", has the details):
//  - There is no feeder thread. put() has written the item into the queue when it returns, so
//    join_thread() and cancel_join_thread() have nothing to wait for or to drop (no-ops), and a
//    process that exits right after put() loses nothing.
//  - The ring is finite (QueueOptions::buffer_bytes, 1 MiB by default), so put() on an unbounded
//    queue (maxsize 0) blocks while the ring is full, where Python's put() would buffer in the
//    producer's memory; put_nowait() and put(item, timeout) throw queue::Full then.
//  - Items larger than a quarter of the ring stream through it in chunks under the producers'
//    lock; the consumer assembles them.
//  - Robust: a producer or a consumer killed mid-operation loses at most the item it was
//    putting or getting; the queue stays consistent and the others carry on.
//  - get() and get_nowait() on a handle that was close()d throw ValueError, as Python's do.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>

#include "mproc/connection.hpp"  // mproc::seconds
#include "mproc/detail/queue_items.hpp"
#include "mproc/detail/serialize.hpp"
#include "mproc/errors.hpp"

namespace mproc {

namespace queue {
/// Python: queue.Empty. get_nowait(), or get() with a timeout, found no item.
class Empty : public Error {
 public:
  using Error::Error;
};
/// Python: queue.Full. put_nowait(), or put() with a timeout, found no room.
class Full : public Error {
 public:
  using Error::Error;
};
}  // namespace queue

/// Options beyond Python's constructor arguments.
struct QueueOptions {
  /// Bytes of the shared ring (rounded up to a power of two, at least 64 KiB). It bounds what
  /// is in flight: an unbounded queue's put() waits while the ring is full.
  std::size_t buffer_bytes = std::size_t{1} << 20;
};

namespace detail {

struct QueueShared;
enum class QueueKind : std::uint32_t { queue = 1, simple = 2, joinable = 3 };

/// The untyped queue under the templates. Not API.
class QueueCore {
 public:
  QueueCore(QueueKind kind, long maxsize, const QueueOptions& options, std::uint64_t type);
  /// Copies the parts, back to back, into the queue as one item. Throws queue::Full.
  void put(std::span<const std::span<const std::byte>> parts, bool block, std::optional<seconds> timeout) const;
  /// Hands one item to sink. Throws queue::Empty.
  void get(ItemSink& sink, bool block, std::optional<seconds> timeout) const;
  std::size_t qsize() const noexcept;
  bool empty() const noexcept;
  bool full() const noexcept;
  long maxsize() const noexcept;
  void close() const noexcept;
  void task_done() const;
  bool join(std::optional<seconds> timeout) const;
  void save(OutArchive& ar) const;
  void load(InArchive& ar, QueueKind kind, std::uint64_t type);

 private:
  std::shared_ptr<QueueShared> s_;
};

/// What Queue and JoinableQueue share. Not API.
template <class T>
class QueueBase {
 public:
  /// Python: put(obj). Waits for room as long as it takes. Throws ValueError after close().
  void put(const T& item) const { put_item(core_, item, true, std::nullopt); }
  /// Python: put(obj, timeout=t). Throws queue::Full when there is no room within timeout.
  void put(const T& item, seconds timeout) const { put_item(core_, item, true, timeout); }
  /// Python: put(obj, block, timeout).
  void put(const T& item, bool block, std::optional<seconds> timeout) const { put_item(core_, item, block, timeout); }
  /// Python: put_nowait(obj). Throws queue::Full when there is no room now (or when another
  /// producer is in the middle of a put).
  void put_nowait(const T& item) const { put_item(core_, item, false, std::nullopt); }

  /// Python: get(). Waits for an item as long as it takes.
  T get() const { return get_item<T>(core_, true, std::nullopt); }
  /// Python: get(timeout=t). Throws queue::Empty when no item begins to arrive within timeout
  /// (an item larger than the ring that has begun to arrive is waited for, as Python does).
  T get(seconds timeout) const { return get_item<T>(core_, true, timeout); }
  /// Python: get(block, timeout).
  T get(bool block, std::optional<seconds> timeout) const { return get_item<T>(core_, block, timeout); }
  /// Python: get_nowait(). Throws queue::Empty when no item is there now (or when another
  /// consumer is in the middle of a get).
  T get_nowait() const { return get_item<T>(core_, false, std::nullopt); }

  /// Python: qsize(). Items put and not yet taken (a snapshot: other processes move on).
  std::size_t qsize() const noexcept { return core_.qsize(); }
  /// Python: empty(). Nothing is in the queue now.
  bool empty() const noexcept { return core_.empty(); }
  /// Python: full(). maxsize items are in the queue now (never, for maxsize 0).
  bool full() const noexcept { return core_.full(); }
  /// The maxsize the queue was made with (0: no item limit).
  long maxsize() const noexcept { return core_.maxsize(); }

  /// Python: close(). This process will put and get no more through this handle and its
  /// copies: put() and get() throw ValueError afterwards. Other processes are not affected.
  void close() const noexcept { core_.close(); }
  /// Python: join_thread(). A no-op: there is no feeder thread, put() has already written every
  /// item into shared memory when it returns.
  void join_thread() const noexcept {}
  /// Python: cancel_join_thread(). A no-op for the same reason: nothing is ever buffered in
  /// this process, so exiting cannot block on it or lose it.
  void cancel_join_thread() const noexcept {}

 protected:
  QueueBase(QueueKind kind, long maxsize, const QueueOptions& options)
      : core_(kind, maxsize, options, type_fingerprint<T>()) {}

  QueueCore core_;
};

}  // namespace detail

/// Python: multiprocessing.Queue. A multi-producer, multi-consumer FIFO of T across processes.
/// maxsize > 0 bounds the number of items in the queue (put() waits while it is full); 0 means
/// no item limit. Throws ValueError for a negative maxsize. Thread-safe.
template <class T>
class Queue : public detail::QueueBase<T> {
 public:
  explicit Queue(long maxsize = 0, QueueOptions options = {})
      : detail::QueueBase<T>(detail::QueueKind::queue, maxsize, options) {}

  // Passing to a child process (cereal): the memfd travels as a descriptor.
  void save(detail::OutArchive& ar) const { this->core_.save(ar); }
  void load(detail::InArchive& ar) { this->core_.load(ar, detail::QueueKind::queue, detail::type_fingerprint<T>()); }
};

/// Python: multiprocessing.JoinableQueue. A Queue that counts unfinished tasks: every put()
/// adds one, task_done() takes one away, join() waits until none is left.
template <class T>
class JoinableQueue : public detail::QueueBase<T> {
 public:
  explicit JoinableQueue(long maxsize = 0, QueueOptions options = {})
      : detail::QueueBase<T>(detail::QueueKind::joinable, maxsize, options) {}

  /// Python: task_done(). An item taken with get() has been dealt with. Throws ValueError
  /// when called more times than items were put.
  void task_done() const { this->core_.task_done(); }
  /// Python: join(). Waits until every item put has been taken and task_done() called for it.
  /// An item whose consumer died before task_done() is never done: give join a timeout when
  /// consumers may die.
  void join() const { this->core_.join(std::nullopt); }
  /// join with a timeout (not in Python): true when every task was done within it.
  bool join(seconds timeout) const { return this->core_.join(timeout); }

  void save(detail::OutArchive& ar) const { this->core_.save(ar); }
  void load(detail::InArchive& ar) { this->core_.load(ar, detail::QueueKind::joinable, detail::type_fingerprint<T>()); }
};

/// Python: multiprocessing.SimpleQueue. put, get, empty and close; no size limit and no
/// timeouts. (It shares Queue's ring; Python's is a bare pipe under two locks.)
template <class T>
class SimpleQueue {
 public:
  explicit SimpleQueue(QueueOptions options = {})
      : core_(detail::QueueKind::simple, 0, options, detail::type_fingerprint<T>()) {}

  /// Python: put(obj). Waits while the ring is full.
  void put(const T& item) const { detail::put_item(core_, item, true, std::nullopt); }
  /// Python: get(). Waits for an item.
  T get() const { return detail::get_item<T>(core_, true, std::nullopt); }
  /// Python: empty().
  bool empty() const noexcept { return core_.empty(); }
  /// Python: close(). put() and get() through this handle throw ValueError afterwards.
  void close() const noexcept { core_.close(); }

  void save(detail::OutArchive& ar) const { core_.save(ar); }
  void load(detail::InArchive& ar) { core_.load(ar, detail::QueueKind::simple, detail::type_fingerprint<T>()); }

 private:
  detail::QueueCore core_;
};

}  // namespace mproc
