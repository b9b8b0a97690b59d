#include "util/challenge.hpp"

#include <cstring>

namespace mproc::detail::challenge {

Digest answer(std::string_view key, const char* label, const unsigned char* challenge) {
  std::string msg = label;
  msg.append(reinterpret_cast<const char*>(challenge), kSize);
  return hmac_sha256(key, msg.data(), msg.size());
}

std::string hello(unsigned char* challenge) {
  std::string ch = random_bytes(kSize);
  std::memcpy(challenge, ch.data(), kSize);
  return "CHAL" + ch;
}

std::string verdict(std::string_view key, const Labels& labels, const unsigned char* challenge, const void* reply,
                    std::size_t n, bool& ok) {
  auto expect = answer(key, labels.client, challenge);
  ok = n == kReplySize && equal_constant_time(expect.data(), reply, 32);
  if (!ok) return "FAIL";
  auto a = answer(key, labels.server, static_cast<const unsigned char*>(reply) + 32);
  std::string out = "OK..";
  out.append(reinterpret_cast<const char*>(a.data()), a.size());
  return out;
}

Outcome reply(std::string_view key, const Labels& labels, const void* hello, std::size_t n, std::string& out,
              std::string& mine) {
  auto* h = static_cast<const unsigned char*>(hello);
  if (n != kHelloSize || std::memcmp(h, "CHAL", 4) != 0) return Outcome::malformed;
  auto a = answer(key, labels.client, h + 4);
  mine = random_bytes(kSize);
  out.assign(reinterpret_cast<const char*>(a.data()), a.size());
  out += mine;
  return Outcome::ok;
}

Outcome check_verdict(std::string_view key, const Labels& labels, const std::string& mine, const void* verdict,
                      std::size_t n) {
  auto* v = static_cast<const unsigned char*>(verdict);
  if (n == kFailSize && std::memcmp(v, "FAIL", 4) == 0) return Outcome::refused;
  if (n != kVerdictSize || std::memcmp(v, "OK..", 4) != 0) return Outcome::malformed;
  auto expect = answer(key, labels.server, reinterpret_cast<const unsigned char*>(mine.data()));
  return equal_constant_time(expect.data(), v + 4, 32) ? Outcome::ok : Outcome::unproven;
}

}  // namespace mproc::detail::challenge
