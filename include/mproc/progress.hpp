// mproc/progress.hpp — how far a long map has come (Python users reach for tqdm; this is built in).
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <string>

namespace mproc {

/// Reports completed/total input items of a Pool's map, starmap, imap and imap_unordered (total
/// is 0 while an imap's input is not exhausted). Reports come from the pool's handler thread,
/// at most once per finished chunk, the last one when everything is done.
///
///     mproc::Pool pool({.progress = mproc::Progress::bar()});            // a bar on a terminal
///     mproc::Pool pool({.progress = mproc::Progress([](auto done, auto total) { ... })});
class Progress {
 public:
  using Callback = std::function<void(std::size_t done, std::size_t total)>;

  /// No reports.
  Progress() = default;
  /// Every report goes to callback.
  explicit Progress(Callback callback);
  /// A bar on stderr when stderr is a terminal; otherwise reports go to otherwise (none if empty).
  static Progress bar(Callback otherwise = {});

  explicit operator bool() const noexcept { return static_cast<bool>(report_); }
  void operator()(std::size_t done, std::size_t total) const {
    if (report_) report_(done, total);
  }

 private:
  Callback report_;
};

}  // namespace mproc
