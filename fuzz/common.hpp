// Shared by the fuzz targets: what counts as a clean rejection, and writing seed inputs.
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

namespace mproc_fuzz {

/// Seeds are made by the target itself from the real encoders (so they stay valid when a
/// format changes): MPROC_FUZZ_WRITE_SEEDS=<dir> <target> writes them to dir and exits.
/// Called from LLVMFuzzerInitialize.
inline void write_seeds_if_asked(const std::vector<std::string>& seeds) {
  const char* dir = std::getenv("MPROC_FUZZ_WRITE_SEEDS");
  if (!dir) return;
  for (std::size_t i = 0; i < seeds.size(); ++i) {
    std::string path = std::string(dir) + "/seed-" + std::to_string(i);
    std::FILE* f = std::fopen(path.c_str(), "wb");
    if (!f || std::fwrite(seeds[i].data(), 1, seeds[i].size(), f) != seeds[i].size()) {
      std::perror(path.c_str());
      std::exit(1);
    }
    std::fclose(f);
  }
  std::printf("wrote %zu seeds to %s\n", seeds.size(), dir);
  std::exit(0);
}

/// Defines the target's LLVMFuzzerInitialize: writes the seeds that make_seeds() returns when asked.
#define MPROC_FUZZ_SEEDS(make_seeds)                     \
  extern "C" int LLVMFuzzerInitialize(int*, char***) {   \
    mproc_fuzz::write_seeds_if_asked(make_seeds());      \
    return 0;                                            \
  }

inline std::string bytes(const std::uint8_t* data, std::size_t n) {
  return std::string(reinterpret_cast<const char*>(data), n);
}

}  // namespace mproc_fuzz
