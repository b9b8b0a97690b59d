#include "util/auth.hpp"

#include <sodium.h>

#include <atomic>
#include <stdexcept>

namespace mproc::detail {
namespace {
std::string g_key;
std::atomic<std::uint64_t> g_generation{0};

void ensure_sodium() {
  static const bool ok = sodium_init() >= 0;
  if (!ok) throw std::runtime_error("mproc: libsodium failed to initialise");
}
}  // namespace

const std::string& authkey() { return g_key; }

void set_authkey(std::string key) {
  g_key = std::move(key);
  g_generation.fetch_add(1, std::memory_order_release);
}

std::uint64_t authkey_generation() { return g_generation.load(std::memory_order_acquire); }

std::string random_bytes(std::size_t n) {
  ensure_sodium();
  std::string out(n, '\0');
  randombytes_buf(out.data(), n);
  return out;
}

Digest hmac_sha256(std::string_view key, const void* msg, std::size_t n) {
  crypto_auth_hmacsha256_state st;
  crypto_auth_hmacsha256_init(&st, reinterpret_cast<const unsigned char*>(key.data()), key.size());
  crypto_auth_hmacsha256_update(&st, static_cast<const unsigned char*>(msg), n);
  Digest d{};
  crypto_auth_hmacsha256_final(&st, d.data());
  return d;
}

bool equal_constant_time(const void* a, const void* b, std::size_t n) { return sodium_memcmp(a, b, n) == 0; }

}  // namespace mproc::detail
