// mproc/shared_memory.hpp — Python's multiprocessing.shared_memory: SharedMemory, ShareableList,
// and multiprocessing.managers.SharedMemoryManager.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <variant>
#include <vector>

#include "mproc/detail/serialize.hpp"
#include "mproc/errors.hpp"

namespace mproc {

namespace detail {
struct SharedMemoryImpl;
struct ShareableListImpl;
struct SharedMemoryManagerImpl;
}  // namespace detail

/// Python's SharedMemory keyword arguments.
struct SharedMemoryOptions {
  /// The segment's name, with or without the leading '/' (at most 255 characters, no other '/').
  /// Empty with create: a fresh name "mproc_<pid of the program's main process>_<16 hex digits>".
  std::string name{};
  /// Create a new segment (failing with FileExistsError when the name is taken) rather than
  /// attach to an existing one.
  bool create{};
  /// With create: the size in bytes, > 0. When attaching: 0, or the least size the segment must
  /// have (ValueError when it is smaller).
  std::size_t size{};
  /// Python 3.13's track: whether the resource tracker unlinks the segment if the program ends
  /// without unlinking it. Only segments this program creates are ever registered; attaching
  /// never registers. With false, unlink() alone removes the segment.
  bool track{true};
};

/// A named POSIX shared-memory segment mapped into this process (Python:
/// multiprocessing.shared_memory.SharedMemory).
///
/// SharedMemory is a handle: copies share one mapping, and close() closes it for all of them.
/// The mapping lives until close() or the last copy is destroyed; the segment itself lives until
/// unlink(), called once by one process, or, for a tracked segment that nobody unlinked, until
/// the resource tracker removes it after the program has ended (see docs/shared-memory.md).
/// Passed as a Process argument it travels by name and size, under every start method, and the
/// child attaches to the same segment. Not thread-safe: close() while another thread reads buf()
/// is a use after unmap, as in C.
///
///     mproc::SharedMemory shm({.create = true, .size = 1 << 20});
///     auto p = mproc::Process(fill, shm);   // the child writes into shm.buf()
///     p.start(); p.join();
///     use(shm.buf());
///     shm.close(); shm.unlink();
class SharedMemory {
 public:
  /// An empty handle (a value received from another process is built from one).
  SharedMemory() noexcept = default;
  /// Creates or attaches. Throws FileExistsError (create, name taken), FileNotFoundError (attach,
  /// no such segment), ValueError (a bad name, size 0 with create, a segment smaller than size
  /// or empty), OSError for other failures of the system (permissions, memory, descriptors).
  explicit SharedMemory(SharedMemoryOptions options);

  /// The name without its leading '/', as Python reports it; pass it to SharedMemory({.name}).
  const std::string& name() const;
  /// The segment's size in bytes.
  std::size_t size() const;
  /// The mapped bytes. Throws ValueError once closed; spans taken before close() dangle after it.
  std::span<std::byte> buf() const;
  /// Unmaps the segment from this process (all copies of this handle); the segment stays. Idempotent.
  void close();
  bool closed() const noexcept;
  /// Removes the name (Python: unlink()); processes that have it mapped keep their mapping, the
  /// memory is freed once the last one closes. Call it once, from one process. Works after
  /// close(). Throws FileNotFoundError when the name is gone already.
  void unlink();
  /// Whether the resource tracker holds this segment's name (created here with track = true and
  /// not unlinked through this handle).
  bool tracked() const noexcept;

  // Passing to a child process (cereal): the name and size; the child attaches.
  void save(detail::OutArchive& ar) const;
  void load(detail::InArchive& ar);

 private:
  detail::SharedMemoryImpl& impl() const;
  std::shared_ptr<detail::SharedMemoryImpl> impl_;
  friend class SharedMemoryManager;
};

/// Python's bytes, as a ShareableList item.
using Bytes = std::vector<std::byte>;
/// One ShareableList item: None (nullptr), int, float, bool, str or bytes. Items compare by type
/// and value: unlike Python, 1, 1.0 and true are three different values.
using ShareableValue = std::variant<std::nullptr_t, std::int64_t, double, bool, std::string, Bytes>;

struct ShareableListOptions {
  /// Empty: a fresh name, as SharedMemory.
  std::string name{};
  bool track{true};
};

/// A fixed-length list of values in a shared-memory segment (Python: ShareableList).
///
/// Items are int64, double, bool, std::string, Bytes or nullptr, and any item may be set to a
/// value of another type later. Each item's storage is fixed at creation as in Python: 8 bytes,
/// or for a string or bytes item of length n, 8 * (n / 8 + 1) bytes; set() of a longer string
/// throws ValueError. The list is not synchronised (as in Python): guard writes that race with
/// other processes' reads or writes by a Lock. A handle, passed to a child by name.
///
///     mproc::ShareableList sl({std::int64_t{1}, 2.5, "text", nullptr, true});
///     sl.set(0, std::int64_t{42});
///     auto same = mproc::ShareableList::attach(sl.shm().name());
///     assert(std::get<std::int64_t>(same[0]) == 42);
class ShareableList {
 public:
  ShareableList() noexcept = default;
  /// Creates a segment holding sequence (Python: ShareableList(sequence, name=...)).
  explicit ShareableList(const std::vector<ShareableValue>& sequence, ShareableListOptions options = {});
  /// Attaches to the list in an existing segment (Python: ShareableList(name=...)). Throws
  /// FileNotFoundError, or ValueError when the segment does not hold a ShareableList.
  static ShareableList attach(const std::string& name);

  /// Python's sl[i]; negative i counts from the end. Throws IndexError out of range.
  ShareableValue operator[](std::ptrdiff_t i) const;
  ShareableValue get(std::ptrdiff_t i) const { return (*this)[i]; }
  /// Python's sl[i] = value. Throws IndexError, or ValueError when a string or bytes value is
  /// longer than the item's storage.
  void set(std::ptrdiff_t i, const ShareableValue& value);
  /// Python's len(sl).
  std::size_t size() const;
  /// Number of items equal to value.
  std::size_t count(const ShareableValue& value) const;
  /// Position of the first item equal to value; ValueError when there is none.
  std::size_t index(const ShareableValue& value) const;
  /// Python's list(sl).
  std::vector<ShareableValue> to_vector() const;
  /// The segment holding the list (Python: sl.shm), a handle sharing the list's mapping:
  /// sl.shm().unlink() removes it, sl.shm().close() unmaps the list.
  SharedMemory shm() const;

  // Passing to a child process (cereal): by name; the child attaches.
  void save(detail::OutArchive& ar) const;
  void load(detail::InArchive& ar);

 private:
  detail::ShareableListImpl& impl() const;
  std::shared_ptr<detail::ShareableListImpl> impl_;
};

/// Creates segments and unlinks them all at shutdown() (Python:
/// multiprocessing.managers.SharedMemoryManager, used as `with SharedMemoryManager() as smm`).
///
/// Unlike Python's, it is an owner inside this process, not a server process: the segments it
/// creates are ordinary SharedMemory handles, so they cost no round trip, and a program that
/// dies before shutdown() still loses nothing, because they are tracked by the resource tracker.
/// Only this process creates segments through it. The destructor calls shutdown().
///
///     mproc::SharedMemoryManager smm;
///     smm.start();
///     auto shm = smm.SharedMemory(4096);
///     auto sl = smm.ShareableList({std::int64_t{1}, 2.0});
///     ...
///     smm.shutdown();   // both are unlinked
class SharedMemoryManager {
 public:
  SharedMemoryManager();
  ~SharedMemoryManager();
  SharedMemoryManager(SharedMemoryManager&&) noexcept;
  SharedMemoryManager& operator=(SharedMemoryManager&&) noexcept;
  SharedMemoryManager(const SharedMemoryManager&) = delete;
  SharedMemoryManager& operator=(const SharedMemoryManager&) = delete;

  /// Must be called before creating segments. Throws ProcessError when started twice.
  void start();
  /// Unlinks every segment created through this manager that still exists (and is still the
  /// one it created); idempotent. Handles keep their mappings.
  void shutdown() noexcept;
  /// A new segment of size bytes with a fresh name (Python: smm.SharedMemory(size)).
  mproc::SharedMemory SharedMemory(std::size_t size);
  /// A new ShareableList (Python: smm.ShareableList(sequence)).
  mproc::ShareableList ShareableList(const std::vector<ShareableValue>& sequence);

 private:
  std::unique_ptr<detail::SharedMemoryManagerImpl> impl_;
};

}  // namespace mproc
