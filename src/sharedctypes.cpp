// Value / Array / RawValue / RawArray: the untyped block behind the templates.
#include "mproc/sharedctypes.hpp"

#include <limits>
#include <string>

#include "sync/block.hpp"

namespace mproc::detail {
namespace {

BlockSpec data_spec(bool array, std::size_t count, std::size_t elem_size, std::size_t elem_align, std::uint64_t type,
                    bool lock) {
  if (elem_size > std::numeric_limits<std::uint32_t>::max())
    throw ValueError("a Value / Array element of " + std::to_string(elem_size) + " bytes is too large");
  return {.kind = array ? BlockKind::array : BlockKind::value,
          .mutex = lock,
          .elem_size = static_cast<std::uint32_t>(elem_size),
          .elem_align = elem_align,
          .count = count,
          .type = type};
}

}  // namespace

SharedData::SharedData(bool array, std::size_t count, std::size_t elem_size, std::size_t elem_align, std::uint64_t type,
                       bool lock)
    : block_(create_block(data_spec(array, count, elem_size, elem_align, type, lock))),
      data_(block_->at<void>(block_->header().data_offset)),
      count_(count) {
  if (lock) lock_ = RLock(block_);
}

const RLock& SharedData::get_lock() const {
  if (!lock_)
    throw Error(std::string("this ") + kind_name(block_->kind()) + " has no lock: it was made with .lock = false");
  return *lock_;
}

void SharedData::save_data(OutArchive& ar) const { save_block(ar, *block_); }

void SharedData::load_data(InArchive& ar, bool array, std::size_t elem_size, std::size_t elem_align, std::uint64_t type) {
  auto b = load_block(ar, {array ? BlockKind::array : BlockKind::value});
  const auto& h = b->header();
  const char* what = kind_name(b->kind());
  if (h.elem_size != elem_size || h.type != type)
    throw_bad_block(std::string("the ") + what + " holds elements of another type");
  if (!array && h.count != 1) throw_bad_block("a Value of " + std::to_string(h.count) + " elements");
  if (h.count > std::numeric_limits<std::size_t>::max() / (elem_size ? elem_size : 1))
    throw_bad_block(std::string("the ") + what + "'s element count does not fit in memory");
  if (h.data_offset != data_offset_for(static_cast<std::size_t>(h.count) * elem_size, elem_align))
    throw_bad_block(std::string("the ") + what + "'s data is misplaced");
  std::size_t needed = 0;
  try {
    needed = block_size_for(data_spec(array, static_cast<std::size_t>(h.count), elem_size, elem_align, type, false));
  } catch (const ValueError&) {
    throw_bad_block(std::string("the ") + what + "'s element count does not fit in memory");
  }
  if (h.size < needed) throw_bad_block(std::string("the ") + what + " is smaller than its elements");
  block_ = std::move(b);
  data_ = block_->at<void>(block_->header().data_offset);
  count_ = static_cast<std::size_t>(block_->header().count);
  if (block_->has_mutex())
    lock_ = RLock(block_);
  else
    lock_.reset();
}

}  // namespace mproc::detail
