// The frame decoder of a Connection: any bytes a peer writes on a Pipe. The input is written
// into one end of a real socket pair and read from the other with the typed and untyped
// receives, message after message, until the stream ends or is refused. Only mproc errors may
// come out (ProtocolError, TypeMismatchError, EOFError, BufferTooShort): anything else, a crash,
// a leak or an allocation of what a header claims is a finding.
#include <sys/socket.h>

#include <array>
#include <map>
#include <string>
#include <vector>

#include "common.hpp"
#include "mproc/connection.hpp"

namespace {

using Strings = std::vector<std::string>;
using Table = std::map<std::int32_t, std::string>;

// Writes what fits in the socket's buffer (no reader runs yet) and ends the stream.
void feed(mproc::Connection& writer, const std::uint8_t* data, std::size_t n) {
  std::size_t off = 0;
  while (off < n) {
    ssize_t w = ::send(writer.fileno(), data + off, n - off, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (w <= 0) break;
    off += static_cast<std::size_t>(w);
  }
  ::shutdown(writer.fileno(), SHUT_WR);
}

// One message, taken by the first receive whose type it holds (a wrong type keeps it).
void receive_one(mproc::Connection& c, int round) {
  try {
    (void)c.recv<Strings>();
    return;
  } catch (const mproc::TypeMismatchError&) {
  }
  try {
    (void)c.recv<Table>();
    return;
  } catch (const mproc::TypeMismatchError&) {
  }
  try {
    (void)c.recv<std::int64_t>();
    return;
  } catch (const mproc::TypeMismatchError&) {
  }
  switch (round % 3) {
    case 0:
      (void)c.recv_bytes();
      break;
    case 1: {
      std::array<std::byte, 64> small;
      try {
        (void)c.recv_bytes_into(small);
      } catch (const mproc::BufferTooShort&) {
        (void)c.recv_bytes();  // the message is kept for a larger buffer
      }
      break;
    }
    default:
      (void)c.recv_buffer(4096);
  }
}

// Seeds: what a real sender writes for each kind of receive above.
std::vector<std::string> seeds() {
  auto [a, b] = mproc::Pipe();
  a.send(Strings{"alpha", "", "gamma"});
  a.send(Table{{1, "one"}, {-7, std::string(300, 'x')}});
  a.send(std::int64_t{42});
  a.send_bytes(std::string_view("raw bytes"));
  a.send_bytes(std::string(200, 'y'));
  a.send(std::string("a typed string"));
  a.send_bytes(std::string_view());
  a.close();
  std::vector<std::string> seeds;
  std::string all;
  char buf[65536];
  for (;;) {
    ssize_t r = ::recv(b.fileno(), buf, sizeof buf, 0);
    if (r <= 0) break;
    all.append(buf, static_cast<std::size_t>(r));
  }
  seeds.push_back(all);
  seeds.push_back(all.substr(0, 24 + 8));  // a header and a part of its payload
  return seeds;
}

}  // namespace

MPROC_FUZZ_SEEDS(seeds)

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t n) {
  auto [reader, writer] = mproc::Pipe();
  feed(writer, data, n);
  // Lower the limit so that the "over the limit" path is reachable with small inputs.
  if (n > 0 && (data[0] & 1)) reader.set_max_message_size(1024);
  try {
    for (int round = 0; round < 64; ++round) receive_one(reader, round);
  } catch (const mproc::Error&) {
    // refused, truncated or ended: what a receiver must see
  }
  return 0;
}
