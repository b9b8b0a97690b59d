// Listener / Client: Unix paths, abstract names and loopback TCP (IPv4 and IPv6), the authkey
// handshake both ways, and a server that keeps serving after clients with wrong keys, no key
// or garbage.
#include <gtest/gtest.h>
#include <mproc/mproc.hpp>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>
#include <thread>
#include <vector>

#include "support/timeouts.hpp"

namespace {

using mproc::connection::Address;
using mproc::connection::Client;
using mproc::connection::Family;
using mproc::connection::Listener;

std::string outcome_of_client(const Address& a, std::optional<std::string> key) {
  try {
    auto c = Client(a, std::move(key));
    c.send(std::string("hello"));
    return c.recv<std::string>();
  } catch (const mproc::AuthenticationError&) {
    return "AuthenticationError";
  } catch (const std::exception& e) {
    return std::string("other: ") + e.what();
  }
}

// Serves `count` good clients: echoes one string each, upper-cased.
void serve(Listener& l, int count) {
  for (int i = 0; i < count; ++i) {
    auto c = l.accept();
    auto s = c.recv<std::string>();
    for (auto& ch : s) ch = static_cast<char>(std::toupper(ch));
    c.send(s);
  }
}

class ListenerFamilies : public ::testing::TestWithParam<std::string> {
 protected:
  mproc::connection::ListenerOptions options(std::optional<std::string> key) const {
    mproc::connection::ListenerOptions o;
    o.authkey = std::move(key);
    if (GetParam() == "tcp4") o.address = Address("127.0.0.1", 0);
    if (GetParam() == "tcp6") o.address = Address("::1", 0);
    if (GetParam() == "path") o.address = Address("mproc-test-" + std::to_string(::getpid()) + ".sock");
    return o;
  }
};

TEST_P(ListenerFamilies, ClientWithTheRightKeyTalksToTheServer) {
  std::string key = "sekrit";
  Listener sut(options(key));
  std::thread server([&] { serve(sut, 1); });
  EXPECT_EQ(outcome_of_client(sut.address(), key), "HELLO");
  server.join();
}

TEST_P(ListenerFamilies, WrongOrMissingKeyIsAuthenticationErrorAndTheServerKeepsServing) {
  Listener sut(options(std::string("right")));
  std::thread server([&] { serve(sut, 1); });
  EXPECT_EQ(outcome_of_client(sut.address(), std::string("wrong")), "AuthenticationError");
  EXPECT_EQ(outcome_of_client(sut.address(), std::nullopt), "AuthenticationError");
  EXPECT_EQ(outcome_of_client(sut.address(), std::string("right")), "HELLO");
  server.join();
}

TEST_P(ListenerFamilies, WithoutKeysNothingIsChecked) {
  Listener sut(options(std::nullopt));
  std::thread server([&] { serve(sut, 1); });
  EXPECT_EQ(outcome_of_client(sut.address(), std::nullopt), "HELLO");
  server.join();
}

TEST_P(ListenerFamilies, ClientWithAKeyRefusesAServerThatCannotProveOne) {
  Listener sut(options(std::nullopt));
  std::thread server([&] { EXPECT_TRUE(sut.accept(mproc::seconds(30)).has_value()); });
  EXPECT_EQ(outcome_of_client(sut.address(), std::string("key")), "AuthenticationError");
  server.join();
}

INSTANTIATE_TEST_SUITE_P(Families, ListenerFamilies, ::testing::Values("abstract", "path", "tcp4", "tcp6"));

TEST(Listener, DefaultAddressIsAnAbstractUnixName) {
  Listener sut;
  EXPECT_EQ(sut.address().family, Family::af_unix);
  EXPECT_TRUE(sut.address().is_abstract());
}

TEST(Listener, InetFamilyWithoutAddressPicksALoopbackPort) {
  Listener sut({.family = Family::af_inet});
  EXPECT_EQ(sut.address().host, "127.0.0.1");
  EXPECT_NE(sut.address().port, 0);
  std::thread server([&] { serve(sut, 1); });
  EXPECT_EQ(outcome_of_client(sut.address(), std::nullopt), "HELLO");
  server.join();
  ASSERT_TRUE(sut.last_accepted().has_value());
  EXPECT_EQ(sut.last_accepted()->host, "127.0.0.1");
}

TEST(Listener, GarbageAndSilentClientsAreDroppedAndTheServerKeepsServing) {
  Listener sut({.address = Address("127.0.0.1", 0), .authkey = std::string("k")});
  std::thread server([&] { serve(sut, 1); });
  {  // raw garbage instead of a reply
    int s = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(sut.address().port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(::connect(s, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    std::string junk(4096, '\x7f');
    (void)::write(s, junk.data(), junk.size());
    char buf[256];
    while (::read(s, buf, sizeof buf) > 0) {
    }
    ::close(s);
  }
  EXPECT_EQ(outcome_of_client(sut.address(), std::string("k")), "HELLO");
  server.join();
}

TEST(Listener, NobodyListeningIsConnectionError) {
  Address nowhere(std::string(1, '\0') + "mproc-test-nobody-" + std::to_string(::getpid()));
  EXPECT_THROW(Client(nowhere), mproc::ConnectionError);
}

TEST(Listener, AServerThatHangsUpDuringTheHandshakeIsAConnectionErrorNotARefusal) {
  int s = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  ASSERT_EQ(::listen(s, 1), 0);
  socklen_t len = sizeof a;
  ::getsockname(s, reinterpret_cast<sockaddr*>(&a), &len);
  std::thread server([&] { ::close(::accept(s, nullptr, nullptr)); });  // a server that dies before its greeting
  EXPECT_THROW(Client(Address("127.0.0.1", ntohs(a.sin_port)), std::string("k")), mproc::ConnectionError);
  server.join();
  ::close(s);
}

TEST(Listener, AcceptRefusesANaNTimeoutAndDoesNotWaitOnANegativeOne) {
  Listener sut;
  support::expect_nan_refused("Listener.accept", [&] { (void)sut.accept(mproc::seconds(support::kNaN)); });
  EXPECT_FALSE(sut.accept(mproc::seconds(-1)).has_value());
  EXPECT_FALSE(sut.accept(mproc::seconds(-support::kInf)).has_value());
}

TEST(Listener, AcceptWithTimeoutReturnsNothingWhenNobodyComes) {
  Listener sut;
  EXPECT_FALSE(sut.accept(mproc::seconds(0.05)).has_value());
}

TEST(Listener, CloseRemovesTheSocketFileAndAcceptThrows) {
  std::string path = "mproc-test-close-" + std::to_string(::getpid()) + ".sock";
  Listener sut({.address = Address(path)});
  EXPECT_EQ(::access(path.c_str(), F_OK), 0);
  sut.close();
  EXPECT_NE(::access(path.c_str(), F_OK), 0);
  EXPECT_THROW(sut.accept(), mproc::Error);
}

void child_client(Address a, std::string key, int n) {
  auto c = Client(a, key);
  c.send(n);
  if (c.recv<int>() != n * 2) std::exit(3);
}

class ListenerStartMethods : public ::testing::TestWithParam<std::string> {};

TEST_P(ListenerStartMethods, ChildrenConnectWithTheProcessAuthkey) {
  std::string key = mproc::current_process().authkey();
  Listener sut({.address = Address("127.0.0.1", 0), .authkey = key});
  auto ctx = mproc::get_context(GetParam());
  std::vector<mproc::Process> ps;
  for (int i = 0; i < 3; ++i) ps.push_back(ctx.Process(child_client, sut.address(), key, i + 1));
  for (auto& p : ps) p.start();
  int sum = 0;
  for (int i = 0; i < 3; ++i) {
    auto c = sut.accept();
    int n = c.recv<int>();
    sum += n;
    c.send(n * 2);
  }
  for (auto& p : ps) {
    p.join();
    EXPECT_EQ(p.exitcode(), 0);
  }
  EXPECT_EQ(sum, 6);
}

INSTANTIATE_TEST_SUITE_P(StartMethods, ListenerStartMethods, ::testing::Values("fork", "spawn", "forkserver"));

}  // namespace
