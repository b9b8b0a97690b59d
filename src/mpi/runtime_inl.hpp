#pragma once

#include <cstdint>
#include <cstring>

#include "mproc/errors.hpp"

namespace mproc::detail::mpi {

template <class F>
void for_each_frame(const std::string& packed, F&& f) {
  std::size_t at = 0;
  while (at < packed.size()) {
    std::uint64_t n;
    if (packed.size() - at < sizeof n) throw ProtocolError("a packed MPI message ends inside a frame's length");
    std::memcpy(&n, packed.data() + at, sizeof n);
    at += sizeof n;
    if (n > packed.size() - at)
      throw ProtocolError("a packed MPI message's frame of " + std::to_string(n) + " bytes runs past its end");
    f(packed.data() + at, static_cast<std::size_t>(n));
    at += static_cast<std::size_t>(n);
  }
}

}  // namespace mproc::detail::mpi
