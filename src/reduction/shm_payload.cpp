#include "reduction/shm_payload.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cerrno>
#include <cstring>
#include <string>

#include "mproc/errors.hpp"

namespace mproc::detail {
namespace {

// A sender keeps its most recent slabs: at least two (a task and the next one), up to
// kSlabsKept while the pages they hold stay under kSlabBytesKept.
constexpr std::size_t kSlabsKept = 8;
constexpr std::size_t kSlabBytesKept = std::size_t{256} << 20;
// A receiving end keeps its most recent mapping, and up to kMappingsKept while they span
// kMappedBytesKept.
constexpr std::size_t kMappingsKept = 4;
constexpr std::uint64_t kMappedBytesKept = std::uint64_t{512} << 20;
// Capacity is a power of two (a slab is reused for any payload up to it; pages past what was
// written are never allocated), at least this much.
constexpr std::size_t kMinSlab = std::size_t{64} << 10;

const char* kind_of(mode_t mode) {
  if (S_ISSOCK(mode)) return "a socket";
  if (S_ISFIFO(mode)) return "a pipe";
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISLNK(mode)) return "a symbolic link";
  return "not a regular file";
}

std::string missing_seals(int have) {
  std::string out;
  auto add = [&](int seal, const char* name) {
    if (!(have & seal)) out += (out.empty() ? "" : ", ") + std::string(name);
  };
  add(F_SEAL_SHRINK, "F_SEAL_SHRINK");
  add(F_SEAL_GROW, "F_SEAL_GROW");
  return out;
}

// Orders v most recently used first and drops what is past the budget: the first `floor` stay,
// then more while there are at most `most` and their bytes stay within `budget`.
template <class T, class Use, class Bytes>
void keep_recent(std::vector<T>& v, std::size_t floor, std::size_t most, std::uint64_t budget, Use last_use, Bytes bytes) {
  std::sort(v.begin(), v.end(), [&](const T& a, const T& b) { return last_use(a) > last_use(b); });
  std::size_t keep = 0;
  std::uint64_t total = 0;
  for (const T& e : v) {
    total += bytes(e);
    if (keep >= floor && (keep >= most || total > budget)) break;
    ++keep;
  }
  v.erase(v.begin() + static_cast<std::ptrdiff_t>(keep), v.end());
}

std::atomic_ref<std::uint32_t> state_at(std::byte* head) {
  return std::atomic_ref<std::uint32_t>(*reinterpret_cast<std::uint32_t*>(head));
}

}  // namespace

int required_payload_seals() { return F_SEAL_SHRINK | F_SEAL_GROW; }

SlabId check_payload_memfd(int fd, std::uint64_t length) {
  const std::string what = "the descriptor that came with a shared-memory frame ";
  struct stat st {};
  if (::fstat(fd, &st) != 0) throw ProtocolError(what + "cannot be examined: " + std::strerror(errno));
  if (!S_ISREG(st.st_mode)) throw ProtocolError(what + "is not a memfd: it is " + kind_of(st.st_mode));
  // Only memfds (and other tmpfs/hugetlbfs files, which are born with F_SEAL_SEAL and so can
  // never carry the seals checked below) answer F_GET_SEALS.
  int seals = ::fcntl(fd, F_GET_SEALS);
  if (seals < 0) throw ProtocolError(what + "is a regular file, not a memfd (it has no seals)");
  if ((seals & required_payload_seals()) != required_payload_seals())
    throw ProtocolError(what + "can still be resized by its sender: it lacks " + missing_seals(seals));
  if (seals & (F_SEAL_WRITE | F_SEAL_FUTURE_WRITE))
    throw ProtocolError(what + "is sealed against writing: its receiver could not hand it back (F_SEAL_WRITE)");
  if (static_cast<std::uint64_t>(st.st_size) < kSlabHead || static_cast<std::uint64_t>(st.st_size) - kSlabHead < length)
    throw ProtocolError(what + "holds " + std::to_string(st.st_size) + " bytes, too few for a head of " +
                        std::to_string(kSlabHead) + " and the " + std::to_string(length) + " the frame announces");
  return {st.st_dev, st.st_ino, static_cast<std::uint64_t>(st.st_size)};
}

void release_slab(int fd) noexcept {
  std::uint32_t v = kSlabFree;
  (void)os::retry([&] { return ::pwrite(fd, &v, sizeof v, 0); });
}

void release_slab(std::byte* head) noexcept { state_at(head).store(kSlabFree, std::memory_order_release); }

std::unique_ptr<Slab> Slab::make(std::size_t n, const void* payload) {
  auto s = std::make_unique<Slab>();
  s->capacity = std::bit_ceil(std::max(n, kMinSlab));
  s->fd = os::memfd_of_size("mproc-message", kSlabHead + s->capacity);
  if (payload) os::pwrite_full(s->fd.get(), payload, n, kSlabHead, "write to memfd");
  if (::fcntl(s->fd.get(), F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0) os::throw_errno("sealing memfd");
  s->map = os::Mapping(s->fd.get(), kSlabHead + s->capacity);
  s->mark_busy();
  return s;
}

std::uint32_t& Slab::state() const { return *static_cast<std::uint32_t*>(map.data()); }

bool Slab::released() const { return std::atomic_ref<std::uint32_t>(state()).load(std::memory_order_acquire) == kSlabFree; }

void Slab::mark_busy() { std::atomic_ref<std::uint32_t>(state()).store(kSlabBusy, std::memory_order_relaxed); }

SlabCache::Slab& SlabCache::fill(const void* payload, std::size_t n) {
  if (pid_t me = ::getpid(); owner_ != me) {
    slabs_.clear();  // inherited through fork: the parent's, which it may be writing
    owner_ = me;
  }
  Slab* best = nullptr;
  for (auto& s : slabs_) {
    if (s->capacity < n || (best && s->capacity >= best->capacity)) continue;
    if (s->released()) best = s.get();
  }
  if (best) {
    best->mark_busy();
    std::memcpy(best->payload(), payload, n);
  } else {
    slabs_.push_back(Slab::make(n, payload));
    best = slabs_.back().get();
  }
  best->touched = std::max(best->touched, n);
  best->last_use = ++clock_;
  trim();
  return *best;
}

void SlabCache::unsent(Slab& s) { std::atomic_ref<std::uint32_t>(s.state()).store(kSlabFree, std::memory_order_relaxed); }

std::shared_ptr<Slab> SlabPool::take(std::size_t n) {
  // use_count() is 1 once the last chunk holding it is gone (on the pool's thread: a stale
  // count only says "held" a little longer). Not the state word: a worker that died holding the
  // slab never releases it, and would take it out of use for good.
  auto unheld = [](const std::shared_ptr<Slab>& s) { return s.use_count() == 1; };
  std::shared_ptr<Slab>* best = nullptr;
  for (auto& s : slabs_)
    if (s->capacity >= n && unheld(s) && (!best || s->capacity < (*best)->capacity)) best = &s;
  if (best) {
    // The last holder's release (its decrement) happens before what the caller writes now.
    std::atomic_thread_fence(std::memory_order_acquire);
    (*best)->mark_busy();
    (*best)->touched = std::max((*best)->touched, n);
    return *best;
  }
  if (slabs_.size() >= most_) {  // all held, or too small: a free small one makes room
    auto small = std::find_if(slabs_.begin(), slabs_.end(), unheld);
    if (small == slabs_.end()) return nullptr;
    slabs_.erase(small);
  }
  slabs_.push_back(Slab::make(n));
  slabs_.back()->touched = n;
  return slabs_.back();
}

void SlabCache::trim() {
  // A dropped slab a receiver still reads lives on in its descriptor.
  keep_recent(
      slabs_, 2, kSlabsKept, kSlabBytesKept, [](const auto& s) { return s->last_use; }, [](const auto& s) { return s->touched; });
}

std::shared_ptr<os::Mapping> SlabMappings::map(int fd, const SlabId& id) {
  ++clock_;
  for (auto& e : entries_)
    if (e.id.dev == id.dev && e.id.ino == id.ino) {  // the mapping keeps its file, so the inode is not reused
      e.last_use = clock_;
      return e.map;
    }
  auto m = std::make_shared<os::Mapping>(fd, static_cast<std::size_t>(id.size));
  entries_.push_back({id, m, clock_});
  keep_recent(
      entries_, 1, kMappingsKept, kMappedBytesKept, [](const Entry& e) { return e.last_use; }, [](const Entry& e) { return e.id.size; });
  return m;
}

}  // namespace mproc::detail
