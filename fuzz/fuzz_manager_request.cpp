// Manager requests (managers/protocol.hpp) as the server reads them from a client's socket:
// the version hello, create, call (every built-in object's methods and their arguments),
// incref, decref, info, shutdown. Each input gets a fresh server (so object ids start at 1 and
// a create can be followed by calls on it) and one client connection; the input is a sequence
// of requests, each [length: u16 little-endian][request bytes], sent one at a time, each answer
// awaited before the next (a request that blocks, such as a get on an empty queue, ends the
// input: the connection closes and the server must let the call go). Whatever the bytes, the
// server must answer with a reply or close the connection: no crash, no leak, no hang.
#include <poll.h>
#include <unistd.h>

#include <string>
#include <thread>
#include <vector>

#include "common.hpp"
#include "managers/protocol.hpp"
#include "managers/server.hpp"
#include "mproc/connection.hpp"
#include "mproc/detail/serialize.hpp"

namespace {

using namespace mproc::detail;
using mproc::connection::Address;

Address fresh_address() {
  static int n = 0;
  return Address(std::string(1, '\0') + "mproc-fuzz-manager-" + std::to_string(::getpid()) + "-" + std::to_string(n++));
}

template <class... T>
std::string request(mgr::Op op, const T&... fields) {
  std::string out(1, static_cast<char>(op));
  OutArchive ar(out);
  (ar(fields), ...);
  return out;
}

constexpr std::uint64_t kType = 77;  // any proxy type: the server checks calls against it

std::string call(std::uint64_t id, const char* method) { return request(mgr::Op::call, id, kType, std::string(method)); }
template <class... A>
std::string call(std::uint64_t id, const char* method, const A&... args) {
  std::string out = call(id, method);
  OutArchive ar(out);
  (ar(args), ...);
  return out;
}

void append_framed(std::string& out, const std::string& r) {
  auto len = static_cast<std::uint16_t>(r.size());
  out.append(reinterpret_cast<const char*>(&len), sizeof len);
  out += r;
}

// Every seed opens with the version hello, as a real client does: without it the server
// answers each request with a version error and the fuzzer would not get past that check.
std::string sequence(const std::vector<std::string>& requests) {
  std::string out;
  append_framed(out, request(mgr::Op::hello, mgr::kProtocolVersion));
  for (const auto& r : requests) append_framed(out, r);
  return out;
}

std::vector<std::string> seeds() {
  auto create = [](const char* typeid_) { return request(mgr::Op::create, std::string(typeid_), kType); };
  return {
      sequence({create("dict"), call(1, "set", std::string("k"), std::string("v")), call(1, "get", std::string("k")),
                call(1, "get_many", std::vector<std::string>{"k", "x"}), call(1, "len"),
                call(1, "add", std::string("n"), std::uint8_t{14}, std::string(4, '\1')), call(1, "items")}),
      sequence({request(mgr::Op::create, std::string("list"), kType, std::vector<std::string>{"a", "b"}),
                call(1, "append", std::string("c")), call(1, "get", std::int64_t{-1}), call(1, "pop", std::int64_t{0}),
                request(mgr::Op::incref, std::uint64_t{1}), request(mgr::Op::decref, std::uint64_t{1})}),
      sequence({request(mgr::Op::create, std::string("Value"), kType, std::string(8, '\0')), call(1, "get"),
                request(mgr::Op::create, std::string("Array"), kType, std::uint64_t{4}, std::string(16, '\2')),
                call(2, "len")}),
      sequence({create("Namespace"), call(1, "set", std::string("x"), std::uint64_t{5}, std::string("1")),
                call(1, "get", std::string("x"), std::uint64_t{5})}),  // name, value type, value
      sequence({request(mgr::Op::create, std::string("JoinableQueue"), kType, std::int64_t{2}, true),
                call(1, "put", std::string("i"), true, 1.0), call(1, "get", false, 0.0), call(1, "task_done"),
                call(1, "qsize")}),
      sequence({create("Lock"), call(1, "acquire", true, 0.0), call(1, "release")}),
      sequence({request(mgr::Op::create, std::string("Semaphore"), kType, std::int64_t{1}), create("Event"),
                request(mgr::Op::create, std::string("Condition"), kType, std::uint64_t{0}), call(3, "acquire", true, 0.0),
                call(3, "notify", std::int64_t{1}), call(3, "wait", 0.0), request(mgr::Op::create, std::string("Barrier"), kType, std::int64_t{1}, 0.0)}),
      sequence({request(mgr::Op::info), request(mgr::Op::shutdown)}),
  };
}

// Sends one request and waits for its answer; false when there is none (closed, or blocked).
bool exchange(mproc::Connection& c, const std::uint8_t* req, std::size_t n) {
  try {
    c.send_bytes(std::string_view(reinterpret_cast<const char*>(req), n));
    if (!c.poll(mproc::seconds(0.5))) return false;
    (void)c.recv_bytes();
    return true;
  } catch (const mproc::Error&) {
    return false;  // the server closed this connection: its answer to garbage
  }
}

}  // namespace

MPROC_FUZZ_SEEDS(seeds)

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t n) {
  mgr::ServerCore server(fresh_address(), std::nullopt, {});
  std::thread serving([&] { server.serve_forever(); });
  {
    auto client = mproc::connection::Client(server.address(), std::nullopt);
    std::size_t off = 0;
    while (off + 2 <= n) {
      std::uint16_t len;
      std::memcpy(&len, data + off, sizeof len);
      off += 2;
      len = static_cast<std::uint16_t>(std::min<std::size_t>(len, n - off));
      if (!exchange(client, data + off, len)) break;
      off += len;
    }
  }
  server.stop();
  serving.join();
  return 0;
}
