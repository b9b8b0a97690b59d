// Queue, SimpleQueue, JoinableQueue: the ring in shared memory (layout.hpp), put and get.
#include <sys/mman.h>
#include <sys/stat.h>

#include <algorithm>
#include <climits>
#include <cstring>
#include <string>

#include "mproc/detail/fd_passing.hpp"
#include "mproc/detail/timeout.hpp"
#include "mproc/queues.hpp"
#include "os/fd.hpp"
#include "os/futex.hpp"
#include "os/mapping.hpp"
#include "queues/layout.hpp"
#include "sync/robust_mutex.hpp"

namespace mproc::detail {

void throw_bad_queue_item(const char* why) { throw ProtocolError(std::string("malformed queue item: ") + why); }

namespace {

// How often a consumer waiting for the rest of a large item checks that its producer lives.
constexpr double kStreamCheck = 0.05;

[[noreturn]] void throw_bad_handle(const std::string& why) {
  throw ProtocolError("malformed Queue handle: " + why);
}

constexpr std::size_t align8(std::size_t n) noexcept { return (n + 7) & ~std::size_t{7}; }

const char* kind_name(std::uint32_t kind) noexcept {
  switch (static_cast<QueueKind>(kind)) {
    case QueueKind::queue: return "Queue";
    case QueueKind::simple: return "SimpleQueue";
    case QueueKind::joinable: return "JoinableQueue";
  }
  return "unknown";
}

// The control page and the ring mapped twice after it (layout.hpp).
class RingMapping {
 public:
  RingMapping(int fd, std::size_t capacity) : size_(kControlBytes + 2 * capacity) {
    void* base = ::mmap(nullptr, size_, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (base == MAP_FAILED) os::throw_errno("reserving " + std::to_string(size_) + " bytes for a Queue");
    base_ = static_cast<std::byte*>(base);
    if (::mmap(base_, kControlBytes + capacity, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, 0) == MAP_FAILED ||
        ::mmap(base_ + kControlBytes + capacity, capacity, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd,
               static_cast<off_t>(kControlBytes)) == MAP_FAILED) {
      int err = errno;
      ::munmap(base_, size_);
      os::throw_errno("mapping a Queue's ring", err);
    }
  }
  RingMapping(const RingMapping&) = delete;
  RingMapping& operator=(const RingMapping&) = delete;
  ~RingMapping() { ::munmap(base_, size_); }

  QueueControl& control() const noexcept { return *reinterpret_cast<QueueControl*>(base_); }
  std::byte* ring() const noexcept { return base_ + kControlBytes; }

 private:
  std::size_t size_;
  std::byte* base_ = nullptr;
};

os::Deadline deadline_of(bool block, std::optional<seconds> timeout) noexcept {
  if (!block) return os::Deadline::after(0.0);
  return timeout ? os::Deadline::after(timeout->count()) : os::Deadline::never();
}

// Wakes whoever sleeps on w (see WakeWord). What the sleeper waits for must be stored before,
// and a sequentially consistent operation or fence must separate those stores from this load
// (against the sleeper's compare-exchange of the word, then its loads): either the sleeper
// sees the stores, or this load sees its bit.
void signal(WakeWord& w) noexcept {
  std::uint32_t v = w.word.load();
  while (v & 1u) {
    if (w.word.compare_exchange_weak(v, v + 1u)) {
      os::futex_wake(w.word, INT_MAX);
      return;
    }
  }
}

// Sleeps on w until ready() or the deadline; returns ready(). ready() must read what the
// signaller wrote before signal() (sequentially consistent on both sides): either the waiter
// sees it, or the signaller sees the waiter's bit.
// Spins this many rounds before sleeping: a peer that is busy putting (or getting) right now
// is met without a system call on either side. About 20 us where a pause takes 50 ns (recent
// x86), less on older cores.
constexpr int kSpins = 400;

inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

template <class Ready>
bool wait_until(WakeWord& w, Ready ready, const os::Deadline& deadline) {
  if (ready()) return true;
  if (deadline.passed()) return ready();
  for (int i = 0; i < kSpins; ++i) {
    cpu_relax();
    if (ready()) return true;
  }
  for (;;) {
    if (ready()) return true;
    std::uint32_t v = w.word.load();
    if (!(v & 1u)) {
      if (!w.word.compare_exchange_weak(v, v | 1u)) continue;
      v |= 1u;
    }
    if (ready()) return true;
    if (os::futex_wait(w.word, v, deadline) == os::FutexWait::timed_out) return ready();
  }
}

// Holds one of the queue's two locks.
class Held {
 public:
  explicit Held(MutexState& m) noexcept : m_(&m) {}
  Held(const Held&) = delete;
  Held& operator=(const Held&) = delete;
  ~Held() { mutex_release(*m_, false, "Queue lock"); }

 private:
  MutexState* m_;
};

}  // namespace

struct QueueShared {
  os::Fd fd;
  std::unique_ptr<RingMapping> map;
  QueueControl* c = nullptr;
  std::byte* ring = nullptr;
  std::size_t capacity = 0;
  std::size_t max_record = 0;  // a record (header included) is at most a quarter of the ring
  std::atomic<bool> closed{false};

  void attach(os::Fd f, std::size_t cap) {
    map = std::make_unique<RingMapping>(f.get(), cap);
    fd = std::move(f);
    c = &map->control();
    ring = map->ring();
    capacity = cap;
    max_record = cap / 4;
  }
  std::byte* at(std::uint64_t pos) const noexcept { return ring + (pos & (capacity - 1)); }

  void check_open(const char* op) const {
    if (closed.load(std::memory_order_relaxed))
      throw ValueError(std::string(op) + " on a closed " + kind_name(c->kind) + ": close() was called on this handle");
  }

  // -------------------------------------------------------------- repairs after a death

  // Under put_lock, taken over from a producer that died.
  void repair_producer() noexcept {
    auto& q = *c;
    if (q.head.load() == q.pending_head && q.count_put.load() < q.pending_put) q.count_put.store(q.pending_put);
    if (q.stream.load() != 0) q.stream.store(0);
    signal(q.data);  // a consumer waiting for the rest of the dead producer's item
  }

  // Under get_lock, taken over from a consumer that died.
  void repair_consumer() noexcept {
    auto& q = *c;
    if (q.tail.load() == q.pending_tail && q.count_got.load() < q.pending_got) q.count_got.store(q.pending_got);
    signal(q.space);
  }

  // -------------------------------------------------------------- producer side

  // Whole items put and not yet taken. (A consumer may count an item a moment before its
  // producer does.)
  std::uint64_t in_queue() const noexcept {
    std::uint64_t got = c->count_got.load();
    std::uint64_t put = c->count_put.load();
    return put > got ? put - got : 0;
  }

  // Reads the consumers' tail (a cache line they write) only when the last value read does not
  // already show enough room: tail only grows.
  bool room_for(std::uint64_t head, std::size_t bytes) const noexcept {
    auto& q = *c;
    if (capacity - (head - q.seen_tail) >= bytes) return true;
    q.seen_tail = q.tail.load();
    return capacity - (head - q.seen_tail) >= bytes;
  }

  // The same for consumers and head: whether a record is there at tail.
  bool has_record(std::uint64_t tail) const noexcept {
    auto& q = *c;
    if (q.seen_head != tail) return true;
    q.seen_head = q.head.load();
    return q.seen_head != tail;
  }

  // Writes a record at head; the caller publishes it.
  void write_record(std::uint64_t head, std::uint64_t seq, std::uint32_t flags, std::span<const std::byte> prefix,
                    std::span<const std::span<const std::byte>> parts, std::size_t& part, std::size_t& offset,
                    std::size_t n) const noexcept {
    std::byte* p = at(head);
    RecordHeader h{seq, static_cast<std::uint32_t>(prefix.size() + n), flags};
    std::memcpy(p, &h, sizeof h);
    p += sizeof h;
    if (!prefix.empty()) {
      std::memcpy(p, prefix.data(), prefix.size());
      p += prefix.size();
    }
    while (n > 0) {
      const auto& s = parts[part];
      std::size_t k = std::min(n, s.size() - offset);
      if (k) std::memcpy(p, s.data() + offset, k);
      p += k;
      n -= k;
      offset += k;
      if (offset == s.size()) {
        ++part;
        offset = 0;
      }
    }
  }

  // Release stores and one fence: a locked instruction costs more than the rest of a small put.
  void publish(std::uint64_t new_head, bool last) noexcept {
    auto& q = *c;
    if (last) {
      q.pending_head = new_head;
      q.pending_put = q.count_put.load(std::memory_order_relaxed) + 1;
      q.head.store(new_head, std::memory_order_release);
      q.count_put.store(q.pending_put, std::memory_order_release);
    } else {
      q.head.store(new_head, std::memory_order_release);
    }
    std::atomic_thread_fence(std::memory_order_seq_cst);
    signal(q.data);
  }

  void put(std::span<const std::span<const std::byte>> parts, bool block, std::optional<seconds> timeout) {
    check_open("put");
    std::size_t total = 0;
    for (const auto& s : parts) total += s.size();
    auto& q = *c;
    const auto deadline = deadline_of(block, timeout);
    if (!mutex_acquire(q.put_lock, false, block, deadline, "Queue lock"))
      throw queue::Full("put: another producer holds the queue");
    Held held(q.put_lock);
    if (q.put_lock.owner_died) repair_producer();

    if (q.maxsize > 0 && !wait_until(q.space, [&] { return in_queue() < static_cast<std::uint64_t>(q.maxsize); }, deadline))
      throw queue::Full("put: the queue holds maxsize items");

    const std::uint64_t seq = q.next_seq++;
    std::uint64_t head = q.head.load(std::memory_order_relaxed);
    std::size_t part = 0, offset = 0;

    const std::size_t whole = sizeof(RecordHeader) + align8(total);
    if (whole <= max_record) {
      if (!wait_until(q.space, [&] { return room_for(head, whole); }, deadline))
        throw queue::Full("put: the queue's ring is full");
      write_record(head, seq, kFirst | kLast, {}, parts, part, offset, total);
      publish(head + whole, true);
      return;
    }

    // Larger than a record: stream it in chunks of at most a record each.
    q.stream.store(seq + 1);
    const std::uint64_t total64 = total;
    std::size_t left = total;
    bool first = true;
    while (left > 0 || first) {
      const std::size_t prefix = first ? sizeof total64 : 0;
      const std::size_t chunk = std::min(left, max_record - sizeof(RecordHeader) - prefix);
      const std::size_t bytes = sizeof(RecordHeader) + align8(prefix + chunk);
      if (!wait_until(q.space, [&] { return room_for(head, bytes); }, deadline)) {
        // Give the item up: consumers drop what they received of it (stream no longer names it).
        q.stream.store(0);
        signal(q.data);
        throw queue::Full("put: the queue's ring stayed full in the middle of a large item");
      }
      const bool last = chunk == left;
      write_record(head, seq, (first ? kFirst : 0) | (last ? kLast : 0),
                   first ? std::as_bytes(std::span(&total64, 1)) : std::span<const std::byte>{}, parts, part, offset,
                   chunk);
      head += bytes;
      left -= chunk;
      first = false;
      publish(head, last);
    }
    q.stream.store(0);
  }

  // -------------------------------------------------------------- consumer side

  void free_record(std::uint64_t new_tail, bool last) noexcept {
    auto& q = *c;
    if (last) {
      q.pending_tail = new_tail;
      q.pending_got = q.count_got.load(std::memory_order_relaxed) + 1;
      q.tail.store(new_tail, std::memory_order_release);
      q.count_got.store(q.pending_got, std::memory_order_release);
    } else {
      q.tail.store(new_tail, std::memory_order_release);
    }
    std::atomic_thread_fence(std::memory_order_seq_cst);
    signal(q.space);
  }

  // Mid-item with nothing in the ring: whether the producer gave the item up or died. Probes the
  // producers' lock, whose slow path takes over a dead owner's lock within about a millisecond.
  bool stream_gone(std::uint64_t seq, std::uint64_t tail) {
    auto& q = *c;
    auto abandoned = [&] { return q.stream.load() != seq + 1 && q.head.load() == tail; };
    if (abandoned()) return true;
    if (!mutex_acquire(q.put_lock, false, true, os::Deadline::after(0.005), "Queue lock")) return false;
    Held held(q.put_lock);
    if (q.put_lock.owner_died) repair_producer();
    if (q.stream.load() == seq + 1) q.stream.store(0);  // nobody is streaming it: the lock was free
    return abandoned();
  }

  void get(ItemSink& sink, bool block, std::optional<seconds> timeout) {
    check_open("get");
    auto& q = *c;
    const auto deadline = deadline_of(block, timeout);
    if (!mutex_acquire(q.get_lock, false, block, deadline, "Queue lock"))
      throw queue::Empty("get: another consumer holds the queue");
    Held held(q.get_lock);
    if (q.get_lock.owner_died) repair_consumer();

    std::uint64_t tail = q.tail.load(std::memory_order_relaxed);
    bool active = false;  // in the middle of a large item
    std::uint64_t seq = 0;
    std::size_t total = 0, received = 0;
    for (;;) {
      auto ready = [&] { return has_record(tail); };
      if (!active) {
        if (!wait_until(q.data, ready, deadline)) throw queue::Empty("get: the queue is empty");
      } else {
        // The rest of an item that has begun to arrive: wait while its producer lives.
        while (!wait_until(q.data, ready, os::Deadline::after(kStreamCheck))) {
          if (stream_gone(seq, tail)) {
            active = false;
            break;
          }
        }
        if (!active) continue;
      }

      const std::uint64_t head = q.seen_head;
      RecordHeader h;
      std::memcpy(&h, at(tail), sizeof h);
      const std::size_t bytes = sizeof(RecordHeader) + align8(h.len);
      if (bytes > max_record || bytes > head - tail || (h.flags & ~(kFirst | kLast)) != 0 ||
          ((h.flags & kFirst) && !(h.flags & kLast) && h.len < sizeof(std::uint64_t))) {
        free_record(head, false);  // garbage in the ring: drop everything published
        throw ProtocolError("malformed Queue record: the shared ring was overwritten");
      }
      const std::byte* payload = at(tail) + sizeof h;
      const std::uint64_t next = tail + bytes;

      // Hands a record to the sink; an exception still frees it (and ends the item).
      auto deliver = [&](auto&& use, bool last) {
        try {
          use();
        } catch (...) {
          free_record(next, last);
          throw;
        }
      };

      if (h.flags == (kFirst | kLast)) {
        deliver([&] { sink.whole(payload, h.len); }, true);
        free_record(next, true);
        return;
      }
      if (h.flags & kFirst) {
        std::uint64_t announced = 0;
        std::memcpy(&announced, payload, sizeof announced);
        if (announced < h.len - sizeof announced) {
          free_record(next, false);
          throw_bad_queue_item("a first chunk larger than its item");
        }
        active = true;  // a new item: any partial one before it is dropped with it
        seq = h.seq;
        total = static_cast<std::size_t>(announced);
        received = h.len - sizeof announced;
        deliver(
            [&] {
              sink.begin(total);
              sink.part(payload + sizeof announced, received);
            },
            false);
        free_record(next, false);
        tail = next;
        continue;
      }
      if (!active || h.seq != seq) {  // the rest of an item whose consumer died: drop it
        free_record(next, (h.flags & kLast) != 0);
        tail = next;
        continue;
      }
      received += h.len;
      const bool last = (h.flags & kLast) != 0;
      if (received > total || (last && received != total)) {
        free_record(next, last);
        throw_bad_queue_item("chunks that do not add up to the announced size");
      }
      deliver(
          [&] {
            sink.part(payload, h.len);
            if (last) sink.end();
          },
          last);
      free_record(next, last);
      if (last) return;
      tail = next;
    }
  }
};

// ---------------------------------------------------------------------- QueueCore

QueueCore::QueueCore(QueueKind kind, long maxsize, const QueueOptions& options, std::uint64_t type) {
  if (maxsize < 0) throw ValueError("Queue maxsize must be >= 0, not " + std::to_string(maxsize));
  std::size_t cap = kMinRing;
  while (cap < options.buffer_bytes && cap < kMaxRing) cap *= 2;
  auto s = std::make_shared<QueueShared>();
  s->attach(os::memfd_of_size("mproc-Queue", kControlBytes + cap), cap);
  auto& q = *s->c;
  q.magic = kQueueMagic;
  q.version = kQueueVersion;
  q.kind = static_cast<std::uint32_t>(kind);
  q.file_size = kControlBytes + cap;
  q.capacity = cap;
  q.maxsize = maxsize;
  q.type = type;
  mutex_init(q.put_lock);
  mutex_init(q.get_lock);
  s_ = std::move(s);
}

void QueueCore::put(std::span<const std::span<const std::byte>> parts, bool block, std::optional<seconds> timeout) const {
  check_timeout(timeout, "Queue.put");
  s_->put(parts, block, timeout);
}

void QueueCore::get(ItemSink& sink, bool block, std::optional<seconds> timeout) const {
  check_timeout(timeout, "Queue.get");
  s_->get(sink, block, timeout);
}

std::size_t QueueCore::qsize() const noexcept { return static_cast<std::size_t>(s_->in_queue()); }

bool QueueCore::empty() const noexcept { return s_->c->head.load() == s_->c->tail.load(); }

bool QueueCore::full() const noexcept {
  return s_->c->maxsize > 0 && qsize() >= static_cast<std::size_t>(s_->c->maxsize);
}

long QueueCore::maxsize() const noexcept { return static_cast<long>(s_->c->maxsize); }

void QueueCore::close() const noexcept { s_->closed.store(true); }

void QueueCore::task_done() const {
  auto& q = *s_->c;
  auto items = [&] { return std::max(q.count_put.load(), q.count_got.load()); };
  std::uint64_t done = q.tasks_done.load();
  do {
    if (done >= items()) throw ValueError("task_done() called too many times");
  } while (!q.tasks_done.compare_exchange_weak(done, done + 1));
  if (done + 1 >= items()) signal(q.tasks);
}

bool QueueCore::join(std::optional<seconds> timeout) const {
  check_timeout(timeout, "JoinableQueue.join");
  auto& q = *s_->c;
  return wait_until(
      q.tasks, [&] { return q.tasks_done.load() >= std::max(q.count_put.load(), q.count_got.load()); },
      deadline_of(true, timeout));
}

void QueueCore::save(OutArchive& ar) const {
  int slot = export_fd(s_->fd.get());
  ar(static_cast<std::int32_t>(slot), s_->c->kind);
}

void QueueCore::load(InArchive& ar, QueueKind kind, std::uint64_t type) {
  std::int32_t slot = -1;
  std::uint32_t declared = 0;
  ar(slot, declared);
  os::Fd fd(import_fd(slot));
  const auto expected = static_cast<std::uint32_t>(kind);
  if (declared != expected)
    throw_bad_handle(std::string("a ") + kind_name(declared) + " handle where a " + kind_name(expected) + " was expected");
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode)) throw_bad_handle("the passed descriptor is not shared memory");
  const auto size = static_cast<std::size_t>(st.st_size);
  const std::size_t cap = size - kControlBytes;
  if (size <= kControlBytes || cap < kMinRing || cap > kMaxRing || (cap & (cap - 1)) != 0)
    throw_bad_handle("the shared memory has " + std::to_string(size) + " bytes, not a Queue's");
  auto s = std::make_shared<QueueShared>();
  s->attach(std::move(fd), cap);
  const auto& q = *s->c;
  if (q.magic != kQueueMagic) throw_bad_handle("the shared memory does not hold a Queue (bad magic)");
  if (q.version != kQueueVersion) throw_bad_handle("Queue layout version " + std::to_string(q.version));
  if (q.kind != expected) throw_bad_handle("the shared memory holds another kind of queue than its handle says");
  if (q.file_size != size || q.capacity != cap || q.maxsize < 0) throw_bad_handle("the Queue's header does not match its size");
  if (q.type != type) throw_bad_handle("the Queue holds items of another type");
  s_ = std::move(s);
}

}  // namespace mproc::detail
