// Pipe / Connection (Python: multiprocessing.Pipe, multiprocessing.connection): typed and raw
// messages, buffers, poll and wait, one-way pipes, closing, hostile bytes on the channel, and
// connections handed to child processes under every start method.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <mproc/mproc.hpp>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <fstream>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstring>
#include <map>
#include <optional>
#include <ostream>
#include <set>
#include <string>
#include <thread>
#include <tuple>
#include <utility>
#include <variant>
#include <vector>

#include "support/timeouts.hpp"

namespace {

using namespace std::chrono_literals;

// ----------------------------------------------------------------------------------------------
// Types and helpers

struct Person {
  std::string name;
  int age = 0;
  std::vector<std::string> tags;
  template <class A>
  void serialize(A& a) {
    a(name, age, tags);
  }
  bool operator==(const Person&) const = default;
};
std::ostream& operator<<(std::ostream& os, const Person& p) { return os << "Person{" << p.name << ", " << p.age << "}"; }

struct Point {  // trivially copyable, no serialize()
  double x = 0, y = 0;
  std::int32_t id = 0;
  bool operator==(const Point&) const = default;
};
std::ostream& operator<<(std::ostream& os, const Point& p) { return os << "Point{" << p.x << ", " << p.y << ", " << p.id << "}"; }

std::vector<std::byte> bytes_of(std::string_view s) {
  std::vector<std::byte> out(s.size());
  std::memcpy(out.data(), s.data(), s.size());
  return out;
}

std::string text_of(const std::vector<std::byte>& b) { return std::string(reinterpret_cast<const char*>(b.data()), b.size()); }

template <class T>
T through_pipe(const T& value) {
  auto [a, b] = mproc::Pipe();
  a.send(value);
  return b.recv<T>();
}

std::set<int> filenos(const std::vector<mproc::Connection>& conns) {
  std::set<int> out;
  for (const auto& c : conns) out.insert(c.fileno());
  return out;
}

// The frame as it is on the wire: magic "MPRC", version 1, type fingerprint (0 for raw bytes),
// payload length, all little-endian; then the payload.
constexpr std::uint32_t kMagic = 0x4352504d;
constexpr std::uint32_t kVersion = 1;

std::string header(std::uint64_t type, std::uint64_t length, std::uint32_t magic = kMagic, std::uint32_t version = kVersion) {
  std::string h;
  h.append(reinterpret_cast<const char*>(&magic), 4);
  h.append(reinterpret_cast<const char*>(&version), 4);
  h.append(reinterpret_cast<const char*>(&type), 8);
  h.append(reinterpret_cast<const char*>(&length), 8);
  return h;
}

template <class T>
std::string frame_of_type(const std::string& payload) {
  return header(mproc::detail::type_fingerprint<T>(), payload.size()) + payload;
}

template <class T>
void append_pod(std::string& out, const T& v) {
  out.append(reinterpret_cast<const char*>(&v), sizeof v);
}

// A Connection over one end of a socket pair, and the other end as a raw descriptor on which a
// test writes whatever bytes it likes.
class RawPeer {
 public:
  RawPeer() {
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) throw std::runtime_error("socketpair");
    conn = mproc::Connection(sv[0], true, true);
    raw_ = sv[1];
  }
  ~RawPeer() { close_writer(); }
  RawPeer(const RawPeer&) = delete;
  RawPeer& operator=(const RawPeer&) = delete;

  void write(const std::string& bytes) {
    std::size_t done = 0;
    while (done < bytes.size()) {
      ssize_t w = ::send(raw_, bytes.data() + done, bytes.size() - done, MSG_NOSIGNAL);
      if (w <= 0) throw std::runtime_error("raw write failed");
      done += static_cast<std::size_t>(w);
    }
  }
  // Writes bytes in one sendmsg with the descriptors as SCM_RIGHTS (they stay open here).
  void write_with_fds(const std::string& bytes, std::vector<int> fds) {
    std::vector<char> control(CMSG_SPACE(sizeof(int) * fds.size()));
    iovec iov{const_cast<char*>(bytes.data()), bytes.size()};
    msghdr m{};
    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    m.msg_control = control.data();
    m.msg_controllen = control.size();
    cmsghdr* c = CMSG_FIRSTHDR(&m);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
    if (::sendmsg(raw_, &m, MSG_NOSIGNAL) != static_cast<ssize_t>(bytes.size())) throw std::runtime_error("sendmsg failed");
  }
  void close_writer() {
    if (raw_ >= 0) ::close(raw_);
    raw_ = -1;
  }

  mproc::Connection conn;

 private:
  int raw_ = -1;
};

// A message of n bytes whose every byte depends on its position and on seed.
std::string patterned(std::size_t n, unsigned seed = 0) {
  std::string s(n, '\0');
  for (std::size_t i = 0; i < n; ++i) s[i] = static_cast<char>((i * 131 + (i >> 13) + seed) & 0xff);
  return s;
}

std::string text_of(const mproc::Buffer& b) { return std::string(b.view()); }

// Open descriptors and mappings of payload memfds in this process, to show that none is left.
std::size_t count_open_fds() {
  std::size_t n = 0;
  for (int fd = 0; fd < 4096; ++fd) n += ::fcntl(fd, F_GETFD) != -1;
  return n;
}
std::size_t count_message_mappings() {
  std::ifstream maps("/proc/self/maps");
  std::size_t n = 0;
  for (std::string line; std::getline(maps, line);) n += line.find("memfd:mproc-message") != std::string::npos;
  return n;
}

// The flag word of a frame whose payload is a memfd (the high half of the version word).
constexpr std::uint32_t kVersionInMemfd = kVersion | (1u << 16);

// A slab (src/reduction/shm_payload.hpp: a head page, then the payload) holding bytes, with the
// given seals (0: none; -1: created without MFD_ALLOW_SEALING).
int memfd_holding(const std::string& bytes, int seals) {
  int fd = ::memfd_create("mproc-message", MFD_CLOEXEC | (seals >= 0 ? MFD_ALLOW_SEALING : 0u));
  if (fd < 0) throw std::runtime_error("memfd_create");
  const std::string slab = std::string(4096, '\0') + bytes;
  if (::write(fd, slab.data(), slab.size()) != static_cast<ssize_t>(slab.size())) throw std::runtime_error("write memfd");
  if (seals > 0 && ::fcntl(fd, F_ADD_SEALS, seals) != 0) throw std::runtime_error("seal memfd");
  return fd;
}
constexpr int kAllSeals = F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL;  // what a sender puts on its slabs

long max_rss_kib() {
  rusage u{};
  ::getrusage(RUSAGE_SELF, &u);
  return u.ru_maxrss;
}

// ----------------------------------------------------------------------------------------------
// send / recv of values

TEST(ConnectionSendRecv, DeliversScalarsUnchanged) {
  EXPECT_EQ(through_pipe(42), 42);
  EXPECT_EQ(through_pipe(-7L), -7L);
  EXPECT_EQ(through_pipe(2.75), 2.75);
  EXPECT_EQ(through_pipe(true), true);
  EXPECT_EQ(through_pipe('c'), 'c');
}

TEST(ConnectionSendRecv, DeliversStringsUnchanged) {
  EXPECT_EQ(through_pipe(std::string("hello")), "hello");
  EXPECT_EQ(through_pipe(std::string("a\0b", 3)), std::string("a\0b", 3));
}

TEST(ConnectionSendRecv, DeliversContainersUnchanged) {
  EXPECT_EQ(through_pipe(std::vector<int>{1, 2, 3}), (std::vector<int>{1, 2, 3}));
  std::map<std::string, int> m{{"a", 1}, {"b", 2}};
  EXPECT_EQ(through_pipe(m), m);
  auto t = std::make_tuple(1, std::string("x"), 0.5);
  EXPECT_EQ(through_pipe(t), t);
}

TEST(ConnectionSendRecv, DeliversOptionalsAndVariantsUnchanged) {
  EXPECT_EQ(through_pipe(std::optional<int>{}), std::nullopt);
  EXPECT_EQ(through_pipe(std::optional<int>{5}), std::optional<int>{5});
  using V = std::variant<int, std::string>;
  EXPECT_EQ(through_pipe(V{3}), V{3});
  EXPECT_EQ(through_pipe(V{std::string("s")}), V{std::string("s")});
}

TEST(ConnectionSendRecv, DeliversNestedContainersUnchanged) {
  std::vector<std::map<std::string, std::vector<std::optional<int>>>> nested{{{"k", {1, std::nullopt}}}, {}, {{"", {}}}};
  EXPECT_EQ(through_pipe(nested), nested);
}

TEST(ConnectionSendRecv, DeliversAUserStructWithSerialize) {
  Person p{"Ada", 36, {"math"}};
  EXPECT_EQ(through_pipe(p), p);
}

TEST(ConnectionSendRecv, DeliversATriviallyCopyableStructWithoutSerialize) {
  Point p{1.5, -2.0, 9};
  EXPECT_EQ(through_pipe(p), p);
}

TEST(ConnectionSendRecv, DeliversEmptyStringsAndVectors) {
  EXPECT_EQ(through_pipe(std::string()), "");
  EXPECT_EQ(through_pipe(std::vector<int>{}), std::vector<int>{});
}

TEST(ConnectionSendRecv, KeepsMessagesInOrder) {
  auto [a, b] = mproc::Pipe();
  for (int i = 0; i < 100; ++i) a.send(i);
  for (int i = 0; i < 100; ++i) EXPECT_EQ(b.recv<int>(), i);
  EXPECT_FALSE(b.poll());
}

TEST(ConnectionSendRecv, WorksInBothDirectionsOfADuplexPipe) {
  auto [a, b] = mproc::Pipe();
  a.send(std::string("ping"));
  b.send(std::string("pong"));
  EXPECT_EQ(b.recv<std::string>(), "ping");
  EXPECT_EQ(a.recv<std::string>(), "pong");
}

TEST(ConnectionSendRecv, DeliversA64MiBPayloadIntact) {
  auto [a, b] = mproc::Pipe();
  std::vector<std::uint8_t> big(64u << 20);
  for (std::size_t i = 0; i < big.size(); ++i) big[i] = static_cast<std::uint8_t>(i * 131 + (i >> 16));
  std::thread sender([&, &a = a] { a.send(big); });
  auto got = b.recv<std::vector<std::uint8_t>>();
  sender.join();
  ASSERT_EQ(got.size(), big.size());
  EXPECT_TRUE(got == big);
}

// ----------------------------------------------------------------------------------------------
// send_bytes / recv_bytes / recv_bytes_into

TEST(ConnectionBytes, RecvBytesReturnsExactlyWhatSendBytesSent) {
  auto [a, b] = mproc::Pipe();
  a.send_bytes(std::string_view("hello world"));
  std::string with_nul("\0\x01\xff", 3);
  a.send_bytes(std::span<const std::byte>(bytes_of(with_nul)));
  a.send_bytes(std::string_view());
  EXPECT_EQ(text_of(b.recv_bytes()), "hello world");
  EXPECT_EQ(text_of(b.recv_bytes()), with_nul);
  EXPECT_TRUE(b.recv_bytes().empty());
}

TEST(ConnectionBytes, RecvBytesOfATypedMessageReturnsItsEncoding) {
  auto [a, b] = mproc::Pipe();
  a.send(std::int32_t{0x01020304});
  auto raw = b.recv_bytes();
  std::string expected;
  mproc::detail::encode(expected, std::int32_t{0x01020304});
  EXPECT_EQ(text_of(raw), expected);
}

TEST(ConnectionBytes, ALargeRawMessageArrivesIntact) {
  auto [a, b] = mproc::Pipe();
  std::string big(8u << 20, '\0');
  for (std::size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>(i % 251);
  std::thread sender([&, &a = a] { a.send_bytes(std::string_view(big)); });
  auto got = b.recv_bytes();
  sender.join();
  EXPECT_TRUE(text_of(got) == big);
}

TEST(ConnectionBytes, RecvBytesIntoWritesAtTheOffsetAndReturnsTheLength) {
  auto [a, b] = mproc::Pipe();
  a.send_bytes(std::string_view("hello"));
  std::vector<std::byte> buf(16, std::byte{'.'});
  std::size_t n = b.recv_bytes_into(buf, 5);
  EXPECT_EQ(n, 5u);
  EXPECT_EQ(text_of(buf), ".....hello......");
}

TEST(ConnectionBytes, RecvBytesIntoFillsTheBufferToTheLastByte) {
  auto [a, b] = mproc::Pipe();
  a.send_bytes(std::string_view("abcd"));
  std::vector<std::byte> buf(8, std::byte{'.'});
  EXPECT_EQ(b.recv_bytes_into(buf, 4), 4u);
  EXPECT_EQ(text_of(buf), "....abcd");
}

TEST(ConnectionBytes, BufferTooShortKeepsTheMessageForTheNextRecvBytes) {
  auto [a, b] = mproc::Pipe();
  a.send_bytes(std::string_view("twenty bytes long!!!"));
  a.send_bytes(std::string_view("next"));
  std::vector<std::byte> buf(16, std::byte{'.'});
  try {
    b.recv_bytes_into(buf);
    FAIL() << "expected BufferTooShort";
  } catch (const mproc::BufferTooShort& e) {
    EXPECT_EQ(e.needed(), 20u);
  }
  EXPECT_EQ(text_of(buf), std::string(16, '.'));  // untouched
  EXPECT_TRUE(b.poll());
  EXPECT_EQ(text_of(b.recv_bytes()), "twenty bytes long!!!");
  EXPECT_EQ(text_of(b.recv_bytes()), "next");
}

TEST(ConnectionBytes, BufferTooShortCountsTheOffset) {
  auto [a, b] = mproc::Pipe();
  a.send_bytes(std::string_view("12345678"));
  std::vector<std::byte> buf(12);
  EXPECT_THROW(b.recv_bytes_into(buf, 5), mproc::BufferTooShort);
  EXPECT_EQ(b.recv_bytes_into(buf, 4), 8u);
  EXPECT_EQ(text_of(std::vector<std::byte>(buf.begin() + 4, buf.end())), "12345678");
}

TEST(ConnectionBytes, BufferTooShortIsAProcessError) {
  auto [a, b] = mproc::Pipe();
  a.send_bytes(std::string_view("xx"));
  std::vector<std::byte> buf(1);
  EXPECT_THROW(b.recv_bytes_into(buf), mproc::ProcessError);
  EXPECT_EQ(text_of(b.recv_bytes()), "xx");
}

TEST(ConnectionBytes, AnOffsetPastTheBufferThrowsAndConsumesNothing) {
  auto [a, b] = mproc::Pipe();
  a.send_bytes(std::string_view("kept"));
  std::vector<std::byte> buf(4);
  EXPECT_ANY_THROW(b.recv_bytes_into(buf, 5));
  EXPECT_EQ(text_of(b.recv_bytes()), "kept");
}

TEST(ConnectionBytes, RecvBytesOverMaxlengthThrowsAndKeepsTheMessage) {
  auto [a, b] = mproc::Pipe();
  a.send_bytes(std::string(100, 'm'));
  EXPECT_THROW(b.recv_bytes(99), mproc::ProtocolError);
  EXPECT_TRUE(b.poll());
  EXPECT_EQ(text_of(b.recv_bytes(100)), std::string(100, 'm'));
}

// ----------------------------------------------------------------------------------------------
// Type checks

TEST(ConnectionTypes, RecvOfTheWrongTypeThrowsAndKeepsTheMessage) {
  auto [a, b] = mproc::Pipe();
  a.send(std::string("text"));
  EXPECT_THROW(b.recv<int>(), mproc::TypeMismatchError);
  EXPECT_THROW(b.recv<std::vector<char>>(), mproc::TypeMismatchError);
  EXPECT_TRUE(b.poll());
  EXPECT_EQ(b.recv<std::string>(), "text");
  EXPECT_FALSE(b.poll());
}

TEST(ConnectionTypes, SimilarTypesAreNotConfused) {
  auto [a, b] = mproc::Pipe();
  a.send(std::int32_t{1});
  EXPECT_THROW(b.recv<std::uint32_t>(), mproc::TypeMismatchError);
  EXPECT_THROW(b.recv<float>(), mproc::TypeMismatchError);
  EXPECT_EQ(b.recv<std::int32_t>(), 1);
  a.send(std::vector<int>{1});
  EXPECT_THROW(b.recv<std::vector<long>>(), mproc::TypeMismatchError);
  EXPECT_EQ(b.recv<std::vector<int>>(), std::vector<int>{1});
}

TEST(ConnectionTypes, TypeMismatchIsAProtocolError) {
  auto [a, b] = mproc::Pipe();
  a.send(1.0);
  EXPECT_THROW(b.recv<int>(), mproc::ProtocolError);
  EXPECT_EQ(b.recv<double>(), 1.0);
}

TEST(ConnectionTypes, AConnectionCannotBeSentInsideAMessage) {
  auto [a, b] = mproc::Pipe();
  auto [c, d] = mproc::Pipe();
  EXPECT_THROW(a.send(c), mproc::Error);
  EXPECT_FALSE(b.poll());  // nothing half-written
  a.send(1);
  EXPECT_EQ(b.recv<int>(), 1);
}

TEST(ConnectionTypes, RawBytesAreNotATypedValueButStayForRecvBytes) {
  auto [a, b] = mproc::Pipe();
  std::string four("\x01\x00\x00\x00", 4);
  a.send_bytes(std::string_view(four));
  EXPECT_THROW(b.recv<int>(), mproc::TypeMismatchError);
  EXPECT_EQ(text_of(b.recv_bytes()), four);
}

// ----------------------------------------------------------------------------------------------
// poll and wait

TEST(ConnectionPoll, ANaNTimeoutIsRefusedAndAnInfiniteOneWaitsForTheMessage) {
  using support::kInf, support::kNaN;
  auto [a, b] = mproc::Pipe();
  support::expect_nan_refused("Connection.poll", [&] { (void)b.poll(mproc::seconds(kNaN)); });
  support::expect_nan_refused("connection.wait", [&] { (void)mproc::connection::wait({b}, mproc::seconds(kNaN)); });
  support::expect_nan_refused("connection.wait",
                              [&] { (void)mproc::connection::wait(std::vector<int>{b.fileno()}, mproc::seconds(kNaN)); });
  EXPECT_FALSE(b.poll(mproc::seconds(-1)));
  a.send(7);
  EXPECT_TRUE(b.poll(mproc::seconds(kInf)));
  EXPECT_EQ(mproc::connection::wait({b}, mproc::seconds(kInf)).size(), 1u);
  EXPECT_EQ(b.recv<int>(), 7);
}

TEST(ConnectionPoll, IsFalseOnAnEmptyPipeAndTrueAfterASend) {
  auto [a, b] = mproc::Pipe();
  EXPECT_FALSE(b.poll());
  EXPECT_FALSE(b.poll(0s));
  a.send(1);
  EXPECT_TRUE(b.poll(0s));
  EXPECT_TRUE(b.poll(0s));  // polling does not consume
  EXPECT_EQ(b.recv<int>(), 1);
  EXPECT_FALSE(b.poll(0s));
}

TEST(ConnectionPoll, WithATimeoutReturnsFalseWhenNothingCame) {
  auto [a, b] = mproc::Pipe();
  EXPECT_FALSE(b.poll(20ms));
  EXPECT_FALSE(a.poll(mproc::seconds(0.02)));
}

TEST(ConnectionPoll, ANegativeTimeoutDoesNotWait) {
  auto [a, b] = mproc::Pipe();
  EXPECT_FALSE(b.poll(-1s));
  a.send(1);
  EXPECT_TRUE(b.poll(-1s));
}

TEST(ConnectionPoll, WithATimeoutWaitsForAMessageSentLater) {
  auto [a, b] = mproc::Pipe();
  std::thread sender([&a = a] {
    std::this_thread::sleep_for(50ms);
    a.send(7);
  });
  bool ready = b.poll(30s);
  sender.join();
  EXPECT_TRUE(ready);
  EXPECT_EQ(b.recv<int>(), 7);
}

TEST(ConnectionPoll, WithoutATimeoutWaitsForAMessageSentLater) {
  auto [a, b] = mproc::Pipe();
  std::thread sender([&a = a] {
    std::this_thread::sleep_for(20ms);
    a.send_bytes(std::string_view("z"));
  });
  bool ready = b.poll(std::nullopt);
  sender.join();
  EXPECT_TRUE(ready);
  EXPECT_EQ(text_of(b.recv_bytes()), "z");
}

TEST(ConnectionPoll, IsTrueWhenThePeerHasClosed) {
  auto [a, b] = mproc::Pipe();
  a.close();
  EXPECT_TRUE(b.poll(0s));
  EXPECT_THROW(b.recv<int>(), mproc::EOFError);
}

TEST(ConnectionPoll, SeesEachOfSeveralMessagesThatArrivedTogether) {
  auto [a, b] = mproc::Pipe();
  a.send(1);
  a.send(2);
  EXPECT_EQ(b.recv<int>(), 1);  // may read both into the connection's buffer
  EXPECT_TRUE(b.poll(0s));
  EXPECT_EQ(b.recv<int>(), 2);
  EXPECT_FALSE(b.poll(0s));
}

TEST(ConnectionWait, ReturnsExactlyTheConnectionsThatAreReady) {
  auto [a1, b1] = mproc::Pipe();
  auto [a2, b2] = mproc::Pipe();
  auto [a3, b3] = mproc::Pipe();
  a1.send(1);
  a3.send(3);
  auto ready = mproc::connection::wait({b1, b2, b3}, 10s);
  EXPECT_EQ(filenos(ready), (std::set<int>{b1.fileno(), b3.fileno()}));
}

TEST(ConnectionWait, ReturnsNothingWhenTheTimeoutPassesWithNothingReady) {
  auto [a1, b1] = mproc::Pipe();
  auto [a2, b2] = mproc::Pipe();
  EXPECT_TRUE(mproc::connection::wait({b1, b2}, 0s).empty());
  EXPECT_TRUE(mproc::connection::wait({b1, b2}, 20ms).empty());
}

TEST(ConnectionWait, WithoutATimeoutReturnsOnceAMessageArrives) {
  auto [a1, b1] = mproc::Pipe();
  auto [a2, b2] = mproc::Pipe();
  std::thread sender([&a2 = a2] {
    std::this_thread::sleep_for(20ms);
    a2.send(2);
  });
  auto ready = mproc::connection::wait({b1, b2});
  sender.join();
  EXPECT_EQ(filenos(ready), std::set<int>{b2.fileno()});
}

TEST(ConnectionWait, CountsAClosedPeerAsReady) {
  auto [a1, b1] = mproc::Pipe();
  auto [a2, b2] = mproc::Pipe();
  a1.close();
  auto ready = mproc::connection::wait({b1, b2}, 10s);
  EXPECT_EQ(filenos(ready), std::set<int>{b1.fileno()});
}

TEST(ConnectionWait, ReturnsEveryReadyConnectionIncludingOnesWithAMessageAlreadyBuffered) {
  auto [a1, b1] = mproc::Pipe();
  auto [a2, b2] = mproc::Pipe();
  a1.send(1);
  EXPECT_THROW(b1.recv<std::string>(), mproc::TypeMismatchError);  // b1 now keeps the message itself
  a2.send(2);                                                      // b2 has it on its socket
  auto ready = mproc::connection::wait({b1, b2}, 10s);
  EXPECT_EQ(filenos(ready), (std::set<int>{b1.fileno(), b2.fileno()}));
}

TEST(ConnectionWait, WorksOnRawDescriptors) {
  auto [a1, b1] = mproc::Pipe();
  auto [a2, b2] = mproc::Pipe();
  a2.send(0);
  auto ready = mproc::connection::wait(std::vector<int>{b1.fileno(), b2.fileno()}, 10s);
  EXPECT_EQ(ready, std::vector<int>{b2.fileno()});
}

// ----------------------------------------------------------------------------------------------
// One-way pipes

TEST(ConnectionOneWay, TheFirstEndOnlyReceivesAndTheSecondOnlySends) {
  auto [r, w] = mproc::Pipe(false);
  EXPECT_TRUE(r.readable());
  EXPECT_FALSE(r.writable());
  EXPECT_FALSE(w.readable());
  EXPECT_TRUE(w.writable());
  w.send(std::string("one way"));
  EXPECT_EQ(r.recv<std::string>(), "one way");
}

TEST(ConnectionOneWay, TheReadEndCannotSend) {
  auto [r, w] = mproc::Pipe(false);
  EXPECT_THROW(r.send(1), mproc::Error);
  EXPECT_THROW(r.send_bytes(std::string_view("x")), mproc::Error);
  EXPECT_FALSE(r.poll());  // nothing was written by the failed sends
}

TEST(ConnectionOneWay, TheWriteEndCannotReceive) {
  auto [r, w] = mproc::Pipe(false);
  std::vector<std::byte> buf(4);
  EXPECT_THROW(w.recv<int>(), mproc::Error);
  EXPECT_THROW(w.recv_bytes(), mproc::Error);
  EXPECT_THROW(w.recv_bytes_into(buf), mproc::Error);
  EXPECT_THROW(w.poll(), mproc::Error);
}

TEST(ConnectionOneWay, ADuplexPipeIsReadableAndWritableAtBothEnds) {
  auto [a, b] = mproc::Pipe(true);
  EXPECT_TRUE(a.readable());
  EXPECT_TRUE(a.writable());
  EXPECT_TRUE(b.readable());
  EXPECT_TRUE(b.writable());
}

// ----------------------------------------------------------------------------------------------
// Closing

TEST(ConnectionClose, AClosedPeerGivesEofOnRecv) {
  auto [a, b] = mproc::Pipe();
  a.close();
  EXPECT_THROW(b.recv<int>(), mproc::EOFError);
  EXPECT_THROW(b.recv_bytes(), mproc::EOFError);
}

TEST(ConnectionClose, MessagesSentBeforeThePeerClosedAreStillDelivered) {
  auto [a, b] = mproc::Pipe();
  a.send(1);
  a.send_bytes(std::string_view("last"));
  a.close();
  EXPECT_EQ(b.recv<int>(), 1);
  EXPECT_EQ(text_of(b.recv_bytes()), "last");
  EXPECT_THROW(b.recv<int>(), mproc::EOFError);
}

TEST(ConnectionClose, AClosedPeerGivesEofOnSend) {
  auto [a, b] = mproc::Pipe();
  b.close();
  EXPECT_THROW(a.send(1), mproc::EOFError);
  EXPECT_THROW(a.send_bytes(std::string_view("x")), mproc::EOFError);
}

TEST(ConnectionClose, AClosedReaderGivesEofToTheWriterOfAOneWayPipe) {
  auto [r, w] = mproc::Pipe(false);
  r.close();
  EXPECT_THROW(w.send(1), mproc::EOFError);
}

TEST(ConnectionClose, CloseMarksTheConnectionClosedAndCanBeRepeated) {
  auto [a, b] = mproc::Pipe();
  EXPECT_FALSE(a.closed());
  a.close();
  EXPECT_TRUE(a.closed());
  EXPECT_NO_THROW(a.close());
  EXPECT_TRUE(a.closed());
  EXPECT_FALSE(b.closed());
}

TEST(ConnectionClose, ClosingOneCopyClosesEveryCopy) {
  auto [a, b] = mproc::Pipe();
  mproc::Connection copy = a;
  a.close();
  EXPECT_TRUE(copy.closed());
  EXPECT_THROW(copy.send(1), mproc::Error);
}

TEST(ConnectionClose, EveryOperationOnAClosedConnectionThrows) {
  auto [a, b] = mproc::Pipe();
  a.close();
  std::vector<std::byte> buf(4);
  EXPECT_THROW(a.send(1), mproc::Error);
  EXPECT_THROW(a.recv<int>(), mproc::Error);
  EXPECT_THROW(a.send_bytes(std::string_view("x")), mproc::Error);
  EXPECT_THROW(a.recv_bytes(), mproc::Error);
  EXPECT_THROW(a.recv_bytes_into(buf), mproc::Error);
  EXPECT_THROW(a.poll(), mproc::Error);
  EXPECT_THROW((void)a.fileno(), mproc::Error);
  EXPECT_THROW((void)a.readable(), mproc::Error);
  EXPECT_THROW((void)a.writable(), mproc::Error);
  EXPECT_THROW(a.set_max_message_size(10), mproc::Error);
}

TEST(ConnectionClose, ADefaultConstructedConnectionIsClosed) {
  mproc::Connection c;
  EXPECT_TRUE(c.closed());
  EXPECT_THROW(c.send(1), mproc::Error);
  EXPECT_THROW(c.recv<int>(), mproc::Error);
  EXPECT_NO_THROW(c.close());
}

// ----------------------------------------------------------------------------------------------
// Size limits

TEST(ConnectionLimits, TheDefaultLimitIsOneGiB) {
  auto [a, b] = mproc::Pipe();
  EXPECT_EQ(a.max_message_size(), std::size_t{1} << 30);
  b.set_max_message_size(1234);
  EXPECT_EQ(b.max_message_size(), 1234u);
}

TEST(ConnectionLimits, SendingOverTheLimitThrowsAndSendsNothing) {
  auto [a, b] = mproc::Pipe();
  a.set_max_message_size(10);
  EXPECT_THROW(a.send(std::string(100, 'x')), mproc::ProtocolError);
  EXPECT_THROW(a.send_bytes(std::string(11, 'x')), mproc::ProtocolError);
  EXPECT_FALSE(b.poll());
  a.send_bytes(std::string(10, 'y'));
  EXPECT_EQ(text_of(b.recv_bytes()), std::string(10, 'y'));
}

TEST(ConnectionLimits, ReceivingAFrameOverTheLimitIsAProtocolError) {
  auto [a, b] = mproc::Pipe();
  b.set_max_message_size(1024);
  a.send_bytes(std::string(1024, 'k'));
  a.send_bytes(std::string(2048, 'x'));
  EXPECT_EQ(b.recv_bytes().size(), 1024u);  // exactly the limit is allowed
  EXPECT_THROW(b.recv_bytes(), mproc::ProtocolError);
}

// ----------------------------------------------------------------------------------------------
// Hostile bytes on the channel

TEST(ConnectionHostile, AHandWrittenFrameIsAccepted) {
  // The baseline for the tests below: the frame layout they forge is the real one.
  RawPeer peer;
  std::string payload;
  append_pod(payload, std::int32_t{42});
  peer.write(frame_of_type<std::int32_t>(payload));
  peer.write(header(0, 3) + "raw");
  EXPECT_EQ(peer.conn.recv<std::int32_t>(), 42);
  EXPECT_EQ(text_of(peer.conn.recv_bytes()), "raw");
}

TEST(ConnectionHostile, BadMagicIsAProtocolErrorAndTheConnectionStaysBroken) {
  RawPeer peer;
  std::string payload;
  append_pod(payload, std::int32_t{1});
  peer.write(header(mproc::detail::type_fingerprint<std::int32_t>(), 4, 0xdeadbeef) + payload);
  peer.write(frame_of_type<std::int32_t>(payload));
  EXPECT_THROW(peer.conn.recv<std::int32_t>(), mproc::ProtocolError);
  EXPECT_THROW(peer.conn.recv<std::int32_t>(), mproc::ProtocolError);
  EXPECT_THROW(peer.conn.recv_bytes(), mproc::ProtocolError);
}

TEST(ConnectionHostile, PlainTextIsAProtocolError) {
  RawPeer peer;
  peer.write("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_THROW(peer.conn.recv_bytes(), mproc::ProtocolError);
}

TEST(ConnectionHostile, AnUnknownVersionIsAProtocolError) {
  RawPeer peer;
  peer.write(header(0, 1, kMagic, 2) + "x");
  EXPECT_THROW(peer.conn.recv_bytes(), mproc::ProtocolError);
}

TEST(ConnectionHostile, ALengthOverTheLimitIsRefusedWithoutWaitingForThePayload) {
  RawPeer peer;
  peer.conn.set_max_message_size(1024);
  peer.write(header(0, 1025));  // no payload follows, and the writer stays open
  EXPECT_THROW(peer.conn.recv_bytes(), mproc::ProtocolError);
}

TEST(ConnectionHostile, ALengthOverTheDefaultLimitIsRefused) {
  RawPeer peer;
  peer.write(header(0, (std::uint64_t{1} << 30) + 1));
  EXPECT_THROW(peer.conn.recv_bytes(), mproc::ProtocolError);
  RawPeer peer2;
  peer2.write(header(0, ~std::uint64_t{0}));
  EXPECT_THROW(peer2.conn.recv_bytes(), mproc::ProtocolError);
}

TEST(ConnectionHostile, AClaimOfOneGiBWithoutPayloadIsATruncatedFrameNotAHugeAllocation) {
  RawPeer peer;
  long before = max_rss_kib();
  peer.write(header(0, std::uint64_t{1} << 30));  // exactly the default limit: allowed
  peer.close_writer();
  try {
    (void)peer.conn.recv_bytes();
    FAIL() << "expected ProtocolError";
  } catch (const mproc::EOFError& e) {
    FAIL() << "a peer that closes mid-frame is a ProtocolError, not EOFError: " << e.what();
  } catch (const mproc::ProtocolError& e) {
    EXPECT_NE(std::string(e.what()).find("truncated"), std::string::npos) << e.what();
  }
  long grown_kib = max_rss_kib() - before;
  EXPECT_LT(grown_kib, 256L * 1024) << "receiving a 24-byte header made the process grow by " << grown_kib << " KiB";
}

TEST(ConnectionHostile, AClaimOfATebibyteUnderARaisedLimitIsATruncatedFrameNotBadAlloc) {
  RawPeer peer;
  peer.conn.set_max_message_size(std::size_t{1} << 40);
  peer.write(header(0, std::uint64_t{1} << 40));
  peer.close_writer();
  EXPECT_THROW(peer.conn.recv_bytes(), mproc::ProtocolError);  // std::bad_alloc if the header were trusted
}

TEST(ConnectionHostile, ATruncatedHeaderIsAProtocolErrorNotEof) {
  RawPeer peer;
  peer.write(header(0, 4).substr(0, 10));
  peer.close_writer();
  EXPECT_THROW(peer.conn.recv_bytes(), mproc::ProtocolError);
}

TEST(ConnectionHostile, ATruncatedPayloadIsAProtocolErrorNotEof) {
  RawPeer peer;
  peer.write(header(0, 100) + std::string(50, 'p'));
  peer.close_writer();
  try {
    (void)peer.conn.recv_bytes();
    FAIL() << "expected ProtocolError";
  } catch (const mproc::EOFError& e) {
    FAIL() << "a peer that closes mid-frame is a ProtocolError, not EOFError: " << e.what();
  } catch (const mproc::ProtocolError& e) {
    EXPECT_NE(std::string(e.what()).find("truncated"), std::string::npos) << e.what();
  }
}

TEST(ConnectionHostile, AVectorCountLargerThanItsBytesIsAProtocolError) {
  RawPeer peer;
  std::string payload;
  append_pod(payload, std::uint64_t{1000});
  for (std::int32_t i : {1, 2, 3}) append_pod(payload, i);
  peer.write(frame_of_type<std::vector<int>>(payload));
  std::string huge;
  append_pod(huge, std::uint64_t{1} << 61);
  peer.write(frame_of_type<std::vector<int>>(huge));
  EXPECT_THROW(peer.conn.recv<std::vector<int>>(), mproc::ProtocolError);
  EXPECT_THROW(peer.conn.recv<std::vector<int>>(), mproc::ProtocolError);
}

TEST(ConnectionHostile, ABoolByteOfSevenIsAProtocolError) {
  RawPeer peer;
  peer.write(frame_of_type<bool>("\x07"));
  EXPECT_THROW(peer.conn.recv<bool>(), mproc::ProtocolError);
}

TEST(ConnectionHostile, TrailingGarbageAfterAValueIsAProtocolError) {
  RawPeer peer;
  std::string payload;
  append_pod(payload, std::int32_t{5});
  payload += "junk";
  peer.write(frame_of_type<std::int32_t>(payload));
  EXPECT_THROW(peer.conn.recv<std::int32_t>(), mproc::ProtocolError);
}

TEST(ConnectionHostile, AVariantIndexOutOfRangeIsAProtocolError) {
  RawPeer peer;
  std::string payload;
  append_pod(payload, std::int32_t{5});
  append_pod(payload, std::int32_t{0});
  using V = std::variant<int, std::string>;
  peer.write(frame_of_type<V>(payload));
  EXPECT_THROW(peer.conn.recv<V>(), mproc::ProtocolError);
}

TEST(ConnectionHostile, ATriviallyCopyableStructOfTheWrongSizeIsAProtocolError) {
  RawPeer peer;
  peer.write(frame_of_type<Point>(std::string(sizeof(Point) - 1, '\0')));
  EXPECT_THROW(peer.conn.recv<Point>(), mproc::ProtocolError);
}

TEST(ConnectionHostile, AFrameClaimingToCarryAConnectionIsAProtocolError) {
  // Descriptors only travel beside a start-up message; a slot number in a frame names nothing.
  RawPeer peer;
  std::string payload;
  append_pod(payload, std::int32_t{0});
  payload += '\x01';
  payload += '\x01';
  append_pod(payload, std::uint64_t{1} << 20);
  peer.write(frame_of_type<mproc::Connection>(payload));
  EXPECT_THROW(peer.conn.recv<mproc::Connection>(), mproc::ProtocolError);
}

TEST(ConnectionHostile, TheProcessKeepsWorkingAfterMalformedPayloads) {
  {
    RawPeer peer;
    peer.write(frame_of_type<bool>("\x07"));
    std::string payload;
    append_pod(payload, std::uint64_t{1} << 62);
    peer.write(frame_of_type<std::string>(payload));
    EXPECT_THROW(peer.conn.recv<bool>(), mproc::ProtocolError);
    EXPECT_THROW(peer.conn.recv<std::string>(), mproc::ProtocolError);
  }
  auto [a, b] = mproc::Pipe();
  a.send(std::vector<std::string>{"still", "fine"});
  EXPECT_EQ(b.recv<std::vector<std::string>>(), (std::vector<std::string>{"still", "fine"}));
}

// ----------------------------------------------------------------------------------------------
// Large messages: through shared memory on sockets, streamed on pipes

TEST(ConnectionLarge, TheDefaultThresholdIsOneMiBAndCanBeChanged) {
  auto [a, b] = mproc::Pipe();
  EXPECT_EQ(a.shared_memory_threshold(), mproc::Connection::kSharedMemoryThreshold);
  EXPECT_EQ(mproc::Connection::kSharedMemoryThreshold, std::size_t{1} << 20);
  a.set_shared_memory_threshold(4096);
  EXPECT_EQ(a.shared_memory_threshold(), 4096u);
}

TEST(ConnectionLarge, AMessageOfTheThresholdSizeGoesThroughSharedMemoryAndASmallerOneDoesNot) {
  auto [a, b] = mproc::Pipe();
  a.set_shared_memory_threshold(1000);
  auto below = patterned(999, 1), at = patterned(1000, 2), above = patterned(5000, 3);
  a.send_bytes(std::string_view(below));
  a.send_bytes(std::string_view(at));
  a.send_bytes(std::string_view(above));
  auto r1 = b.recv_buffer(), r2 = b.recv_buffer(), r3 = b.recv_buffer();
  EXPECT_FALSE(r1.is_shared_memory());
  EXPECT_TRUE(r2.is_shared_memory());
  EXPECT_TRUE(r3.is_shared_memory());
  EXPECT_EQ(text_of(r1), below);
  EXPECT_EQ(text_of(r2), at);
  EXPECT_EQ(text_of(r3), above);
}

TEST(ConnectionLarge, EveryReceiveCallReturnsTheExactBytesOfASharedMemoryMessage) {
  auto [a, b] = mproc::Pipe();
  const std::string big = patterned(3u << 20, 7);
  a.send_bytes(std::string_view(big));
  a.send_bytes(std::string_view(big));
  a.send_bytes(std::string_view(big));
  a.send(big);
  EXPECT_TRUE(text_of(b.recv_bytes()) == big);
  std::string into(big.size() + 10, '.');
  EXPECT_EQ(b.recv_bytes_into(std::as_writable_bytes(std::span(into)), 10), big.size());
  EXPECT_TRUE(into.substr(10) == big);
  EXPECT_EQ(into.substr(0, 10), std::string(10, '.'));
  auto buf = b.recv_buffer();
  EXPECT_TRUE(buf.is_shared_memory());
  EXPECT_TRUE(text_of(buf) == big);
  EXPECT_TRUE(b.recv<std::string>() == big);
}

TEST(ConnectionLarge, AHeldBufferIsNeverOverwrittenAndAReleasedOneIsReused) {
  // The sender writes its next large message into the memory of one its receiver released
  // (src/reduction/shm_payload.hpp); never into one the receiver still holds.
  auto [a, b] = mproc::Pipe();
  const std::string first = patterned(2u << 20, 1), second = patterned(2u << 20, 2), third = patterned(2u << 20, 3);
  a.send_bytes(std::string_view(first));
  auto held = b.recv_buffer();
  ASSERT_TRUE(held.is_shared_memory());
  a.send_bytes(std::string_view(second));
  auto next = b.recv_buffer();
  EXPECT_NE(next.data(), held.data());
  EXPECT_TRUE(text_of(held) == first);
  EXPECT_TRUE(text_of(next) == second);
  const std::byte* released = held.data();
  held.reset();
  a.send_bytes(std::string_view(third));
  auto again = b.recv_buffer();
  EXPECT_EQ(again.data(), released);  // the same slab, still mapped by the receiving end
  EXPECT_TRUE(text_of(again) == third);
  EXPECT_TRUE(text_of(next) == second);
  next.reset();
  again.reset();
  a.send(std::string(first));  // recv<T> and recv_bytes release too
  EXPECT_TRUE(b.recv<std::string>() == first);
  a.send_bytes(std::string_view(second));
  EXPECT_TRUE(text_of(b.recv_bytes()) == second);
}

TEST(ConnectionLarge, SmallAndLargeMessagesInterleavedArriveInOrder) {
  // Descriptors arrive with whatever bytes one read returns; each must go to its own frame.
  auto [a, b] = mproc::Pipe();
  a.set_shared_memory_threshold(300);
  std::vector<std::string> sent;
  for (unsigned i = 0; i < 200; ++i) sent.push_back(patterned(i % 3 == 0 ? 250 + i * 7 : 3 + i, i));
  std::thread sender([&, &a = a] {
    for (const auto& m : sent) a.send_bytes(std::string_view(m));
  });
  std::vector<std::string> got;
  for (std::size_t i = 0; i < sent.size(); ++i) got.push_back(text_of(b.recv_bytes()));
  sender.join();
  EXPECT_TRUE(got == sent);
}

TEST(ConnectionLarge, ALargeTypedValueArrivesIntact) {
  auto [a, b] = mproc::Pipe();
  std::vector<std::int64_t> v(1u << 20);
  for (std::size_t i = 0; i < v.size(); ++i) v[i] = static_cast<std::int64_t>(i * i) - 12345;
  a.send(v);
  EXPECT_TRUE(b.recv<std::vector<std::int64_t>>() == v);
}

TEST(ConnectionLarge, ASharedMemoryMessageOfTheWrongTypeIsKeptForRecvBytes) {
  auto [a, b] = mproc::Pipe();
  const std::string big = patterned(2u << 20);
  a.send(big);
  EXPECT_THROW(b.recv<int>(), mproc::TypeMismatchError);
  EXPECT_TRUE(b.poll());
  EXPECT_TRUE(b.recv<std::string>() == big);
}

TEST(ConnectionLarge, ASharedMemoryMessageThatDoesNotFitIsKept) {
  auto [a, b] = mproc::Pipe();
  const std::string big = patterned(2u << 20);
  a.send_bytes(std::string_view(big));
  std::vector<std::byte> small(100);
  EXPECT_THROW(b.recv_bytes_into(small), mproc::BufferTooShort);
  EXPECT_THROW(b.recv_buffer(1000), mproc::ProtocolError);
  EXPECT_THROW(b.recv_bytes(1000), mproc::ProtocolError);
  EXPECT_TRUE(text_of(b.recv_bytes()) == big);
}

TEST(ConnectionLarge, TurningTheThresholdOffStreamsEveryMessage) {
  auto [a, b] = mproc::Pipe();
  a.set_shared_memory_threshold(std::numeric_limits<std::size_t>::max());
  const std::string big = patterned(4u << 20);
  std::thread sender([&, &a = a] { a.send_bytes(std::string_view(big)); });
  auto buf = b.recv_buffer();
  sender.join();
  EXPECT_FALSE(buf.is_shared_memory());
  EXPECT_TRUE(text_of(buf) == big);
}

TEST(ConnectionLarge, AOneWayPipeIsASocketAndCarriesSharedMemory) {
  // Python's Pipe(duplex=False) is an os.pipe(); mproc's is a socket pair, so it takes the fast path.
  auto [r, w] = mproc::Pipe(false);
  const std::string big = patterned(2u << 20);
  w.send_bytes(std::string_view(big));
  auto buf = r.recv_buffer();
  EXPECT_TRUE(buf.is_shared_memory());
  EXPECT_TRUE(text_of(buf) == big);
}

TEST(ConnectionLarge, APlainPipeStreamsLargeMessagesIntact) {
  int p[2];
  ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
  mproc::Connection r(p[0], true, false), w(p[1], false, true);
  const std::string big = patterned(20u << 20, 5);  // past the 16 MiB a header is trusted with
  std::thread sender([&] {
    w.send_bytes(std::string_view(big));
    w.send_bytes(std::string_view(big));
    w.send(big);
    w.send_bytes(std::string_view(big));
  });
  auto buf = r.recv_buffer();
  EXPECT_FALSE(buf.is_shared_memory());
  EXPECT_TRUE(text_of(buf) == big);
  EXPECT_TRUE(text_of(r.recv_bytes()) == big);
  EXPECT_TRUE(r.recv<std::string>() == big);
  std::string into(big.size(), '\0');
  EXPECT_EQ(r.recv_bytes_into(std::as_writable_bytes(std::span(into))), big.size());
  sender.join();
  EXPECT_TRUE(into == big);
}

TEST(ConnectionLarge, ABufferOwnsItsBytesAfterTheConnectionIsGone) {
  mproc::Buffer buf;
  const std::string big = patterned(2u << 20);
  {
    auto [a, b] = mproc::Pipe();
    a.send_bytes(std::string_view(big));
    buf = b.recv_buffer();
  }
  EXPECT_TRUE(text_of(buf) == big);
  mproc::Buffer moved = std::move(buf);
  EXPECT_TRUE(buf.empty());
  EXPECT_TRUE(text_of(moved) == big);
  moved.reset();
  EXPECT_EQ(moved.size(), 0u);
}

TEST(ConnectionLarge, ReceivingLeavesNoDescriptorOrMappingBehindOnAnyPath) {
  const std::size_t fds_before = count_open_fds(), maps_before = count_message_mappings();
  {
    auto [a, b] = mproc::Pipe();
    const std::string big = patterned(2u << 20);
    for (int i = 0; i < 6; ++i) a.send_bytes(std::string_view(big));
    a.send(big);
    (void)b.recv_bytes();
    std::string into(big.size(), '\0');
    (void)b.recv_bytes_into(std::as_writable_bytes(std::span(into)));
    { auto buf = b.recv_buffer(); }
    EXPECT_THROW(b.recv<int>(), mproc::TypeMismatchError);            // kept as pending
    EXPECT_THROW(b.recv<std::vector<int>>(), mproc::TypeMismatchError);  // still pending
    (void)b.recv_bytes();
    EXPECT_THROW(b.recv<std::vector<std::int64_t>>(), mproc::TypeMismatchError);
    // The pending message and the last two are never read: closing must release them.
  }
  EXPECT_EQ(count_open_fds(), fds_before);
  EXPECT_EQ(count_message_mappings(), maps_before);
}

TEST(ConnectionLarge, AWriterFarAheadOfItsReaderWaitsForIt) {
  // Back-pressure: a memfd frame takes 24 bytes of the socket buffer, so without a limit a
  // writer could leave any amount of memory in unread messages.
  auto [a, b] = mproc::Pipe();
  const std::string big = patterned(24u << 20);
  std::atomic<int> sent{0};
  std::thread sender([&, &a = a] {
    for (int i = 0; i < 5; ++i) {
      a.send_bytes(std::string_view(big));
      ++sent;
    }
  });
  while (sent.load() < 2) std::this_thread::sleep_for(1ms);
  std::this_thread::sleep_for(100ms);  // room to run ahead, were it allowed to
  EXPECT_LE(sent.load(), 3) << "the writer ran far more than 64 MiB ahead of a reader that read nothing";
  for (int i = 0; i < 5; ++i) EXPECT_TRUE(text_of(b.recv_buffer()) == big);
  sender.join();
  EXPECT_EQ(sent.load(), 5);
}

// ----------------------------------------------------------------------------------------------
// Hostile shared-memory frames (forged on a raw socket)

std::string memfd_header(std::uint64_t length, std::uint64_t type = 0) { return header(type, length, kMagic, kVersionInMemfd); }

void expect_protocol_error(mproc::Connection& conn, const std::string& fragment) {
  try {
    (void)conn.recv_bytes();
    FAIL() << "expected ProtocolError mentioning '" << fragment << "'";
  } catch (const mproc::ProtocolError& e) {
    EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
  }
}

TEST(ConnectionHostileSharedMemory, AForgedButCorrectFrameIsAccepted) {
  // The baseline for the tests below: the layout they forge is the real one.
  RawPeer peer;
  const std::string body = patterned(5000);
  int m = memfd_holding(body, kAllSeals);
  peer.write_with_fds(memfd_header(body.size()), {m});
  ::close(m);
  auto buf = peer.conn.recv_buffer();
  EXPECT_TRUE(buf.is_shared_memory());
  EXPECT_TRUE(text_of(buf) == body);
}

TEST(ConnectionHostileSharedMemory, ADescriptorThatIsNotAMemfdIsRefusedAndTheNextMessageStillArrives) {
  RawPeer peer;
  int p[2];
  ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
  peer.write_with_fds(memfd_header(10), {p[0]});
  peer.write(header(0, 2) + "ok");
  ::close(p[0]);
  ::close(p[1]);
  expect_protocol_error(peer.conn, "not a memfd: it is a pipe");
  EXPECT_EQ(text_of(peer.conn.recv_bytes()), "ok");
}

TEST(ConnectionHostileSharedMemory, ARegularFileIsRefused) {
  RawPeer peer;
  int f = ::open("/tmp", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
  if (f < 0) GTEST_SKIP() << "no O_TMPFILE here";
  ASSERT_EQ(::write(f, "0123456789", 10), 10);
  peer.write_with_fds(memfd_header(10), {f});
  ::close(f);
  try {
    (void)peer.conn.recv_bytes();
    FAIL() << "expected ProtocolError";
  } catch (const mproc::ProtocolError& e) {
    // On disk: no seals at all. On tmpfs: a file born with F_SEAL_SEAL and nothing else.
    std::string what = e.what();
    EXPECT_TRUE(what.find("not a memfd") != std::string::npos || what.find("lacks F_SEAL_SHRINK") != std::string::npos) << what;
  }
}

TEST(ConnectionHostileSharedMemory, AnUnsealedMemfdIsRefused) {
  RawPeer peer;
  int m = memfd_holding("0123456789", 0);
  peer.write_with_fds(memfd_header(10), {m});
  ::close(m);
  expect_protocol_error(peer.conn, "lacks F_SEAL_SHRINK, F_SEAL_GROW");
}

TEST(ConnectionHostileSharedMemory, AMemfdThatCannotBeSealedIsRefused) {
  RawPeer peer;
  int m = memfd_holding("0123456789", -1);
  peer.write_with_fds(memfd_header(10), {m});
  ::close(m);
  expect_protocol_error(peer.conn, "lacks F_SEAL_SHRINK, F_SEAL_GROW");
}

TEST(ConnectionHostileSharedMemory, AMemfdItsSenderCanStillGrowIsRefused) {
  RawPeer peer;
  int m = memfd_holding("0123456789", F_SEAL_SHRINK);
  peer.write_with_fds(memfd_header(10), {m});
  ::close(m);
  expect_protocol_error(peer.conn, "lacks F_SEAL_GROW");
}

TEST(ConnectionHostileSharedMemory, AMemfdSealedAgainstWritingIsRefused) {
  // Its head could not be written: mapping it writable would fail, writing a read-only mapping crash.
  RawPeer peer;
  int m = memfd_holding("0123456789", F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE);
  peer.write_with_fds(memfd_header(10), {m});
  peer.write_with_fds(memfd_header(10), {m});
  ::close(m);
  expect_protocol_error(peer.conn, "is sealed against writing");
  try {
    (void)peer.conn.recv_buffer();
    FAIL() << "expected ProtocolError";
  } catch (const mproc::ProtocolError& e) {
    EXPECT_NE(std::string(e.what()).find("is sealed against writing"), std::string::npos) << e.what();
  }
}

TEST(ConnectionHostileSharedMemory, ASlabTooSmallForTheHeaderIsRefused) {
  RawPeer peer;
  int m = memfd_holding(patterned(100), kAllSeals);
  peer.write_with_fds(memfd_header(200), {m});
  peer.write_with_fds(memfd_header(50), {m});  // a slab larger than its payload is how slabs are reused
  ::close(m);
  expect_protocol_error(peer.conn, "holds 4196 bytes, too few for a head of 4096 and the 200 the frame announces");
  EXPECT_EQ(text_of(peer.conn.recv_bytes()), patterned(100).substr(0, 50));
}

TEST(ConnectionHostileSharedMemory, AnEmptySharedMemoryFrameIsRefused) {
  RawPeer peer;
  int m = memfd_holding("", kAllSeals);
  peer.write_with_fds(memfd_header(0), {m});
  ::close(m);
  expect_protocol_error(peer.conn, "announces 0 bytes");
}

TEST(ConnectionHostileSharedMemory, ASharedMemoryHeaderWithoutADescriptorBreaksTheConnection) {
  RawPeer peer;
  peer.write(memfd_header(10));
  peer.write(header(0, 2) + "ok");
  expect_protocol_error(peer.conn, "no descriptor came with it");
  EXPECT_THROW(peer.conn.recv_bytes(), mproc::ProtocolError);
}

TEST(ConnectionHostileSharedMemory, ADescriptorWithoutASharedMemoryHeaderBreaksTheConnection) {
  const std::size_t fds_before = count_open_fds();
  {
    RawPeer peer;
    int m = memfd_holding("abc", kAllSeals);
    peer.write_with_fds(header(0, 3) + "abc", {m});
    ::close(m);
    peer.write(header(0, 2) + "ok");
    expect_protocol_error(peer.conn, "a descriptor arrived that no frame announced");
    EXPECT_THROW(peer.conn.recv_bytes(), mproc::ProtocolError);
  }
  EXPECT_EQ(count_open_fds(), fds_before);
}

TEST(ConnectionHostileSharedMemory, ADescriptorBeforeThePeerClosesIsAProtocolErrorNotEof) {
  RawPeer peer;
  int m = memfd_holding("abc", kAllSeals);
  peer.write_with_fds(header(0, 3) + "abc", {m});
  ::close(m);
  peer.close_writer();
  expect_protocol_error(peer.conn, "a descriptor arrived that no frame announced");
}

TEST(ConnectionHostileSharedMemory, TwoDescriptorsWithOneHeaderBreakTheConnection) {
  RawPeer peer;
  int m1 = memfd_holding("0123456789", kAllSeals), m2 = memfd_holding("0123456789", kAllSeals);
  peer.write_with_fds(memfd_header(10), {m1, m2});
  ::close(m1);
  ::close(m2);
  expect_protocol_error(peer.conn, "2 descriptors came with one message");
}

TEST(ConnectionHostileSharedMemory, ATruncatedSharedMemoryHeaderIsAProtocolError) {
  const std::size_t fds_before = count_open_fds();
  {
    RawPeer peer;
    int m = memfd_holding("0123456789", kAllSeals);
    peer.write_with_fds(memfd_header(10).substr(0, 11), {m});
    ::close(m);
    peer.close_writer();
    expect_protocol_error(peer.conn, "truncated");
  }
  EXPECT_EQ(count_open_fds(), fds_before);
}

TEST(ConnectionHostileSharedMemory, UnknownFlagsAreAProtocolError) {
  RawPeer peer;
  peer.write(header(0, 1, kMagic, kVersion | (0x80u << 16)) + "x");
  expect_protocol_error(peer.conn, "unknown flags");
}

TEST(ConnectionHostileSharedMemory, APlainPipeRefusesASharedMemoryHeader) {
  int p[2];
  ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
  mproc::Connection r(p[0], true, false);
  std::string h = memfd_header(10);
  ASSERT_EQ(::write(p[1], h.data(), h.size()), static_cast<ssize_t>(h.size()));
  ::close(p[1]);
  expect_protocol_error(r, "cannot carry it");
}

TEST(ConnectionHostileSharedMemory, AReaderThatThrowsOnAMappedPayloadLeaksNothing) {
  const std::size_t fds_before = count_open_fds(), maps_before = count_message_mappings();
  {
    RawPeer peer;
    std::string bad;
    append_pod(bad, std::uint64_t{1} << 40);  // a vector claiming 2^40 elements
    bad += patterned(2u << 20);
    int m = memfd_holding(bad, kAllSeals);
    peer.write_with_fds(memfd_header(bad.size(), mproc::detail::type_fingerprint<std::vector<int>>()), {m});
    ::close(m);
    EXPECT_THROW(peer.conn.recv<std::vector<int>>(), mproc::ProtocolError);
  }
  EXPECT_EQ(count_open_fds(), fds_before);
  EXPECT_EQ(count_message_mappings(), maps_before);
}

TEST(ConnectionHostileSharedMemory, ASenderRewritingItsSlabUnderADecodeSendsGarbageNotACrash) {
  // A sender keeps write access to its slabs (src/reduction/shm_payload.hpp). The receiver decodes
  // a mapped payload in place, as a pool worker does, reading each byte once before believing it:
  // a sender that rewrites the sizes under it gets a value or a ProtocolError, never a read out of
  // bounds (the sanitizer builds run this too). The rewriting is another process, as it would be.
  using T = std::vector<std::string>;
  constexpr std::size_t kStrings = 64, kLength = 1000;
  std::string payload;
  mproc::detail::encode(payload, T(kStrings, std::string(kLength, 'v')));
  const std::size_t fds_before = count_open_fds();
  int m = memfd_holding(payload, kAllSeals);
  void* map = ::mmap(nullptr, 4096 + payload.size(), PROT_READ | PROT_WRITE, MAP_SHARED, m, 0);
  ASSERT_NE(map, MAP_FAILED);
  pid_t scribbler = ::fork();
  ASSERT_GE(scribbler, 0);
  if (scribbler == 0) {
    // Size tags (the vector's, then each string's) get random values, or their own back.
    auto* p = static_cast<unsigned char*>(map) + 4096;
    std::uint64_t x = 88172645463325252ull;
    for (long i = 0; i < 200'000'000; ++i) {  // bounded: the parent kills it long before
      x ^= x << 13, x ^= x >> 7, x ^= x << 17;
      std::size_t k = x % (kStrings + 1);
      std::size_t at = k == 0 ? 0 : 8 + (k - 1) * (8 + kLength);
      std::uint64_t v = (x >> 8) % 3 == 0 ? (k == 0 ? kStrings : kLength) : x >> (x % 60);
      std::memcpy(p + at, &v, sizeof v);
    }
    ::_exit(0);
  }
  int values = 0, refused = 0;
  {
    RawPeer peer;
    for (int i = 0; i < 20000 && refused < 20; ++i) {  // until the scribbler was caught at work
      peer.write_with_fds(memfd_header(payload.size(), mproc::detail::type_fingerprint<T>()), {m});
      auto buf = peer.conn.recv_buffer();
      ASSERT_TRUE(buf.is_shared_memory());
      try {
        T v = mproc::detail::decode<T>(buf.data(), buf.size());
        EXPECT_LE(v.size(), kStrings);
        ++values;
      } catch (const mproc::ProtocolError&) {
        ++refused;
      }
    }
  }
  ::kill(scribbler, SIGKILL);
  int status = 0;
  ASSERT_EQ(::waitpid(scribbler, &status, 0), scribbler);
  ::munmap(map, 4096 + payload.size());
  ::close(m);
  EXPECT_EQ(refused, 20) << values << " values: the sizes were never caught changed, the test did not test";
  EXPECT_EQ(count_open_fds(), fds_before);
}

// ----------------------------------------------------------------------------------------------
// Connections passed to child processes, under every start method

void child_echo(mproc::Connection conn) {
  auto s = conn.recv<std::string>();
  conn.send(s + " back");
}

void child_relay(mproc::Connection in, mproc::Connection out) {
  int v = in.recv<int>();
  out.send(std::make_tuple(v * 2, in.readable(), in.writable(), out.readable(), out.writable(),
                           static_cast<std::uint64_t>(in.max_message_size())));
}

void child_loopback(mproc::Connection x1, mproc::Connection x2, mproc::Connection y1, mproc::Connection y2) {
  x1.send(std::string("through x"));
  y2.send(std::string("through y"));
  auto from_x = x2.recv<std::string>();
  auto from_y = y1.recv<std::string>();
  x2.send(from_x + " and " + from_y);
}

void child_does_nothing(mproc::Connection) {}

// Receives a large message each way it can and sends back what it saw, also large.
void child_large_echo(mproc::Connection conn) {
  auto raw = conn.recv_bytes();
  auto buf = conn.recv_buffer();
  auto typed = conn.recv<std::vector<std::uint32_t>>();
  std::string into(raw.size(), '\0');
  std::size_t n = conn.recv_bytes_into(std::as_writable_bytes(std::span(into)));
  conn.send(std::make_tuple(buf.is_shared_memory(), n));
  conn.send_bytes(raw);
  conn.send_bytes(buf.span());
  for (auto& x : typed) x = ~x;
  conn.send(typed);
  conn.send_bytes(std::string_view(into));
}

void child_sends_big_one_way(mproc::Connection conn, std::uint64_t n) {
  conn.send_bytes(std::string_view(patterned(n, 9)));
}

void child_sends_big(mproc::Connection conn, std::uint64_t n) {
  std::vector<std::uint8_t> v(n);
  for (std::uint64_t i = 0; i < n; ++i) v[i] = static_cast<std::uint8_t>(i % 253);
  conn.send(v);
}

class ConnectionInChild : public ::testing::TestWithParam<const char*> {
 protected:
  mproc::Context ctx() const { return mproc::get_context(GetParam()); }
};

TEST_P(ConnectionInChild, TheChildReceivesOnItsEndAndReplies) {
  auto [parent, child] = mproc::Pipe();
  auto p = ctx().Process(child_echo, child);
  p.start();
  child.close();
  parent.send(std::string("hello"));
  EXPECT_EQ(parent.recv<std::string>(), "hello back");
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
  EXPECT_THROW(parent.recv<std::string>(), mproc::EOFError);
}

TEST_P(ConnectionInChild, TheChildGetsEndsOfTwoPipesWithTheirDirectionsAndLimit) {
  auto [in_r, in_w] = mproc::Pipe(false);
  auto [out_r, out_w] = mproc::Pipe(false);
  in_r.set_max_message_size(4096);
  auto p = ctx().Process(child_relay, in_r, out_w);
  p.start();
  in_r.close();
  out_w.close();
  in_w.send(21);
  auto got = out_r.recv<std::tuple<int, bool, bool, bool, bool, std::uint64_t>>();
  EXPECT_EQ(got, std::make_tuple(42, true, false, false, true, std::uint64_t{4096}));
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
}

TEST_P(ConnectionInChild, TheChildGetsBothEndsOfTwoPipes) {
  auto [x1, x2] = mproc::Pipe();
  auto [y1, y2] = mproc::Pipe();
  auto p = ctx().Process(child_loopback, x1, x2, y1, y2);
  p.start();
  y1.close();
  y2.close();
  x2.close();
  // x1 stays with the parent as well: the child's answer arrives on it.
  EXPECT_EQ(x1.recv<std::string>(), "through x and through y");
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
  x1.close();
}

TEST_P(ConnectionInChild, TheParentSeesEofWhenTheChildExits) {
  auto [parent, child] = mproc::Pipe();
  auto p = ctx().Process(child_does_nothing, child);
  p.start();
  child.close();
  EXPECT_THROW(parent.recv<int>(), mproc::EOFError);  // returns once the child's copy is gone
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
}

TEST_P(ConnectionInChild, LargeMessagesCrossBothWaysThroughSharedMemoryWithExactBytes) {
  auto [parent, child] = mproc::Pipe();
  auto p = ctx().Process(child_large_echo, child);
  p.start();
  child.close();
  const std::string big = patterned(3u << 20, 11);
  std::vector<std::uint32_t> words(1u << 20);
  for (std::size_t i = 0; i < words.size(); ++i) words[i] = static_cast<std::uint32_t>(i * 2654435761u);
  parent.send_bytes(std::string_view(big));
  parent.send_bytes(std::string_view(big));
  parent.send(words);
  parent.send_bytes(std::string_view(big));
  EXPECT_EQ((parent.recv<std::tuple<bool, std::size_t>>()), std::make_tuple(true, big.size()));
  auto raw = parent.recv_buffer();
  EXPECT_TRUE(raw.is_shared_memory());
  EXPECT_TRUE(text_of(raw) == big);
  EXPECT_TRUE(text_of(parent.recv_bytes()) == big);
  auto back = parent.recv<std::vector<std::uint32_t>>();
  ASSERT_EQ(back.size(), words.size());
  bool inverted = true;
  for (std::size_t i = 0; i < words.size(); ++i) inverted = inverted && back[i] == ~words[i];
  EXPECT_TRUE(inverted);
  EXPECT_TRUE(text_of(parent.recv_bytes()) == big);
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
}

TEST_P(ConnectionInChild, TheChildKeepsTheThresholdOfItsEnd) {
  auto [r, w] = mproc::Pipe(false);
  w.set_shared_memory_threshold(std::numeric_limits<std::size_t>::max());
  const std::uint64_t n = 2u << 20;
  auto p = ctx().Process(child_sends_big_one_way, w, n);
  p.start();
  w.close();
  auto buf = r.recv_buffer();
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
  EXPECT_FALSE(buf.is_shared_memory());
  EXPECT_TRUE(text_of(buf) == patterned(n, 9));
}

TEST_P(ConnectionInChild, ALargeMessageThroughAOneWayPipeUsesSharedMemory) {
  auto [r, w] = mproc::Pipe(false);
  const std::uint64_t n = 5u << 20;
  auto p = ctx().Process(child_sends_big_one_way, w, n);
  p.start();
  w.close();
  auto buf = r.recv_buffer();
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
  EXPECT_TRUE(buf.is_shared_memory());
  EXPECT_TRUE(text_of(buf) == patterned(n, 9));
  EXPECT_THROW(r.recv_bytes(), mproc::EOFError);
}

TEST_P(ConnectionInChild, ALargeMessageFromTheChildArrivesIntact) {
  auto [parent, child] = mproc::Pipe(false);
  const std::uint64_t n = 4u << 20;
  auto p = ctx().Process(child_sends_big, child, n);
  p.start();
  child.close();
  auto v = parent.recv<std::vector<std::uint8_t>>();
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
  ASSERT_EQ(v.size(), n);
  bool intact = true;
  for (std::uint64_t i = 0; i < n; ++i) intact = intact && v[i] == static_cast<std::uint8_t>(i % 253);
  EXPECT_TRUE(intact);
}

INSTANTIATE_TEST_SUITE_P(StartMethods, ConnectionInChild, ::testing::Values("fork", "spawn", "forkserver"),
                         [](const ::testing::TestParamInfo<const char*>& info) { return std::string(info.param); });

}  // namespace
