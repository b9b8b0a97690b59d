// The manager's request decoder (src/managers/dispatch.hpp) fed bytes directly, as a fuzz
// target feeds it: the version hello comes first (anything before it, or another version, is a
// version error); truncated, garbage, unknown and ill-typed requests get an error reply,
// blocking calls with no client end the exchange instead of hanging, and a session's locks and
// references go when it closes. No sockets, no processes: what reaches the decoder is exactly
// what the test wrote.
#include <gtest/gtest.h>
#include <mproc/managers.hpp>

#include <random>
#include <string>

#include "managers/dispatch.hpp"
#include "managers/protocol.hpp"

namespace {

namespace mgr = mproc::detail::mgr;
using mproc::detail::OutArchive;

template <class... F>
std::string request(mgr::Op op, const F&... fields) {
  std::string s;
  OutArchive ar(s);
  ar(static_cast<std::uint8_t>(op), fields...);
  return s;
}

template <class... F>
std::string call(std::uint64_t id, std::uint64_t type, const std::string& method, const F&... args) {
  return request(mgr::Op::call, id, type, method, args...);
}

struct Reply {
  mgr::Outcome outcome = mgr::Outcome::reply;
  int status = -1;  // 0 ok, 1 error, -1 none
  mgr::Err code = mgr::Err::error;
  std::string message;
  std::string payload;
};

std::string hello(std::uint32_t version = mgr::kProtocolVersion) { return request(mgr::Op::hello, version); }

// A dispatcher with one session (greeted with the version hello, as every client opens), for
// requests in byte form.
class ManagerRequests : public ::testing::Test {
 protected:
  ManagerRequests() { greet(session); }
  // What a client does first on each connection.
  void greet(mgr::Session& s) {
    std::string h = hello(), out;
    ASSERT_EQ(sut.handle(s, h.data(), h.size(), out), mgr::Outcome::reply);
    ASSERT_EQ(out.at(0), '\0') << "the hello was refused";
  }
  Reply send(const std::string& bytes) { return send_on(session, bytes); }
  Reply send_on(mgr::Session& s, const std::string& bytes) {
    std::string out;
    Reply r;
    r.outcome = sut.handle(s, bytes.data(), bytes.size(), out);
    if (r.outcome == mgr::Outcome::close) return r;
    EXPECT_FALSE(out.empty());
    r.status = static_cast<unsigned char>(out[0]);
    if (r.status == 1) {
      r.code = static_cast<mgr::Err>(out.at(1));
      mproc::detail::InArchive ar(out.data() + 2, out.size() - 2);
      ar(r.message);
    } else {
      r.payload = out.substr(1);
    }
    return r;
  }
  std::uint64_t create(const std::string& typeid_, std::uint64_t type, const std::string& args = {}) {
    Reply r = send(request(mgr::Op::create, typeid_, type) + args);
    EXPECT_EQ(r.status, 0) << r.message;
    return mproc::detail::decode<std::uint64_t>(r.payload.data(), r.payload.size());
  }
  void TearDown() override {
    sut.close_session(session);
    EXPECT_EQ(sut.number_of_objects(), 0u);  // every reference this test took went with the session
  }

  mgr::Dispatcher sut;
  mgr::Session session = sut.open_session();
  const std::uint64_t dict_type = mproc::detail::type_fingerprint<mproc::DictProxy<std::string, int>>();
};

TEST_F(ManagerRequests, AWellFormedCallIsAnswered) {
  auto id = create("dict", dict_type);
  EXPECT_EQ(send(call(id, dict_type, "set", mgr::blob(std::string("k")), mgr::blob(7))).status, 0);
  Reply r = send(call(id, dict_type, "get", mgr::blob(std::string("k"))));
  ASSERT_EQ(r.status, 0) << r.message;
  EXPECT_EQ(mproc::detail::decode<int>(r.payload.data(), r.payload.size()), 7);
}

TEST_F(ManagerRequests, EveryTruncationOfARequestIsAProtocolErrorAndChangesNothing) {
  auto id = create("dict", dict_type);
  std::string whole = call(id, dict_type, "set", mgr::blob(std::string("key")), mgr::blob(1));
  for (std::size_t n = 0; n < whole.size(); ++n) {
    Reply r = send(whole.substr(0, n));
    ASSERT_EQ(r.status, 1) << "truncated at " << n;
    EXPECT_TRUE(r.code == mgr::Err::protocol || r.code == mgr::Err::unknown_object || r.code == mgr::Err::type_mismatch ||
                r.code == mgr::Err::error)
        << "truncated at " << n << ": " << r.message;
  }
  Reply len = send(call(id, dict_type, "len"));
  EXPECT_EQ(mproc::detail::decode<std::uint64_t>(len.payload.data(), len.payload.size()), 0u);
}

TEST_F(ManagerRequests, TrailingBytesAfterTheArgumentsAreRefused) {
  auto id = create("dict", dict_type);
  Reply r = send(call(id, dict_type, "len") + "xyz");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.message.find("3 bytes left over"), std::string::npos) << r.message;
}

TEST_F(ManagerRequests, UnknownOpsMethodsObjectsAndTypeidsGetErrorsNamingThem) {
  auto id = create("dict", dict_type);
  Reply r = send(std::string(1, '\x7f'));
  EXPECT_EQ(r.code, mgr::Err::protocol);
  EXPECT_NE(r.message.find("127"), std::string::npos) << r.message;
  r = send(std::string());
  EXPECT_EQ(r.code, mgr::Err::protocol);
  r = send(call(id, dict_type, "no_such_method"));
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.message.find("no_such_method"), std::string::npos) << r.message;
  r = send(call(424242, dict_type, "len"));
  EXPECT_EQ(r.code, mgr::Err::unknown_object);
  EXPECT_NE(r.message.find("424242"), std::string::npos) << r.message;
  r = send(request(mgr::Op::create, std::string("NoSuchType"), std::uint64_t{1}));
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.message.find("NoSuchType"), std::string::npos) << r.message;
}

TEST_F(ManagerRequests, WrongTypesAreRefused) {
  auto id = create("dict", dict_type);
  EXPECT_EQ(send(call(id, std::uint64_t{12345}, "len")).code, mgr::Err::type_mismatch);  // a proxy of another type
  EXPECT_EQ(send(call(id, dict_type, "get", std::int64_t{5})).status, 1);               // an int where a key goes
  auto v = create("Value", dict_type, mgr::blob(mgr::blob(std::int32_t{1})));
  std::string delta(4, '\0');
  EXPECT_EQ(send(call(v, dict_type, "add", std::uint8_t{18}, delta)).code, mgr::Err::value);  // an 8-byte add, 4 bytes
  EXPECT_EQ(send(call(v, dict_type, "add", std::uint8_t{99}, delta)).code, mgr::Err::value);  // no such number type
  EXPECT_EQ(send(request(mgr::Op::create, std::string("Array"), dict_type, std::uint64_t{0}, std::string())).code,
            mgr::Err::value);  // elements of size 0
  EXPECT_EQ(send(request(mgr::Op::create, std::string("Barrier"), dict_type, std::int64_t{0}, -1.0)).code,
            mgr::Err::value);
  EXPECT_EQ(send(request(mgr::Op::create, std::string("Condition"), dict_type, id)).code,
            mgr::Err::type_mismatch);  // a dict is no lock
}

TEST_F(ManagerRequests, CountsLargerThanTheRequestAreRefusedBeforeAllocating) {
  auto id = create("dict", dict_type);
  Reply r = send(call(id, dict_type, "get_many", std::uint64_t{1} << 60));
  EXPECT_EQ(r.code, mgr::Err::protocol) << r.message;
  r = send(call(id, dict_type, "set", std::uint64_t{1} << 62));  // a key "of 2^62 bytes"
  EXPECT_EQ(r.code, mgr::Err::protocol) << r.message;
}

TEST_F(ManagerRequests, AForgedFunctionIsNotRun) {
  auto id = create("dict", dict_type);
  std::string forged;
  {
    OutArchive ar(forged);
    ar(mproc::detail::CodeRef{0x1234, 0x5678, {}});
  }
  EXPECT_EQ(send(call(id, dict_type, "update_with", mgr::blob(std::string("k")), forged)).code,
            mgr::Err::function_identity);
}

TEST_F(ManagerRequests, ABlockingCallWithNoClientEndsTheExchangeInsteadOfHanging) {
  const std::uint64_t q_type = 77;
  auto q = create("Queue", q_type, mgr::blob(std::int64_t{0}) + mgr::blob(false));
  EXPECT_EQ(send(call(q, q_type, "get", true, -1.0)).outcome, mgr::Outcome::close);
  EXPECT_EQ(send(call(q, q_type, "get", true, 3600.0)).outcome, mgr::Outcome::close);
  EXPECT_EQ(send(call(q, q_type, "get", false, -1.0)).code, mgr::Err::empty);
}

TEST_F(ManagerRequests, ShutdownAndInfoAreAnswered) {
  Reply r = send(request(mgr::Op::shutdown));
  EXPECT_EQ(r.outcome, mgr::Outcome::shutdown);
  EXPECT_EQ(r.status, 0);
  r = send(request(mgr::Op::info));
  EXPECT_EQ(r.status, 0);
  EXPECT_EQ(r.payload.size(), 4u + 8u);
}

TEST_F(ManagerRequests, ClosingASessionReleasesItsLocksAndReferences) {
  const std::uint64_t lock_type = 78;
  auto other = sut.open_session();
  greet(other);
  auto lock = create("Lock", lock_type);
  std::string out;
  std::string incref = request(mgr::Op::incref, lock);
  ASSERT_EQ(sut.handle(other, incref.data(), incref.size(), out), mgr::Outcome::reply);
  EXPECT_EQ(send(call(lock, lock_type, "acquire", true, -1.0)).payload, std::string(1, '\1'));
  std::string try_lock = call(lock, lock_type, "acquire", false, -1.0);
  ASSERT_EQ(sut.handle(other, try_lock.data(), try_lock.size(), out), mgr::Outcome::reply);
  EXPECT_EQ(out, std::string("\0\0", 2));  // held by the first session
  sut.close_session(session);
  session = sut.open_session();
  greet(session);
  EXPECT_EQ(sut.number_of_objects(), 1u);  // the other session still holds it
  ASSERT_EQ(sut.handle(other, try_lock.data(), try_lock.size(), out), mgr::Outcome::reply);
  EXPECT_EQ(out, std::string("\0\1", 2));  // released with the session that held it
  sut.close_session(other);
}

TEST_F(ManagerRequests, ADecrefOfAReferenceTheSessionDoesNotHoldIsIgnored) {
  auto other = sut.open_session();
  greet(other);
  auto id = create("dict", dict_type);
  std::string out;
  std::string decref = request(mgr::Op::decref, id);
  ASSERT_EQ(sut.handle(other, decref.data(), decref.size(), out), mgr::Outcome::reply);
  EXPECT_EQ(sut.number_of_objects(), 1u);
  sut.close_session(other);
}

TEST_F(ManagerRequests, TheHelloIsAnsweredWithTheServersProtocolVersion) {
  auto fresh = sut.open_session();
  Reply r = send_on(fresh, hello());
  ASSERT_EQ(r.status, 0) << r.message;
  EXPECT_EQ(mproc::detail::decode<std::uint32_t>(r.payload.data(), r.payload.size()), mgr::kProtocolVersion);
  EXPECT_EQ(send_on(fresh, request(mgr::Op::info)).status, 0);  // and the session is served
  sut.close_session(fresh);
}

TEST_F(ManagerRequests, AHelloOfAnotherVersionIsAVersionErrorNamingBothVersions) {
  auto fresh = sut.open_session();
  Reply r = send_on(fresh, hello(999));
  ASSERT_EQ(r.status, 1);
  EXPECT_EQ(r.code, mgr::Err::version);
  EXPECT_NE(r.message.find("manager protocol version 999, server speaks " + std::to_string(mgr::kProtocolVersion)),
            std::string::npos)
      << r.message;
  r = send_on(fresh, request(mgr::Op::create, std::string("dict"), dict_type));  // still not served
  EXPECT_EQ(r.code, mgr::Err::version) << r.message;
  sut.close_session(fresh);
}

TEST_F(ManagerRequests, RequestsBeforeTheHelloAreVersionErrorsAndChangeNothing) {
  auto fresh = sut.open_session();
  for (const auto& req : {request(mgr::Op::create, std::string("dict"), dict_type), request(mgr::Op::info),
                          request(mgr::Op::shutdown)}) {
    Reply r = send_on(fresh, req);
    ASSERT_EQ(r.outcome, mgr::Outcome::reply);  // not even a shutdown is obeyed
    ASSERT_EQ(r.status, 1);
    EXPECT_EQ(r.code, mgr::Err::version);
    // What a version-1 client (which has no hello) is told.
    EXPECT_NE(r.message.find("manager protocol version 1, server speaks " + std::to_string(mgr::kProtocolVersion)),
              std::string::npos)
        << r.message;
    EXPECT_NE(r.message.find("before the version hello"), std::string::npos) << r.message;
  }
  EXPECT_EQ(sut.number_of_objects(), 0u);
  sut.close_session(fresh);
}

// register_type refuses the names in kBuiltinTypeids because the server makes those itself:
// each must be one it knows (made, or refused for its missing arguments, never "no typeid").
TEST_F(ManagerRequests, EveryNameRegisterTypeRefusesAsBuiltinIsOneTheServerMakes) {
  for (std::string_view name : mgr::kBuiltinTypeids) {
    Reply r = send(request(mgr::Op::create, std::string(name), std::uint64_t{90}));
    EXPECT_FALSE(r.status == 1 && r.code == mgr::Err::key) << name << ": " << r.message;
  }
  Reply r = send(request(mgr::Op::create, std::string("Dict"), std::uint64_t{90}));  // names are exact
  EXPECT_EQ(r.code, mgr::Err::key) << r.message;
  EXPECT_NE(r.message.find("no typeid 'Dict'"), std::string::npos) << r.message;
}

TEST_F(ManagerRequests, RandomBytesAndMutatedRequestsNeverCrashTheDecoder) {
  auto d = create("dict", dict_type);
  const std::uint64_t types[] = {dict_type, 70, 71, 72};
  auto l = create("list", 70, mgr::blob(std::vector<std::string>{mgr::blob(1)}));
  auto v = create("Value", 71, mgr::blob(mgr::blob(std::int64_t{1})));
  auto a = create("Array", 72, mgr::blob(std::uint64_t{8}) + mgr::blob(std::string(16, '\0')));
  const std::uint64_t ids[] = {d, l, v, a};
  const char* methods[] = {"get", "set", "getopt", "get_many", "set_many", "items", "add", "update_with", "pop",
                           "insert", "extend", "remove", "index", "assign", "len", "keys", "popopt", "del"};
  std::mt19937_64 rng(9);
  for (int i = 0; i < 20000; ++i) {
    std::string bytes;
    if (i % 2 == 0) {
      std::size_t k = rng() % 4;
      bytes = call(ids[k], types[k], methods[rng() % std::size(methods)]);
    }
    std::size_t n = rng() % 48;
    for (std::size_t j = 0; j < n; ++j) bytes.push_back(static_cast<char>(rng() % 4 == 0 ? 0 : rng()));
    if (!bytes.empty() && (bytes[0] == static_cast<char>(mgr::Op::incref) || bytes[0] == static_cast<char>(mgr::Op::create)))
      bytes[0] = static_cast<char>(mgr::Op::info);  // legal ones that would only grow the table
    Reply r = send(bytes);
    ASSERT_NE(r.outcome, mgr::Outcome::close) << "request " << i;  // nothing here blocks
    ASSERT_TRUE(r.status == 0 || r.status == 1) << "request " << i;
  }
  EXPECT_LE(sut.number_of_objects(), 4u);  // random decrefs may have let some go; nothing leaked
}

}  // namespace
