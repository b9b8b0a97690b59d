// The shared state of one synchronisation primitive or shared ctype: a memfd mapped MAP_SHARED,
// starting with a header that says what it holds. A handle (Lock, Value<T>, ...) owns a
// shared_ptr<Block>; a child receives the memfd as a passed descriptor (never an address) and
// maps it again, after checking the header, so a wrong or garbage descriptor is a ProtocolError.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "mproc/detail/serialize.hpp"
#include "os/fd.hpp"
#include "os/mapping.hpp"

namespace mproc::detail {

enum class BlockKind : std::uint32_t {
  lock = 1,
  rlock = 2,
  semaphore = 3,
  bounded_semaphore = 4,
  condition = 5,
  event = 6,
  barrier = 7,
  value = 8,
  array = 9,
};

const char* kind_name(BlockKind kind) noexcept;

struct BlockHeader {
  std::uint64_t magic;
  std::uint32_t version;
  std::uint32_t kind;        // BlockKind
  std::uint64_t size;        // bytes of the whole block (the memfd's size)
  std::uint32_t flags;       // kHasMutex
  std::uint32_t elem_size;   // Value / Array element
  std::uint64_t count;       // Array length, Barrier parties
  std::uint64_t type;        // Value / Array: fingerprint of the element type
  std::uint64_t data_offset; // Value / Array: where the elements start
};

inline constexpr std::uint64_t kBlockMagic = 0x6b636f6c62637270ull;  // "prcblock"
inline constexpr std::uint32_t kBlockVersion = 1;
inline constexpr std::uint32_t kHasMutex = 1;

// Layout: header, then (when kHasMutex) the MutexState at a fixed offset, so that a Lock or an
// RLock handle is just "the mutex of this block", whichever object the block belongs to.
inline constexpr std::size_t kMutexOffset = 64;
inline constexpr std::size_t kStateOffset = 128;  // the kind's own state
static_assert(sizeof(BlockHeader) <= kMutexOffset);

struct Block {
  os::Fd fd;
  os::Mapping map;

  BlockHeader& header() const noexcept { return *static_cast<BlockHeader*>(map.data()); }
  BlockKind kind() const noexcept { return static_cast<BlockKind>(header().kind); }
  bool has_mutex() const noexcept { return (header().flags & kHasMutex) != 0; }
  template <class T>
  T* at(std::size_t offset) const noexcept {
    return reinterpret_cast<T*>(static_cast<char*>(map.data()) + offset);
  }
};

struct BlockSpec {
  BlockKind kind;
  std::size_t state_size = 0;  // bytes at kStateOffset (or at data_offset for Value / Array)
  bool mutex = false;
  std::uint32_t elem_size = 0;
  std::size_t elem_align = 1;
  std::uint64_t count = 0;
  std::uint64_t type = 0;
};

/// A new zero-filled block with its header written and its mutex (if any) initialised.
std::shared_ptr<Block> create_block(const BlockSpec& spec);

/// Where the elements of a Value / Array block start: right after the mutex when they fit in
/// the rest of its cache line (a small Value under its lock then costs one line, not two),
/// else on a line of their own.
std::size_t data_offset_for(std::size_t bytes, std::size_t elem_align) noexcept;
/// The size of the block for spec, rounded to whole pages; throws ValueError when it overflows.
std::size_t block_size_for(const BlockSpec& spec);

/// Writes the handle of block: the slot of its passed memfd and the kind.
void save_block(OutArchive& ar, const Block& block);
/// Reads a handle written by save_block, takes its descriptor and maps it. Throws ProtocolError
/// when the descriptor does not hold a block (wrong size, magic or version), or holds another
/// kind than one of the accepted ones. Kind-specific checks are the caller's.
std::shared_ptr<Block> load_block(InArchive& ar, std::initializer_list<BlockKind> accepted);

[[noreturn]] void throw_bad_block(const std::string& why);

}  // namespace mproc::detail
