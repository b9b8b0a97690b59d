// The authkey handshake (util/challenge, listener.cpp): what a client makes of a server's hello
// and verdict, and what a server makes of a client's reply, on the raw byte level (as the fork
// server uses it) and on a framed Connection (as Listener/Client and the manager server do).
// The input's first byte picks the side; the rest is what the peer sent. A peer without the key
// must never be let in, and nothing but AuthenticationError / ConnectionError may come out.
#include <sys/socket.h>

#include <string>
#include <vector>

#include "common.hpp"
#include "listener_detail.hpp"
#include "mproc/connection.hpp"
#include "mproc/errors.hpp"
#include "util/challenge.hpp"

namespace {

using namespace mproc::detail;
constexpr challenge::Labels kLabels{"fuzz-client:", "fuzz-server:"};
const std::string kKey(32, 'k');

[[noreturn]] void let_in_without_key(const char* where) {
  std::fprintf(stderr, "a peer without the key was let in (%s)\n", where);
  std::abort();
}

void raw_client(const std::uint8_t* data, std::size_t n) {
  // The peer's bytes: a hello, then (if any are left) a verdict.
  std::size_t hello = std::min(n, challenge::kHelloSize);
  std::string reply, mine;
  if (challenge::reply(kKey, kLabels, data, hello, reply, mine) != challenge::Outcome::ok) return;
  // The verdict proves the key only if it holds HMAC(key, label + mine), and mine is fresh.
  if (challenge::check_verdict(kKey, kLabels, mine, data + hello, n - hello) == challenge::Outcome::ok)
    let_in_without_key("raw client");
}

void raw_server(const std::uint8_t* data, std::size_t n) {
  unsigned char mine[challenge::kSize];
  (void)challenge::hello(mine);
  bool ok = false;
  (void)challenge::verdict(kKey, kLabels, mine, data, n, ok);
  if (ok) let_in_without_key("raw server");
}

// A socket pair: the input is what the peer wrote before it stopped writing.
std::pair<mproc::Connection, mproc::Connection> with_peer_bytes(const std::uint8_t* data, std::size_t n) {
  auto pair = mproc::Pipe();
  int peer = pair.second.fileno();
  std::size_t off = 0;
  while (off < n) {
    ssize_t w = ::send(peer, data + off, n - off, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (w <= 0) break;
    off += static_cast<std::size_t>(w);
  }
  ::shutdown(peer, SHUT_WR);
  return pair;
}

void framed_client(const std::uint8_t* data, std::size_t n, bool with_key) {
  auto [c, peer] = with_peer_bytes(data, n);
  try {
    client_handshake(c, with_key ? std::optional<std::string>(kKey) : std::nullopt, mproc::connection::Address("fuzz"));
  } catch (const mproc::AuthenticationError&) {
    return;
  } catch (const mproc::ConnectionError&) {
    return;
  }
  // Accepted: only "no key on either side" may get here, as a peer cannot answer a fresh challenge.
  if (with_key) let_in_without_key("framed client");
}

void framed_server(const std::uint8_t* data, std::size_t n) {
  auto [c, peer] = with_peer_bytes(data, n);
  if (serve_handshake(c, kKey, mproc::seconds(1))) let_in_without_key("framed server");
}

std::vector<std::string> seeds() {
  std::string chal = "CHAL" + std::string(challenge::kSize, 'c');
  std::string verdict = "OK.." + std::string(32, 'v');
  auto framed = [](std::string_view payload) {
    auto [a, b] = mproc::Pipe();
    a.send_bytes(payload);
    a.close();
    char buf[256];
    ssize_t r = ::recv(b.fileno(), buf, sizeof buf, 0);
    return std::string(buf, static_cast<std::size_t>(r > 0 ? r : 0));
  };
  return {
      std::string(1, '\0') + chal + verdict,
      std::string(1, '\0') + chal + "FAIL",
      std::string(1, '\1') + std::string(challenge::kReplySize, 'r'),
      std::string(1, '\2') + framed(chal) + framed(verdict),
      std::string(1, '\2') + framed(chal) + framed("FAIL"),
      std::string(1, '\3') + framed("NOAUTH"),
      std::string(1, '\4') + framed(std::string(challenge::kReplySize, 'r')),
  };
}

}  // namespace

MPROC_FUZZ_SEEDS(seeds)

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t n) {
  if (n == 0) return 0;
  switch (data[0]) {
    case 0: raw_client(data + 1, n - 1); break;
    case 1: raw_server(data + 1, n - 1); break;
    case 2: framed_client(data + 1, n - 1, true); break;
    case 3: framed_client(data + 1, n - 1, false); break;
    case 4: framed_server(data + 1, n - 1); break;
    default: return -1;
  }
  return 0;
}
