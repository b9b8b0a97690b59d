// The program's key and the HMAC-SHA256 primitives (libsodium) built on it.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace mproc::detail {

using Digest = std::array<std::uint8_t, 32>;

/// This process's authkey: random in the main process, inherited by every child (Python's
/// current_process().authkey).
const std::string& authkey();
void set_authkey(std::string key);
/// Bumped whenever the key changes, so caches of values derived from it can tell.
std::uint64_t authkey_generation();

std::string random_bytes(std::size_t n);
Digest hmac_sha256(std::string_view key, const void* msg, std::size_t n);
/// Constant-time comparison (no early exit that would leak how many bytes matched).
bool equal_constant_time(const void* a, const void* b, std::size_t n);

}  // namespace mproc::detail
