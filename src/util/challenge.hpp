// The mutual HMAC challenge-response that guards every authenticated channel (the fork server,
// Listener/Client, manager servers): Python 3.12+'s deliver_challenge / answer_challenge, run in
// both directions. Only the bytes live here; each channel does its own I/O (the fork server
// on a non-blocking SEQPACKET socket, Listener on framed Connections).
//
//   server -> client   hello:   "CHAL" + 32 random bytes (the server's challenge)
//   client -> server   reply:   HMAC(key, client_label + challenge) + 32 random bytes (the client's)
//   server -> client   verdict: "OK.." + HMAC(key, server_label + client's challenge), or "FAIL"
//
// The labels keep the two directions apart, so an answer can never be reflected back as the
// other side's; different channels use different labels, so an answer for one is worthless on
// another. Comparisons are constant-time.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "util/auth.hpp"

namespace mproc::detail::challenge {

constexpr std::size_t kSize = 32;
constexpr std::size_t kHelloSize = 4 + kSize;
constexpr std::size_t kReplySize = 32 + kSize;
constexpr std::size_t kVerdictSize = 4 + 32;
constexpr std::size_t kFailSize = 4;

struct Labels {
  const char* client;
  const char* server;
};

/// HMAC(key, label + challenge).
Digest answer(std::string_view key, const char* label, const unsigned char* challenge);

/// Server side: a fresh hello; *challenge receives the server's challenge (kSize bytes).
std::string hello(unsigned char* challenge);
/// Server side: the verdict to send for a reply, or "FAIL" when the reply does not prove the
/// key (then the connection is to be dropped). `ok` tells which.
std::string verdict(std::string_view key, const Labels& labels, const unsigned char* challenge, const void* reply,
                    std::size_t n, bool& ok);

enum class Outcome { ok, malformed, refused, unproven };

/// Client side: the reply to a hello (Outcome::malformed when it is not one); *mine receives
/// the client's own challenge, for check_verdict.
Outcome reply(std::string_view key, const Labels& labels, const void* hello, std::size_t n, std::string& out,
              std::string& mine);
/// Client side: ok, refused (the server said FAIL: wrong key), unproven (the server does not
/// hold the key) or malformed.
Outcome check_verdict(std::string_view key, const Labels& labels, const std::string& mine, const void* verdict,
                      std::size_t n);

}  // namespace mproc::detail::challenge
