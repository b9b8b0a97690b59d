// Templates behind mproc/pool.hpp. Not API.
#pragma once

#include <deque>
#include <map>

#include "mproc/pool.hpp"

namespace mproc {
namespace detail {

template <class R>
class ApplyJob : public JobBase {
 public:
  explicit ApplyJob(std::shared_ptr<ResultState<R>> s) : s_(std::move(s)) {}
  void chunk_done(std::size_t, const std::byte* data, std::size_t n) override {
    if constexpr (std::is_void_v<R>) {
      if (n != 0) throw_trailing_bytes(n, "a void result");
      s_->finish(std::monostate{}, nullptr);
    } else {
      s_->finish(decode<R>(data, n), nullptr);
    }
  }
  void chunk_failed(std::size_t, std::exception_ptr e) override { s_->finish(std::nullopt, e); }

 private:
  std::shared_ptr<ResultState<R>> s_;
};

template <class R>
class MapJob : public JobBase {
 public:
  MapJob(std::shared_ptr<ResultState<std::vector<R>>> s, std::size_t n, std::vector<std::size_t> firsts, Progress progress)
      : s_(std::move(s)), out_(n), firsts_(std::move(firsts)), remaining_(firsts_.size()), progress_(std::move(progress)) {}
  void chunk_done(std::size_t index, const std::byte* data, std::size_t n) override {
    std::size_t first = firsts_[index];
    std::size_t count = (index + 1 < firsts_.size() ? firsts_[index + 1] : out_.size()) - first;
    InArchive ar(data, n);
    load_count(ar, count);
    load_items(ar, out_, first, count);
    if (ar.left() != 0) throw_trailing_bytes(ar.left(), "a map chunk's results");
    done_ += count;
    progress_(done_, out_.size());
    if (--remaining_ == 0) s_->finish(std::move(out_), nullptr);
  }
  void chunk_failed(std::size_t, std::exception_ptr e) override { s_->finish(std::nullopt, e); }

 private:
  std::shared_ptr<ResultState<std::vector<R>>> s_;
  std::vector<R> out_;
  std::vector<std::size_t> firsts_;
  std::size_t remaining_;
  Progress progress_;
  std::size_t done_ = 0;
};

/// imap's state: results per chunk, the lazily read input, and a window of chunks in flight.
template <class R>
class IMapState : public JobBase, public std::enable_shared_from_this<IMapState<R>> {
 public:
  /// Writes the next chunk of at most `chunksize` items; returns its item count (0 at the end).
  using Feeder = std::function<std::size_t(OutArchive&)>;

  IMapState(std::weak_ptr<PoolCore> core, bool unordered, std::size_t window, Feeder feed, Progress progress)
      : core_(std::move(core)), unordered_(unordered), window_(window), feed_(std::move(feed)), progress_(std::move(progress)) {}

  void start() { refill(); }

  void chunk_done(std::size_t index, const std::byte* data, std::size_t n) override {
    InArchive ar(data, n);
    auto count = load_count(ar, counts_at(index));
    std::vector<R> items(count);
    load_items(ar, items, 0, count);
    if (ar.left() != 0) throw_trailing_bytes(ar.left(), "an imap chunk's results");
    if (progress_) {
      std::size_t done, total;
      {
        std::lock_guard lock(mu_);
        done = done_items_ += count;
        total = exhausted_ ? first_item_ : 0;  // unknown until the input has been read to its end
      }
      progress_(done, total);
    }
    deliver(index, Entry{std::move(items), nullptr});
  }
  void chunk_failed(std::size_t index, std::exception_ptr e) override { deliver(index, Entry{{}, e}); }

  std::optional<R> next(std::optional<seconds> timeout) {
    detail::check_timeout(timeout, "imap next");  // also when a result is already here
    std::unique_lock lock(mu_);
    for (;;) {
      if (!current_.empty()) {
        R r = std::move(current_.front());
        current_.pop_front();
        return r;
      }
      auto it = unordered_ ? ready_.begin() : ready_.find(next_index_);
      if (it != ready_.end()) {
        Entry e = std::move(it->second);
        ready_.erase(it);
        ++next_index_;
        --in_window_;
        lock.unlock();
        refill();  // a slot is free: read more input
        lock.lock();
        if (e.error) std::rethrow_exception(e.error);
        current_.assign(std::make_move_iterator(e.items.begin()), std::make_move_iterator(e.items.end()));
        continue;
      }
      if (exhausted_ && in_window_ == 0) return std::nullopt;
      auto ready = [&] {
        bool have = unordered_ ? !ready_.empty() : ready_.count(next_index_) > 0;
        return have || (exhausted_ && in_window_ == 0);
      };
      if (!detail::wait_for(cv_, lock, timeout, ready, "imap next")) throw TimeoutError("no imap result within the timeout");
    }
  }

 private:
  struct Entry {
    std::vector<R> items;
    std::exception_ptr error;
  };

  std::optional<std::uint64_t> counts_at(std::size_t index) {
    std::lock_guard lock(mu_);
    return counts_.at(index);
  }

  void deliver(std::size_t index, Entry e) {
    {
      std::lock_guard lock(mu_);
      ready_.emplace(index, std::move(e));
    }
    cv_.notify_all();
  }

  // Reads input until the window is full or the input ends; runs on the consumer's thread.
  void refill() {
    std::lock_guard feeding(feed_mu_);
    for (;;) {
      std::size_t index;
      {
        std::lock_guard lock(mu_);
        if (exhausted_ || in_window_ >= window_) return;
        index = submitted_;
      }
      std::size_t count = 0;
      Chunk c = make_chunk(this->shared_from_this(), index, first_item_, 0, [&](OutArchive& ar) { count = feed_(ar); });
      auto core = core_.lock();
      std::lock_guard lock(mu_);
      if (count == 0 || !core) {
        exhausted_ = true;
        cv_.notify_all();
        return;
      }
      c.item_count = count;
      counts_.push_back(count);
      first_item_ += count;
      ++submitted_;
      ++in_window_;
      core->submit({std::move(c)});
    }
  }

  std::weak_ptr<PoolCore> core_;
  bool unordered_;
  std::size_t window_;
  Feeder feed_;
  std::mutex feed_mu_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::size_t, Entry> ready_;
  std::deque<R> current_;
  std::vector<std::size_t> counts_;
  std::size_t next_index_ = 0, submitted_ = 0, in_window_ = 0, first_item_ = 0, done_items_ = 0;
  bool exhausted_ = false;
  Progress progress_;
};

}  // namespace detail

template <class R, class F, class... Args>
AsyncResult<R> Pool::apply_async(Callbacks<R> callbacks, F&& f, Args&&... args) {
  using Fn = std::decay_t<F>;
  detail::check_call<Fn, std::decay_t<Args>...>();
  auto state = std::make_shared<detail::ResultState<R>>();
  state->callback = std::move(callbacks.callback);
  state->error_callback = std::move(callbacks.error_callback);
  auto job = std::make_shared<detail::ApplyJob<R>>(state);
  state->core = core_;
  state->job = job.get();
  std::vector<detail::Chunk> chunks;
  chunks.push_back(detail::make_call_chunk<Fn, std::decay_t<Args>...>(*core_, job, f, args...));
  core_->submit(std::move(chunks));
  return AsyncResult<R>(state);
}

template <bool Star, class R, class F, class In>
AsyncResult<std::vector<R>> Pool::map_impl(F&& f, In&& items, std::optional<std::size_t> chunksize,
                                           Callbacks<std::vector<R>> callbacks) {
  using Fn = std::decay_t<F>;
  using T = std::ranges::range_value_t<In>;
  static_assert(!std::is_void_v<R>, "mproc: map needs a function that returns a value");
  detail::check_target<Fn>();
  detail::check_serializable<T>();
  detail::check_serializable<R>();
  Fn fn(std::forward<F>(f));
  // Every chunk is written before this returns, so a random-access input is read in place; any
  // other is copied first.
  auto encode_and_submit = [&](auto& input) {
    auto state = std::make_shared<detail::ResultState<std::vector<R>>>();
    state->callback = std::move(callbacks.callback);
    state->error_callback = std::move(callbacks.error_callback);
    auto n = static_cast<std::size_t>(std::ranges::size(input));
    if (n == 0) {
      state->finish(std::vector<R>{}, nullptr);
      return AsyncResult<std::vector<R>>(state);
    }
    std::size_t size = chunksize.value_or(default_chunksize(n));
    if (size == 0) throw std::invalid_argument("mproc: chunksize must be at least 1");
    std::vector<std::size_t> firsts;
    for (std::size_t first = 0; first < n; first += size) firsts.push_back(first);
    auto job = std::make_shared<detail::MapJob<R>>(state, n, firsts, progress_);
    const auto invoker = detail::code_ref(reinterpret_cast<const void*>(&detail::map_chunk_thunk<Fn, T, Star>),
                                          detail::type_fingerprint<detail::Invoker>());
    // Chunks go to the pool a batch at a time, so that the workers start on the first ones while
    // the rest are written. If writing one fails, the job's chunks not yet started are withdrawn.
    // A batch ends at 256 chunks or 4 MiB; before the next, the writer waits while the pool holds
    // more than its budget of chunks not yet sent (PoolCore::wait_for_room).
    constexpr std::size_t kSubmitBatch = 256, kSubmitBytes = 4u << 20;
    std::size_t last_bytes = 0;  // the chunk before's size: a guess at this one's (strings, vectors)
    std::size_t batch_bytes = 0;
    std::vector<detail::Chunk> chunks;
    chunks.reserve(std::min(firsts.size(), kSubmitBatch));
    try {
      for (std::size_t i = 0; i < firsts.size(); ++i) {
        std::size_t count = std::min(size, n - firsts[i]);
        auto save = [&](detail::OutArchive& ar) {
          ar(invoker);
          detail::save_target(ar, fn);
          detail::save_range_items(ar, input, firsts[i], count);
        };
        // Worth a buffer kept from earlier chunks (a fresh one faults every page in)?
        const bool large = std::max(count * sizeof(T), last_bytes) >= 16 * 1024;
        chunks.push_back(detail::make_chunk(job, i, firsts[i], count, save, large ? core_->take_buffer() : std::string()));
        last_bytes = chunks.back().bytes.size();
        batch_bytes += last_bytes;
        const bool last = i + 1 == firsts.size();
        if (last || chunks.size() == kSubmitBatch || batch_bytes >= kSubmitBytes) {
          core_->submit(std::exchange(chunks, {}));
          if (!last) {
            chunks.reserve(kSubmitBatch);
            batch_bytes = 0;
            core_->wait_for_room();
          }
        }
      }
    } catch (...) {
      core_->cancel(job.get());
      throw;
    }
    return AsyncResult<std::vector<R>>(state);
  };
  if constexpr (std::ranges::random_access_range<In> && std::ranges::sized_range<In>) {
    return encode_and_submit(items);
  } else {
    std::vector<T> input;
    if constexpr (std::ranges::sized_range<In>) input.reserve(std::ranges::size(items));
    for (auto&& x : items) input.push_back(x);
    return encode_and_submit(input);
  }
}

template <bool Unordered, class F, class In>
auto Pool::imap_impl(F&& f, In&& items, std::size_t chunksize, std::optional<std::size_t> buffersize) {
  using Fn = std::decay_t<F>;
  using T = std::ranges::range_value_t<In>;
  using R = detail::map_result_t<false, F, In>;
  detail::check_target<Fn>();
  detail::check_serializable<T>();
  detail::check_serializable<R>();
  if (chunksize == 0) throw std::invalid_argument("mproc: chunksize must be at least 1");
  // The input is kept (moved or copied) with the iterator and read as results are consumed.
  struct Source {
    std::decay_t<In> range;
    std::ranges::iterator_t<std::decay_t<In>> it;
    bool started = false;
  };
  auto src = std::make_shared<Source>(Source{std::forward<In>(items), {}, false});
  const auto invoker = detail::code_ref(reinterpret_cast<const void*>(&detail::map_chunk_thunk<Fn, T, false>),
                                        detail::type_fingerprint<detail::Invoker>());
  Fn fn(std::forward<F>(f));
  auto feed = [src, fn, invoker, chunksize](detail::OutArchive& ar) -> std::size_t {
    if (!src->started) {
      src->it = std::ranges::begin(src->range);
      src->started = true;
    }
    std::vector<T> batch;
    while (batch.size() < chunksize && src->it != std::ranges::end(src->range)) {
      batch.push_back(*src->it);
      ++src->it;
    }
    if (batch.empty()) return 0;
    ar(invoker);
    detail::save_target(ar, fn);
    detail::save_items(ar, batch, 0, batch.size());
    return batch.size();
  };
  std::size_t window = buffersize.value_or(static_cast<std::size_t>(4 * processes()));
  auto state = std::make_shared<detail::IMapState<R>>(core_, Unordered, window == 0 ? 1 : window, std::move(feed), progress_);
  state->start();
  return IMapIterator<R>(state);
}

}  // namespace mproc
