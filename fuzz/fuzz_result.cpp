// The result decoder the parent runs on what a pool worker answers: an apply result, a map
// chunk's count and items (plain items in one block, others one by one). The input's first byte
// picks the job and the number of items the chunk was sent with; the rest is the worker's answer.
// Only mproc errors may come out (the chunk then fails with them).
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "common.hpp"
#include "mproc/detail/pool_core.hpp"
#include "mproc/detail/pool_impl.hpp"
#include "mproc/errors.hpp"

namespace {

using namespace mproc::detail;
using Nested = std::map<std::string, std::vector<std::int64_t>>;

void apply_result(const std::byte* data, std::size_t n) {
  ApplyJob<Nested> job(std::make_shared<ResultState<Nested>>());
  job.chunk_done(0, data, n);
}

void void_result(const std::byte* data, std::size_t n) {
  ApplyJob<void> job(std::make_shared<ResultState<void>>());
  job.chunk_done(0, data, n);
}

// A map of `items` items in two chunks (the second from item 1): the answer is for one of them.
template <class R>
void map_result(std::size_t items, std::size_t chunk, const std::byte* data, std::size_t n) {
  MapJob<R> job(std::make_shared<ResultState<std::vector<R>>>(), items, {0, 1}, mproc::Progress());
  job.chunk_done(chunk, data, n);
}

template <class R>
std::string map_answer(std::vector<R> items) {
  std::string out;
  OutArchive ar(out);
  save_items(ar, items, 0, items.size());
  return out;
}

std::vector<std::string> seeds() {
  std::vector<std::string> out;
  std::string nested;
  encode(nested, Nested{{"a", {1, 2}}, {"b", {}}});
  out.push_back(std::string(1, '\0') + nested);
  out.push_back(std::string(1, '\1'));  // void
  out.push_back(std::string(1, '\2') + map_answer<std::int32_t>({7}));
  out.push_back(std::string(1, static_cast<char>(2 | (2 << 4) | 8)) + map_answer<std::int32_t>({1, 2, 3}));
  out.push_back(std::string(1, '\3') + map_answer<std::string>({"x"}));
  out.push_back(std::string(1, static_cast<char>(3 | (1 << 4) | 8)) + map_answer<std::string>({"yy", ""}));
  return out;
}

}  // namespace

MPROC_FUZZ_SEEDS(seeds)

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* in, std::size_t size) {
  if (size == 0) return 0;
  // Bits 0-2: the job; bit 3: the second chunk; bits 4-7: the map's item count - 1 (so the
  // second chunk holds that many items).
  const unsigned job = in[0] & 7, chunk = (in[0] >> 3) & 1, items = (in[0] >> 4) + 2u;
  auto data = reinterpret_cast<const std::byte*>(in + 1);
  std::size_t n = size - 1;
  try {
    switch (job) {
      case 0: apply_result(data, n); break;
      case 1: void_result(data, n); break;
      case 2: map_result<std::int32_t>(items, chunk, data, n); break;
      case 3: map_result<std::string>(items, chunk, data, n); break;
      default: return -1;
    }
  } catch (const mproc::Error&) {
    // the chunk fails with this error: what a caller of get() sees
  }
  return 0;
}
