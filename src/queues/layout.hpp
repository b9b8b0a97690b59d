// The shared memory of a Queue: one memfd holding a control page and a ring of bytes.
//
//   [0, 4096)          QueueControl: header, the producers' and the consumers' sides
//   [4096, 4096 + C)   the ring, C a power of two
//
// The ring is mapped twice, back to back, right after the control page, so a record that wraps
// around the end of the ring is still contiguous in memory: writers copy and readers decode in
// place without splitting anything at the wrap.
//
// Records are 8-byte aligned: a RecordHeader, then len bytes. An item that fits in one record
// (at most C/4 bytes with its header) is one record flagged kFirst | kLast. A larger item streams
// as several records with the same seq: the first (kFirst) starts with the item's total size as
// a 64-bit number, the last is flagged kLast. Producers take turns under the producers' lock and
// consumers under the consumers' lock, so between the two locks the ring is single-producer,
// single-consumer: head and tail are 64-bit byte positions that only grow.
//
// Robustness. A producer publishes a record only when it is complete (the store of head), and a
// consumer frees one only when it has used it (the store of tail), so a process killed at any
// point leaves the ring consistent. What a death can leave behind, and who repairs it:
//  - a producer killed in the middle of a large item: the records it published form a partial
//    item. `stream` still names it; a consumer waiting for the rest sees that the producer is
//    gone (it probes the producers' lock, whose takeover detects dead owners) and drops the
//    partial item; the next producer to take the lock clears `stream` too.
//  - a consumer killed in the middle of a large item: the next consumer finds continuation
//    records without their first one and drops them.
//  - either killed between publishing (or freeing) an item's last record and counting it: the
//    pending_* fields, written before the publishing store, let the next lock holder redo the
//    count exactly (it compares head with pending_head).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "mproc/detail/mutex_state.hpp"

namespace mproc::detail {

inline constexpr std::uint64_t kQueueMagic = 0x6575657571637270ull;  // "prcqueue"
inline constexpr std::uint32_t kQueueVersion = 1;
inline constexpr std::size_t kControlBytes = 4096;
inline constexpr std::size_t kMinRing = std::size_t{64} << 10;
inline constexpr std::size_t kMaxRing = std::size_t{1} << 30;

inline constexpr std::uint32_t kFirst = 1;
inline constexpr std::uint32_t kLast = 2;

struct RecordHeader {
  std::uint64_t seq;    // the item's number (all records of one item share it)
  std::uint32_t len;    // payload bytes after this header
  std::uint32_t flags;  // kFirst, kLast
};
static_assert(sizeof(RecordHeader) == 16);

/// A futex word: bit 0 says someone sleeps on it; the other bits count signals. A signaller
/// wakes only when the bit is set, and clears it, so a sleeper that died costs one needless
/// wake-up at most.
struct alignas(64) WakeWord {
  std::atomic<std::uint32_t> word;
};

struct alignas(64) QueueControl {
  // Written once by the creator.
  std::uint64_t magic;
  std::uint32_t version;
  std::uint32_t kind;       // QueueKind
  std::uint64_t file_size;  // kControlBytes + capacity
  std::uint64_t capacity;   // ring bytes C
  std::int64_t maxsize;     // 0: no item limit
  std::uint64_t type;       // fingerprint of T

  // The producers' side: fields under put_lock (plain) and what consumers read (atomic).
  alignas(64) MutexState put_lock;
  std::uint64_t next_seq;
  std::uint64_t pending_head;
  std::uint64_t pending_put;
  std::atomic<std::uint64_t> stream;  // seq + 1 of the large item being streamed, 0 when none
  std::uint64_t seen_tail;            // tail as last read: there is at least this much room

  alignas(64) std::atomic<std::uint64_t> head;       // bytes published
  std::atomic<std::uint64_t> count_put;              // whole items published

  // The consumers' side.
  alignas(64) MutexState get_lock;
  std::uint64_t pending_tail;
  std::uint64_t pending_got;
  std::uint64_t seen_head;            // head as last read: records up to it are there to take

  alignas(64) std::atomic<std::uint64_t> tail;       // bytes freed
  std::atomic<std::uint64_t> count_got;              // whole items taken (or dropped)

  // JoinableQueue: task_done() calls.
  alignas(64) std::atomic<std::uint64_t> tasks_done;

  WakeWord data;   // head moved (consumers sleep on it)
  WakeWord space;  // tail moved (producers sleep on it)
  WakeWord tasks;  // tasks_done reached the items put (join() sleeps on it)
};
static_assert(sizeof(QueueControl) <= kControlBytes);

}  // namespace mproc::detail
