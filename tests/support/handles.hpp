// A shared-memory handle as it crosses to a child: its bytes and its descriptors, for tests that
// forge or corrupt what a child would receive.
#pragma once

#include <fcntl.h>
#include <unistd.h>

#include <mproc/detail/fd_passing.hpp>
#include <mproc/detail/serialize.hpp>
#include <string>
#include <utility>
#include <vector>

namespace mproc_test {

// Encodes v the way a Process argument is encoded, with its descriptors (borrowed).
template <class T>
std::pair<std::string, std::vector<int>> encode_handle(const T& v) {
  std::string bytes;
  std::vector<int> fds;
  mproc::detail::FdExportScope scope(fds);
  mproc::detail::OutArchive ar(bytes);
  ar(v);
  return {bytes, fds};
}

// Decodes a T from bytes with copies of fds inside outcome (which runs its argument and names
// what it threw); descriptors the T did not take are closed.
template <class T, class Outcome>
std::string decode_handle_with(const std::string& bytes, const std::vector<int>& fds, Outcome outcome) {
  std::vector<int> in;
  for (int fd : fds) in.push_back(::fcntl(fd, F_DUPFD_CLOEXEC, 0));
  std::string result = outcome([&] {
    mproc::detail::FdImportScope scope(in);
    mproc::detail::InArchive ar(bytes.data(), bytes.size());
    T v;
    ar(v);
  });
  for (int fd : in)
    if (fd >= 0) ::close(fd);
  return result;
}

}  // namespace mproc_test
