// Payloads in shared memory. The payload of a frame flagged kFrameInMemfd (wire.hpp) lies in a
// "slab": a memfd that travels beside the header as SCM_RIGHTS, sealed against shrinking and
// growing. Its first page (kSlabHead bytes) holds a state word; the payload follows it (the
// header's length bytes, at most the slab's capacity). The sender sets it to kSlabBusy and writes
// the payload; the receiver sets it to kSlabFree when it is done with the bytes, and the sender
// then writes its next large payload into the same pages. Pages the sender already owns cost a
// memcpy; fresh ones cost a fault and a zeroing each (in a virtual machine more than the copy:
// docs/design/large-messages.md).
//
// The receiver checks the descriptor before it maps or reads anything: a mapping of a file its
// sender can still shrink turns the receiver's loads into SIGBUS. The sender can still write the
// pages while the receiver reads them (that is what makes them reusable); the receiver is safe
// against that because it reads each byte once, into memory of its own, before it believes it
// (InArchive: sizes are checked against the header's length, which the sender cannot change), so
// a sender that breaks the protocol sends garbage, which is refused as any hostile bytes are.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "os/fd.hpp"
#include "os/mapping.hpp"

namespace mproc::detail {

constexpr std::size_t kSlabHead = 4096;
constexpr std::uint32_t kSlabFree = 0;
constexpr std::uint32_t kSlabBusy = 1;

/// The seals a payload memfd must carry.
int required_payload_seals();

/// Which file a slab is, and its size (fixed by its seals).
struct SlabId {
  dev_t dev = 0;
  ino_t ino = 0;
  std::uint64_t size = 0;
};

/// Returns what fd is when it is a slab for a payload of length bytes: a memfd sealed with at
/// least F_SEAL_SHRINK | F_SEAL_GROW, not against writing (the receiver writes the head), with
/// room for the head and length bytes. Otherwise throws
/// ProtocolError naming the cause (not a memfd, which seals are missing, the size it holds).
/// Never closes fd.
SlabId check_payload_memfd(int fd, std::uint64_t length);

/// The receiver is done with the payload of the (checked) slab behind fd: its sender may write
/// the next one there. Never throws: at worst the sender makes a new slab.
void release_slab(int fd) noexcept;
/// The same through a writable mapping of the slab's head.
void release_slab(std::byte* head) noexcept;

/// A slab: a memfd sealed against shrinking and growing (kSlabHead bytes of head, then
/// `capacity` payload bytes), mapped whole, read-write.
struct Slab {
  os::Fd fd;
  os::Mapping map;
  std::size_t capacity = 0;   // payload bytes it can hold
  std::size_t touched = 0;    // most payload bytes written: the pages it holds
  std::uint64_t last_use = 0;

  /// A new slab of at least n payload bytes (a power of two), marked busy. When payload is given,
  /// its n bytes are written first, with pwrite: the kernel fills the new pages without a fault
  /// each in this process. Throws mproc::OSError (out of memory or descriptors).
  static std::unique_ptr<Slab> make(std::size_t n, const void* payload = nullptr);
  std::uint32_t& state() const;
  std::byte* payload() const { return static_cast<std::byte*>(map.data()) + kSlabHead; }
  /// Its receiver released it (acquire: what the receiver read happened before).
  bool released() const;
  void mark_busy();
};

/// The sender's slabs: a few kept for reuse, per connection end.
class SlabCache {
 public:
  using Slab = detail::Slab;

  /// A slab of at least n payload bytes holding a copy of payload, marked busy: a kept one the
  /// receiver released, else a new one. Throws mproc::OSError (out of memory or descriptors).
  Slab& fill(const void* payload, std::size_t n);
  /// A slab filled but never sent: nobody will release it.
  static void unsent(Slab& s);

  /// Slabs kept (for tests).
  std::size_t size() const { return slabs_.size(); }

 private:
  void trim();
  std::vector<std::unique_ptr<Slab>> slabs_;
  pid_t owner_ = 0;  // a forked child must not write into its parent's slabs
  std::uint64_t clock_ = 0;
};

/// Slabs that their owner fills in place and hands on as a pool's chunks (an MPI rank receives
/// its large tasks into them: the copy into a connection's slab is saved). One is taken again
/// once no chunk holds it: a pool drops a chunk only when its worker answered it (and so read
/// it) or is dead, and keeps one whose worker died to send it again from the same bytes. At
/// most `most` exist, so that a receiver's kept mappings cover them.
class SlabPool {
 public:
  explicit SlabPool(std::size_t most) : most_(most) {}
  /// A slab of at least n payload bytes, marked busy; null while `most` are in use.
  /// Throws mproc::OSError (out of memory or descriptors).
  std::shared_ptr<Slab> take(std::size_t n);

 private:
  std::size_t most_;
  std::vector<std::shared_ptr<Slab>> slabs_;
};

/// The receiving end's mappings of its sender's slabs, kept while the sender may send in them
/// again: mapping 256 MiB and unmapping it costs ~35 ms (page tables, TLB shootdowns), a copy
/// ~25 ms. A kept mapping keeps its pages alive after the sender drops the slab, so few are kept.
class SlabMappings {
 public:
  /// The whole slab behind fd (checked: id), read-write (for its head's state word): a kept
  /// mapping of the same file, or a new one. Throws mproc::OSError.
  std::shared_ptr<os::Mapping> map(int fd, const SlabId& id);

 private:
  struct Entry {
    SlabId id;
    std::shared_ptr<os::Mapping> map;
    std::uint64_t last_use = 0;
  };
  std::vector<Entry> entries_;
  std::uint64_t clock_ = 0;
};

}  // namespace mproc::detail
