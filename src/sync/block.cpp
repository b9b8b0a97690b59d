#include "sync/block.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <limits>
#include <string>

#include "mproc/detail/fd_passing.hpp"
#include "mproc/errors.hpp"
#include "sync/robust_mutex.hpp"

namespace mproc::detail {

static_assert(sizeof(MutexState) <= kStateOffset - kMutexOffset, "the mutex must fit between header and state");

const char* kind_name(BlockKind kind) noexcept {
  switch (kind) {
    case BlockKind::lock: return "Lock";
    case BlockKind::rlock: return "RLock";
    case BlockKind::semaphore: return "Semaphore";
    case BlockKind::bounded_semaphore: return "BoundedSemaphore";
    case BlockKind::condition: return "Condition";
    case BlockKind::event: return "Event";
    case BlockKind::barrier: return "Barrier";
    case BlockKind::value: return "Value";
    case BlockKind::array: return "Array";
  }
  return "unknown";
}

void throw_bad_block(const std::string& why) {
  throw ProtocolError("malformed shared object handle: " + why);
}

namespace {

constexpr std::size_t kPage = 4096;

std::size_t align_up(std::size_t n, std::size_t a) noexcept { return (n + a - 1) / a * a; }

// Bytes needed by spec, or 0 on overflow.
std::size_t needed_bytes(const BlockSpec& spec) noexcept {
  bool data = spec.kind == BlockKind::value || spec.kind == BlockKind::array;
  std::size_t start = kStateOffset;
  std::size_t state = spec.state_size;
  if (data) {
    constexpr std::size_t kLimit = std::numeric_limits<std::size_t>::max() - 2 * kPage;
    if (spec.elem_size != 0 && spec.count > kLimit / spec.elem_size) return 0;
    state = static_cast<std::size_t>(spec.count) * spec.elem_size;
    start = data_offset_for(state, spec.elem_align);
  }
  if (state > std::numeric_limits<std::size_t>::max() - kPage - start) return 0;
  return start + state;
}

}  // namespace

std::size_t data_offset_for(std::size_t bytes, std::size_t elem_align) noexcept {
  std::size_t after_mutex = align_up(kMutexOffset + sizeof(MutexState), elem_align);
  if (elem_align <= 64 && bytes <= kStateOffset - kMutexOffset && after_mutex + bytes <= kStateOffset) return after_mutex;
  return align_up(kStateOffset, elem_align > 64 ? elem_align : 64);
}

std::size_t block_size_for(const BlockSpec& spec) {
  std::size_t n = needed_bytes(spec);
  if (n == 0) throw ValueError(std::string("a ") + kind_name(spec.kind) + " of " + std::to_string(spec.count) +
                               " elements does not fit in memory");
  return align_up(n, kPage);
}

std::shared_ptr<Block> create_block(const BlockSpec& spec) {
  std::size_t size = block_size_for(spec);
  auto b = std::make_shared<Block>();
  std::string name = std::string("mproc-") + kind_name(spec.kind);
  b->fd = os::memfd_of_size(name.c_str(), size);
  b->map = os::Mapping(b->fd.get(), size);
  auto& h = b->header();
  h.magic = kBlockMagic;
  h.version = kBlockVersion;
  h.kind = static_cast<std::uint32_t>(spec.kind);
  h.size = size;
  h.flags = spec.mutex ? kHasMutex : 0;
  h.elem_size = spec.elem_size;
  h.count = spec.count;
  h.type = spec.type;
  h.data_offset = spec.kind == BlockKind::value || spec.kind == BlockKind::array
                      ? data_offset_for(static_cast<std::size_t>(spec.count) * spec.elem_size, spec.elem_align)
                      : 0;
  if (spec.mutex) mutex_init(*b->at<MutexState>(kMutexOffset));
  return b;
}

void save_block(OutArchive& ar, const Block& block) {
  int slot = export_fd(block.fd.get());
  ar(static_cast<std::int32_t>(slot), block.header().kind);
}

std::shared_ptr<Block> load_block(InArchive& ar, std::initializer_list<BlockKind> accepted) {
  std::int32_t slot = -1;
  std::uint32_t declared = 0;
  ar(slot, declared);
  auto b = std::make_shared<Block>();
  b->fd.reset(import_fd(slot));

  auto expected = [&] {
    std::string s;
    for (BlockKind k : accepted) s += (s.empty() ? "" : " or ") + std::string(kind_name(k));
    return s;
  };
  bool ok = false;
  for (BlockKind k : accepted) ok = ok || static_cast<std::uint32_t>(k) == declared;
  if (!ok) throw_bad_block("a handle of kind " + std::to_string(declared) + " where a " + expected() + " was expected");

  struct stat st {};
  if (::fstat(b->fd.get(), &st) != 0) throw_bad_block("the passed descriptor cannot be examined");
  if (!S_ISREG(st.st_mode)) throw_bad_block("the passed descriptor is not a shared-memory object");
  auto size = static_cast<std::size_t>(st.st_size);
  if (size < kPage || size % kPage != 0)
    throw_bad_block("the passed shared-memory object has " + std::to_string(size) + " bytes, not a whole number of pages");
  b->map = os::Mapping(b->fd.get(), size);
  const auto& h = b->header();
  if (h.magic != kBlockMagic) throw_bad_block("the passed shared-memory object does not hold an mproc object (bad magic)");
  if (h.version != kBlockVersion) throw_bad_block("object layout version " + std::to_string(h.version) + " is not " + std::to_string(kBlockVersion));
  if (h.kind != declared) throw_bad_block("the shared-memory object holds another kind of object than its handle says");
  if (h.size != size) throw_bad_block("the header's size does not match the shared-memory object");
  if ((h.flags & ~kHasMutex) != 0) throw_bad_block("unknown flags in the header");
  return b;
}

}  // namespace mproc::detail
