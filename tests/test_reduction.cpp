// The serialisation layer on its own: encode / decode, type fingerprints, function identities
// and saved tasks. Bytes here stand for what another process wrote on a channel, so every
// malformed input must end in a ProtocolError (or its FunctionIdentityError), never in a crash,
// a huge allocation or a call.
#include <gtest/gtest.h>
#include <mproc/mproc.hpp>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cmath>
#include <complex>
#include <cstdint>
#include <cstring>
#include <deque>
#include <limits>
#include <list>
#include <map>
#include <optional>
#include <ostream>
#include <random>
#include <set>
#include <string>
#include <tuple>
#include <type_traits>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <variant>
#include <vector>

#include "connection_access.hpp"
#include "reduction/shm_payload.hpp"
#include "reduction/wire.hpp"

namespace {

using mproc::detail::decode;
using mproc::detail::encode;

// ----------------------------------------------------------------------------------------------
// Types and helpers

struct Person {
  std::string name;
  int age = 0;
  std::vector<std::string> tags;
  std::optional<double> score;
  template <class A>
  void serialize(A& a) {
    a(name, age, tags, score);
  }
  bool operator==(const Person&) const = default;
};
std::ostream& operator<<(std::ostream& os, const Person& p) {
  return os << "Person{" << p.name << ", " << p.age << ", " << p.tags.size() << " tags}";
}

// Trivially copyable, no serialize(): travels as its bytes.
struct Point {
  double x = 0, y = 0;
  std::int32_t id = 0;
  char label = 0;
  bool operator==(const Point&) const = default;
};
std::ostream& operator<<(std::ostream& os, const Point& p) {
  return os << "Point{" << p.x << ", " << p.y << ", " << p.id << ", " << int(p.label) << "}";
}
static_assert(mproc::detail::is_memcpy_type<Point>);
static_assert(!mproc::detail::is_memcpy_type<Person>);

// An empty user type with a serialize(): zero bytes on the wire.
struct Marker {
  template <class A>
  void serialize(A&) {}
  bool operator==(const Marker&) const = default;
};

enum class Colour : std::uint8_t { red = 1, green = 2, blue = 3 };

template <class T>
std::string encoded(const T& v) {
  std::string out;
  encode(out, v);
  return out;
}

template <class T>
T round_trip(const T& v) {
  std::string bytes = encoded(v);
  return decode<T>(bytes.data(), bytes.size());
}

template <class T>
void append_pod(std::string& out, const T& v) {
  out.append(reinterpret_cast<const char*>(&v), sizeof v);
}

// cereal's size tags are 64-bit on the wire (cereal::size_type).
void append_count(std::string& out, std::uint64_t n) { append_pod(out, n); }

template <class T>
void expect_every_prefix_rejected(const T& value) {
  std::string bytes = encoded(value);
  ASSERT_FALSE(bytes.empty());
  for (std::size_t n = 0; n < bytes.size(); ++n)
    EXPECT_THROW((void)decode<T>(bytes.data(), n), mproc::ProtocolError) << "prefix of " << n << " of " << bytes.size() << " bytes";
}

template <class T>
void expect_trailing_rejected(const T& value) {
  std::string bytes = encoded(value) + "x";
  EXPECT_THROW((void)decode<T>(bytes.data(), bytes.size()), mproc::ProtocolError);
}

using Nested = std::vector<std::map<std::string, std::vector<std::optional<int>>>>;

Nested make_nested() {
  return {{{"a", {1, std::nullopt, 3}}, {"", {}}}, {}, {{"z", {std::nullopt}}}};
}

// ----------------------------------------------------------------------------------------------
// Round trips

TEST(ReductionRoundTrip, ArithmeticValuesComeBackBitForBit) {
  EXPECT_EQ(round_trip(42), 42);
  EXPECT_EQ(round_trip(std::numeric_limits<std::int64_t>::min()), std::numeric_limits<std::int64_t>::min());
  EXPECT_EQ(round_trip(std::numeric_limits<std::uint64_t>::max()), std::numeric_limits<std::uint64_t>::max());
  EXPECT_EQ(round_trip(static_cast<char>(-1)), static_cast<char>(-1));
  EXPECT_EQ(round_trip(static_cast<std::int8_t>(-128)), static_cast<std::int8_t>(-128));
  EXPECT_EQ(round_trip(true), true);
  EXPECT_EQ(round_trip(false), false);
  EXPECT_EQ(round_trip(3.25), 3.25);
  EXPECT_EQ(round_trip(1.5f), 1.5f);
  EXPECT_EQ(round_trip(std::numeric_limits<double>::infinity()), std::numeric_limits<double>::infinity());
  EXPECT_TRUE(std::isnan(round_trip(std::numeric_limits<double>::quiet_NaN())));
  double negative_zero = round_trip(-0.0);
  EXPECT_EQ(negative_zero, 0.0);
  EXPECT_TRUE(std::signbit(negative_zero));
}

TEST(ReductionRoundTrip, ArithmeticValuesUseTheirNativeSize) {
  EXPECT_EQ(encoded(std::int32_t{7}).size(), 4u);
  EXPECT_EQ(encoded(std::int64_t{7}).size(), 8u);
  EXPECT_EQ(encoded(true).size(), 1u);
  EXPECT_EQ(encoded(2.0).size(), 8u);
}

TEST(ReductionRoundTrip, EncodeAppendsToWhatTheStringAlreadyHolds) {
  std::string out = "HDR";
  encode(out, 5);
  ASSERT_EQ(out.size(), 3u + sizeof(int));
  EXPECT_EQ(out.substr(0, 3), "HDR");
  EXPECT_EQ(decode<int>(out.data() + 3, out.size() - 3), 5);
}

TEST(ReductionRoundTrip, StringsKeepEveryByteIncludingNul) {
  EXPECT_EQ(round_trip(std::string("hello")), "hello");
  EXPECT_EQ(round_trip(std::string()), "");
  std::string with_nul("a\0b\xff", 4);
  EXPECT_EQ(round_trip(with_nul), with_nul);
  std::string big(100000, 'q');
  EXPECT_EQ(round_trip(big), big);
}

TEST(ReductionRoundTrip, SequenceContainersComeBackEqual) {
  EXPECT_EQ(round_trip(std::vector<int>{1, -2, 3}), (std::vector<int>{1, -2, 3}));
  EXPECT_EQ(round_trip(std::vector<int>{}), std::vector<int>{});
  EXPECT_EQ(round_trip(std::vector<std::string>{"", "x", "yz"}), (std::vector<std::string>{"", "x", "yz"}));
  EXPECT_EQ(round_trip(std::vector<bool>{true, false, true}), (std::vector<bool>{true, false, true}));
  EXPECT_EQ(round_trip(std::deque<double>{0.5, 1.5}), (std::deque<double>{0.5, 1.5}));
  EXPECT_EQ(round_trip(std::list<int>{3, 2, 1}), (std::list<int>{3, 2, 1}));
  EXPECT_EQ(round_trip(std::array<int, 3>{7, 8, 9}), (std::array<int, 3>{7, 8, 9}));
}

TEST(ReductionRoundTrip, AssociativeContainersComeBackEqual) {
  std::map<std::string, int> m{{"one", 1}, {"two", 2}};
  EXPECT_EQ(round_trip(m), m);
  std::unordered_map<int, std::string> um{{1, "a"}, {2, "b"}};
  EXPECT_EQ(round_trip(um), um);
  std::set<int> s{5, 1, 3};
  EXPECT_EQ(round_trip(s), s);
  std::unordered_set<std::string> us{"p", "q"};
  EXPECT_EQ(round_trip(us), us);
  EXPECT_EQ(round_trip(std::map<int, int>{}), (std::map<int, int>{}));
}

TEST(ReductionRoundTrip, TuplesPairsOptionalsAndVariantsComeBackEqual) {
  auto t = std::make_tuple(1, std::string("two"), 3.0);
  EXPECT_EQ(round_trip(t), t);
  auto p = std::make_pair(std::string("k"), std::vector<int>{1});
  EXPECT_EQ(round_trip(p), p);
  EXPECT_EQ(round_trip(std::optional<int>{}), std::nullopt);
  EXPECT_EQ(round_trip(std::optional<int>{9}), std::optional<int>{9});
  EXPECT_EQ(round_trip(std::optional<std::string>{""}), std::optional<std::string>{""});
  using V = std::variant<int, std::string, std::vector<double>>;
  EXPECT_EQ(round_trip(V{4}), V{4});
  EXPECT_EQ(round_trip(V{std::string("s")}), V{std::string("s")});
  EXPECT_EQ(round_trip(V{std::vector<double>{1.0, 2.0}}), V{(std::vector<double>{1.0, 2.0})});
  EXPECT_EQ(round_trip(V{std::in_place_index<1>, ""}).index(), 1u);
}

TEST(ReductionRoundTrip, NestedContainersComeBackEqual) { EXPECT_EQ(round_trip(make_nested()), make_nested()); }

TEST(ReductionRoundTrip, ChronoComplexAndEnumsComeBackEqual) {
  EXPECT_EQ(round_trip(std::chrono::milliseconds(1234)), std::chrono::milliseconds(1234));
  EXPECT_EQ(round_trip(std::complex<double>(1.5, -2.5)), std::complex<double>(1.5, -2.5));
  EXPECT_EQ(round_trip(Colour::blue), Colour::blue);
}

TEST(ReductionRoundTrip, UserStructWithSerializeComesBackEqual) {
  Person p{"Ada", 36, {"math", "engines"}, 9.5};
  EXPECT_EQ(round_trip(p), p);
  EXPECT_EQ(round_trip(Person{}), Person{});
}

TEST(ReductionRoundTrip, TriviallyCopyableStructTravelsAsItsBytes) {
  Point p{1.5, -2.5, 77, 'z'};
  EXPECT_EQ(encoded(p).size(), sizeof(Point));
  EXPECT_EQ(round_trip(p), p);
}

TEST(ReductionRoundTrip, AVectorOfEmptyElementsComesBackWithItsLength) {
  // Each element takes zero bytes, so its count is the only thing on the wire: a size check that
  // assumes "at least one byte per element" must not refuse this honest encoding.
  std::vector<Marker> markers(3);
  std::string bytes = encoded(markers);
  EXPECT_EQ(bytes.size(), sizeof(std::uint64_t));
  std::vector<Marker> back;
  EXPECT_NO_THROW(back = decode<std::vector<Marker>>(bytes.data(), bytes.size()));
  EXPECT_EQ(back.size(), 3u);
}

// ----------------------------------------------------------------------------------------------
// Malformed bytes

TEST(ReductionDecode, EveryTruncationOfAValueIsAProtocolError) {
  expect_every_prefix_rejected(42);
  expect_every_prefix_rejected(2.5);
  expect_every_prefix_rejected(std::string("abc"));
  expect_every_prefix_rejected(std::vector<int>{1, 2, 3});
  expect_every_prefix_rejected(std::map<std::string, int>{{"a", 1}, {"bc", 2}});
  expect_every_prefix_rejected(std::make_tuple(1, std::string("x"), 2.0));
  expect_every_prefix_rejected(std::optional<int>{5});
  expect_every_prefix_rejected(std::variant<int, std::string>{std::string("v")});
  expect_every_prefix_rejected(make_nested());
  expect_every_prefix_rejected(Person{"Bob", 4, {"t"}, 1.0});
  expect_every_prefix_rejected(Point{1, 2, 3, 'c'});
}

TEST(ReductionDecode, TrailingBytesAfterAValueAreAProtocolError) {
  expect_trailing_rejected(42);
  expect_trailing_rejected(std::string("abc"));
  expect_trailing_rejected(std::string());
  expect_trailing_rejected(std::vector<int>{1, 2});
  expect_trailing_rejected(std::optional<int>{});
  expect_trailing_rejected(make_nested());
  expect_trailing_rejected(Person{"Eve", 1, {}, std::nullopt});
  expect_trailing_rejected(Point{});
}

TEST(ReductionDecode, EmptyInputIsAProtocolError) {
  EXPECT_THROW((void)decode<int>(nullptr, 0), mproc::ProtocolError);
  EXPECT_THROW((void)decode<std::string>(nullptr, 0), mproc::ProtocolError);
  EXPECT_THROW((void)decode<Point>(nullptr, 0), mproc::ProtocolError);
}

TEST(ReductionDecode, AHugeContainerCountIsRefusedBeforeAnythingIsAllocated) {
  // If the count were trusted, these would throw std::bad_alloc / std::length_error (or exhaust
  // memory) instead of a ProtocolError.
  std::string bytes;
  append_count(bytes, std::uint64_t{1} << 60);
  EXPECT_THROW((void)decode<std::vector<int>>(bytes.data(), bytes.size()), mproc::ProtocolError);
  EXPECT_THROW((void)decode<std::string>(bytes.data(), bytes.size()), mproc::ProtocolError);
  EXPECT_THROW((void)decode<std::vector<std::string>>(bytes.data(), bytes.size()), mproc::ProtocolError);
  EXPECT_THROW((void)decode<std::vector<bool>>(bytes.data(), bytes.size()), mproc::ProtocolError);
  using IntMap = std::map<int, int>;
  EXPECT_THROW((void)decode<IntMap>(bytes.data(), bytes.size()), mproc::ProtocolError);
  EXPECT_THROW((void)decode<std::set<std::string>>(bytes.data(), bytes.size()), mproc::ProtocolError);
  EXPECT_THROW((void)decode<std::deque<double>>(bytes.data(), bytes.size()), mproc::ProtocolError);
}

TEST(ReductionDecode, AContainerCountLargerThanTheBytesLeftIsAProtocolError) {
  std::string bytes;
  append_count(bytes, 1000);  // claims 1000 ints, carries 3
  for (int i : {1, 2, 3}) append_pod(bytes, i);
  EXPECT_THROW((void)decode<std::vector<int>>(bytes.data(), bytes.size()), mproc::ProtocolError);

  std::string short_string;
  append_count(short_string, 10);  // claims 10 chars, carries 4
  short_string += "abcd";
  EXPECT_THROW((void)decode<std::string>(short_string.data(), short_string.size()), mproc::ProtocolError);

  std::string few_ints;
  append_count(few_ints, 4);  // 4 <= 12 bytes left, but 4 ints need 16
  for (int i : {1, 2, 3}) append_pod(few_ints, i);
  EXPECT_THROW((void)decode<std::vector<int>>(few_ints.data(), few_ints.size()), mproc::ProtocolError);
}

TEST(ReductionDecode, ABoolByteOtherThanZeroOrOneIsAProtocolError) {
  const char seven = 7;
  EXPECT_THROW((void)decode<bool>(&seven, 1), mproc::ProtocolError);
  const char two = 2;
  EXPECT_THROW((void)decode<bool>(&two, 1), mproc::ProtocolError);

  std::string optional_flag;  // std::optional's "is empty" flag is a bool
  optional_flag += '\x02';
  append_pod(optional_flag, 5);
  EXPECT_THROW((void)decode<std::optional<int>>(optional_flag.data(), optional_flag.size()), mproc::ProtocolError);

  std::string bools;
  append_count(bools, 3);
  bools += std::string("\x01\x00\x09", 3);
  EXPECT_THROW((void)decode<std::vector<bool>>(bools.data(), bools.size()), mproc::ProtocolError);
}

TEST(ReductionDecode, AVariantIndexOutOfRangeIsAProtocolError) {
  using V = std::variant<int, std::string>;
  const std::int32_t indexes[] = {2, 7, -1, std::numeric_limits<std::int32_t>::max(), std::numeric_limits<std::int32_t>::min()};
  for (std::int32_t index : indexes) {
    std::string bytes;
    append_pod(bytes, index);
    append_pod(bytes, 0);
    EXPECT_THROW((void)decode<V>(bytes.data(), bytes.size()), mproc::ProtocolError) << "index " << index;
  }
}

TEST(ReductionDecode, ATriviallyCopyableStructOfTheWrongSizeIsAProtocolError) {
  std::string bytes = encoded(Point{1, 2, 3, 'a'});
  EXPECT_THROW((void)decode<Point>(bytes.data(), bytes.size() - 1), mproc::ProtocolError);
  bytes += '\0';
  EXPECT_THROW((void)decode<Point>(bytes.data(), bytes.size()), mproc::ProtocolError);
}

TEST(ReductionDecode, RandomGarbageNeverDecodesIntoAContainerByCrashing) {
  // Whatever it holds, garbage either decodes (by chance) or is a ProtocolError: nothing else.
  std::mt19937_64 rng(12345);
  for (int round = 0; round < 2000; ++round) {
    std::string bytes(static_cast<std::size_t>(rng() % 64), '\0');
    for (auto& c : bytes) c = static_cast<char>(rng());
    try {
      (void)decode<Nested>(bytes.data(), bytes.size());
    } catch (const mproc::ProtocolError&) {
    }
    try {
      (void)decode<std::variant<int, std::string, std::vector<double>>>(bytes.data(), bytes.size());
    } catch (const mproc::ProtocolError&) {
    }
    try {
      (void)decode<Person>(bytes.data(), bytes.size());
    } catch (const mproc::ProtocolError&) {
    }
  }
  SUCCEED();
}

// ----------------------------------------------------------------------------------------------
// Type names and fingerprints

TEST(ReductionTypeFingerprint, DiffersBetweenDistinctTypes) {
  using mproc::detail::type_fingerprint;
  std::set<std::uint64_t> prints = {
      type_fingerprint<int>(),         type_fingerprint<long>(),
      type_fingerprint<unsigned>(),    type_fingerprint<std::string>(),
      type_fingerprint<std::vector<int>>(), type_fingerprint<std::vector<long>>(),
      type_fingerprint<Person>(),      type_fingerprint<Point>(),
  };
  EXPECT_EQ(prints.size(), 8u);
}

TEST(ReductionTypeFingerprint, IsTheSameEveryTimeAndKnownAtCompileTime) {
  using mproc::detail::type_fingerprint;
  constexpr std::uint64_t at_compile_time = type_fingerprint<std::vector<int>>();
  EXPECT_EQ(type_fingerprint<std::vector<int>>(), at_compile_time);
  EXPECT_EQ(type_fingerprint<std::vector<int>>(), type_fingerprint<std::vector<int>>());
  EXPECT_EQ(type_fingerprint<Person>(), type_fingerprint<Person>());
}

TEST(ReductionTypeFingerprint, IsNeverTheRawBytesMarkerZero) {
  using mproc::detail::type_fingerprint;
  EXPECT_NE(type_fingerprint<int>(), 0u);
  EXPECT_NE(type_fingerprint<std::string>(), 0u);
  EXPECT_NE(type_fingerprint<Marker>(), 0u);
}

TEST(ReductionTypeName, NamesTheTypeAsTheCompilerSpellsIt) {
  using mproc::detail::type_name;
  EXPECT_EQ(type_name<int>(), "int");
  EXPECT_EQ(type_name<double>(), "double");
  EXPECT_NE(type_name<std::string>().find("basic_string"), std::string_view::npos) << type_name<std::string>();
  EXPECT_NE(type_name<Person>().find("Person"), std::string_view::npos) << type_name<Person>();
  EXPECT_NE(type_name<std::vector<int>>(), type_name<std::vector<long>>());
}

// ----------------------------------------------------------------------------------------------
// Function identities

int g_calls = 0;
int g_last = 0;

void record(int x) {
  ++g_calls;
  g_last = x;
}

int square(int x) { return x * x; }

std::string greet(std::string who, int times) {
  std::string out;
  for (int i = 0; i < times; ++i) out += "hi " + who + ";";
  return out;
}

struct AddTo {
  int base = 0;
  template <class A>
  void serialize(A& a) {
    a(base);
  }
  void operator()(int x) const {
    ++g_calls;
    g_last = base + x;
  }
};

class FunctionIdentity : public ::testing::Test {
 protected:
  void SetUp() override {
    g_calls = 0;
    g_last = 0;
  }
};

const void* address_of(void (*f)(int)) { return reinterpret_cast<const void*>(f); }

TEST_F(FunctionIdentity, ResolvingACodeRefGivesBackTheSameAddress) {
  auto ref = mproc::detail::code_ref(address_of(&record));
  EXPECT_EQ(mproc::detail::resolve_code(ref), address_of(&record));
  auto ref2 = mproc::detail::code_ref(reinterpret_cast<const void*>(&square));
  EXPECT_EQ(mproc::detail::resolve_code(ref2), reinterpret_cast<const void*>(&square));
  EXPECT_NE(ref.offset, ref2.offset);
  EXPECT_EQ(ref.module, ref2.module);
}

TEST_F(FunctionIdentity, AnIdentityMadeForOneKindOfPointerDoesNotResolveAsAnother) {
  // A valid target identity replayed where the invoker (or a target of another signature) is
  // expected must not be called with the wrong signature.
  using Target = void (*)(int);
  using Other = int (*)(int);
  auto ref = mproc::detail::code_ref(address_of(&record), mproc::detail::type_fingerprint<Target>());
  EXPECT_EQ(mproc::detail::resolve_code(ref, mproc::detail::type_fingerprint<Target>()), address_of(&record));
  EXPECT_THROW((void)mproc::detail::resolve_code(ref, mproc::detail::type_fingerprint<Other>()),
               mproc::FunctionIdentityError);
  EXPECT_THROW((void)mproc::detail::resolve_code(ref, mproc::detail::type_fingerprint<mproc::detail::Invoker>()),
               mproc::FunctionIdentityError);
  EXPECT_THROW((void)mproc::detail::resolve_code(ref), mproc::FunctionIdentityError);
}

TEST_F(FunctionIdentity, AFunctionOfASharedLibraryResolvesToo) {
  const void* f = reinterpret_cast<const void*>(&::getpid);
  EXPECT_EQ(mproc::detail::resolve_code(mproc::detail::code_ref(f)), f);
}

TEST_F(FunctionIdentity, TheSameFunctionGetsTheSameIdentityEveryTime) {
  auto a = mproc::detail::code_ref(address_of(&record));
  auto b = mproc::detail::code_ref(address_of(&record));
  EXPECT_EQ(a.module, b.module);
  EXPECT_EQ(a.offset, b.offset);
  EXPECT_EQ(a.tag, b.tag);
}

TEST_F(FunctionIdentity, AnAddressOutsideAnyCodeIsRefused) {
  EXPECT_THROW((void)mproc::detail::code_ref(&g_calls), mproc::Error);
}

TEST_F(FunctionIdentity, ACodeRefWithAnyFlippedTagBitIsRejected) {
  const auto good = mproc::detail::code_ref(address_of(&record));
  for (std::size_t byte = 0; byte < good.tag.size(); ++byte) {
    for (int bit : {0, 7}) {
      auto bad = good;
      bad.tag[byte] ^= static_cast<std::uint8_t>(1u << bit);
      EXPECT_THROW((void)mproc::detail::resolve_code(bad), mproc::FunctionIdentityError) << "byte " << byte << " bit " << bit;
    }
  }
}

TEST_F(FunctionIdentity, ACodeRefNamingAnotherModuleIsRejected) {
  auto bad = mproc::detail::code_ref(address_of(&record));
  bad.module ^= 1;
  EXPECT_THROW((void)mproc::detail::resolve_code(bad), mproc::FunctionIdentityError);
  // Even the real id of another loaded module does not carry this function's tag.
  auto libc = mproc::detail::code_ref(reinterpret_cast<const void*>(&::getpid));
  auto moved = mproc::detail::code_ref(address_of(&record));
  moved.module = libc.module;
  EXPECT_THROW((void)mproc::detail::resolve_code(moved), mproc::FunctionIdentityError);
}

TEST_F(FunctionIdentity, ACodeRefWithAnotherOffsetIsRejected) {
  const auto good = mproc::detail::code_ref(address_of(&record));
  for (std::uint64_t offset : {std::uint64_t{0}, good.offset + 1, good.offset ^ (std::uint64_t{1} << 40), ~std::uint64_t{0}}) {
    auto bad = good;
    bad.offset = offset;
    EXPECT_THROW((void)mproc::detail::resolve_code(bad), mproc::FunctionIdentityError) << "offset " << offset;
  }
  EXPECT_THROW((void)mproc::detail::resolve_code(mproc::detail::CodeRef{}), mproc::FunctionIdentityError);
}

TEST_F(FunctionIdentity, ACodeRefSurvivesItsOwnEncoding) {
  const auto good = mproc::detail::code_ref(address_of(&record));
  auto back = round_trip(good);
  EXPECT_EQ(mproc::detail::resolve_code(back), address_of(&record));
}

// ----------------------------------------------------------------------------------------------
// Saved tasks

template <class F, class... Args>
std::string saved_task(F f, Args... args) {
  auto task = mproc::detail::make_task(f, args...);
  std::string bytes;
  mproc::detail::OutArchive ar(bytes);
  task.save(ar);
  return bytes;
}

std::size_t code_ref_size() { return encoded(mproc::detail::CodeRef{}).size(); }

TEST_F(FunctionIdentity, ASavedTaskRunsItsFunctionWithItsArguments) {
  std::string bytes = saved_task(&record, 42);
  mproc::detail::run_saved_task(bytes.data(), bytes.size(), nullptr);
  EXPECT_EQ(g_calls, 1);
  EXPECT_EQ(g_last, 42);
}

TEST_F(FunctionIdentity, ASavedTaskHandsBackItsEncodedResult) {
  std::string bytes = saved_task(&square, 7);
  std::string result;
  mproc::detail::run_saved_task(bytes.data(), bytes.size(), &result);
  EXPECT_EQ(decode<int>(result.data(), result.size()), 49);

  std::string bytes2 = saved_task(&greet, std::string("bo"), 2);
  std::string result2;
  mproc::detail::run_saved_task(bytes2.data(), bytes2.size(), &result2);
  EXPECT_EQ(decode<std::string>(result2.data(), result2.size()), "hi bo;hi bo;");
}

TEST_F(FunctionIdentity, ASavedTaskOfACaptureLessLambdaRuns) {
  std::string bytes = saved_task([](int x) { record(x + 1); }, 9);
  mproc::detail::run_saved_task(bytes.data(), bytes.size(), nullptr);
  EXPECT_EQ(g_calls, 1);
  EXPECT_EQ(g_last, 10);
}

TEST_F(FunctionIdentity, ASavedTaskOfASerializableFunctionObjectKeepsItsState) {
  std::string bytes = saved_task(AddTo{100}, 5);
  mproc::detail::run_saved_task(bytes.data(), bytes.size(), nullptr);
  EXPECT_EQ(g_calls, 1);
  EXPECT_EQ(g_last, 105);
}

TEST_F(FunctionIdentity, ATaskBuiltInMemoryCallsItsTargetDirectly) {
  auto task = mproc::detail::make_task(&record, 3);
  task.call();
  EXPECT_EQ(g_calls, 1);
  EXPECT_EQ(g_last, 3);
}

TEST_F(FunctionIdentity, GarbageBytesAreRefusedWithoutCallingAnything) {
  std::mt19937_64 rng(777);
  std::vector<std::string> inputs = {std::string(), std::string(1, '\0'), std::string(16, '\xab'),
                                     std::string(code_ref_size(), '\0'), std::string(200, '\xff')};
  for (int i = 0; i < 200; ++i) {
    std::string b(static_cast<std::size_t>(rng() % 128), '\0');
    for (auto& c : b) c = static_cast<char>(rng());
    inputs.push_back(b);
  }
  for (const auto& in : inputs) {
    std::string result;
    EXPECT_THROW(mproc::detail::run_saved_task(in.data(), in.size(), &result), mproc::ProtocolError) << in.size() << " bytes";
    EXPECT_TRUE(result.empty());
  }
  EXPECT_EQ(g_calls, 0);
}

TEST_F(FunctionIdentity, ATaskWithATamperedInvokerIdentityIsRefusedWithoutCallingAnything) {
  const std::string good = saved_task(&record, 42);
  for (std::size_t i = 0; i < code_ref_size(); ++i) {
    std::string bad = good;
    bad[i] = static_cast<char>(bad[i] ^ 0x01);
    EXPECT_THROW(mproc::detail::run_saved_task(bad.data(), bad.size(), nullptr), mproc::FunctionIdentityError) << "byte " << i;
  }
  EXPECT_EQ(g_calls, 0);
}

TEST_F(FunctionIdentity, ATaskWithATamperedTargetIdentityIsRefusedWithoutCallingAnything) {
  const std::string good = saved_task(&record, 42);
  const std::size_t target = code_ref_size();  // the target's identity follows the invoker's
  ASSERT_GE(good.size(), 2 * target);
  for (std::size_t i = target; i < 2 * target; ++i) {
    std::string bad = good;
    bad[i] = static_cast<char>(bad[i] ^ 0x80);
    EXPECT_THROW(mproc::detail::run_saved_task(bad.data(), bad.size(), nullptr), mproc::FunctionIdentityError) << "byte " << i;
  }
  EXPECT_EQ(g_calls, 0);
}

TEST_F(FunctionIdentity, ATruncatedOrPaddedTaskIsRefusedWithoutCallingAnything) {
  const std::string good = saved_task(&record, 42);
  for (std::size_t n = 0; n < good.size(); ++n)
    EXPECT_THROW(mproc::detail::run_saved_task(good.data(), n, nullptr), mproc::ProtocolError) << "first " << n << " bytes";
  std::string padded = good + "x";
  EXPECT_THROW(mproc::detail::run_saved_task(padded.data(), padded.size(), nullptr), mproc::ProtocolError);
  EXPECT_EQ(g_calls, 0);
}

// ----------------------------------------------------------------------------------------------
// The frame header (white-box: src/reduction/wire.hpp) and the shared-memory flag

std::string raw_header(std::uint16_t version, std::uint16_t flags, std::uint64_t type, std::uint64_t length) {
  std::string h(mproc::detail::kFrameHeaderSize, '\0');
  std::uint32_t magic = mproc::detail::kFrameMagic;
  std::memcpy(h.data(), &magic, 4);
  std::memcpy(h.data() + 4, &version, 2);
  std::memcpy(h.data() + 6, &flags, 2);
  std::memcpy(h.data() + 8, &type, 8);
  std::memcpy(h.data() + 16, &length, 8);
  return h;
}

TEST(WireHeader, AFrameWithoutFlagsHasTheBytesOfTheFirstVersion) {
  // Flags took the high half of what was a 32-bit version word: old frames read the same.
  char h[mproc::detail::kFrameHeaderSize];
  mproc::detail::write_header(h, 77, 1234);
  std::uint32_t version_word;
  std::memcpy(&version_word, h + 4, 4);
  EXPECT_EQ(version_word, 1u);
  auto parsed = mproc::detail::parse_header(h, 1u << 20);
  EXPECT_EQ(parsed.type, 77u);
  EXPECT_EQ(parsed.length, 1234u);
  EXPECT_EQ(parsed.flags, 0u);
}

TEST(WireHeader, TheSharedMemoryFlagPassesOnlyWhereTheChannelAllowsIt) {
  char h[mproc::detail::kFrameHeaderSize];
  mproc::detail::write_header(h, 0, 4096, mproc::detail::kFrameInMemfd);
  EXPECT_EQ(mproc::detail::parse_header(h, 1u << 20, mproc::detail::kFrameInMemfd).flags, mproc::detail::kFrameInMemfd);
  EXPECT_THROW(mproc::detail::parse_header(h, 1u << 20), mproc::ProtocolError);
}

TEST(WireHeader, ASharedMemoryFrameOverTheLimitIsRefused) {
  auto h = raw_header(1, mproc::detail::kFrameInMemfd, 0, 4097);
  EXPECT_THROW(mproc::detail::parse_header(h.data(), 4096, mproc::detail::kFrameInMemfd), mproc::ProtocolError);
}

TEST(WireHeader, AnEmptySharedMemoryFrameIsRefused) {
  auto h = raw_header(1, mproc::detail::kFrameInMemfd, 0, 0);
  EXPECT_THROW(mproc::detail::parse_header(h.data(), 4096, mproc::detail::kFrameInMemfd), mproc::ProtocolError);
}

TEST(WireHeader, UnknownFlagsAndVersionsAreRefused) {
  for (std::uint16_t flags : {2, 0x100, 0x8000, 0xffff}) {
    auto h = raw_header(1, flags, 0, 1);
    EXPECT_THROW(mproc::detail::parse_header(h.data(), 4096, mproc::detail::kFrameInMemfd), mproc::ProtocolError) << flags;
  }
  for (std::uint16_t version : {0, 2, 0xffff}) {
    auto h = raw_header(version, 0, 0, 1);
    EXPECT_THROW(mproc::detail::parse_header(h.data(), 4096, mproc::detail::kFrameInMemfd), mproc::ProtocolError) << version;
  }
}

TEST(WireHeader, DecodeFrameRefusesASharedMemoryFrame) {
  // Start-up messages travel in one piece: a flagged frame there is garbage.
  std::string frame = mproc::detail::encode_frame(std::int32_t{5});
  std::uint16_t flags = mproc::detail::kFrameInMemfd;
  std::memcpy(frame.data() + 6, &flags, 2);
  EXPECT_THROW(mproc::detail::decode_frame<std::int32_t>(frame), mproc::ProtocolError);
}

// ----------------------------------------------------------------------------------------------
// The memfd check (white-box: src/reduction/shm_payload.hpp)

// A slab: a head page, then bytes.
int sealed_memfd(const std::string& bytes, int seals) {
  int fd = ::memfd_create("test", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  const std::string slab = std::string(mproc::detail::kSlabHead, '\0') + bytes;
  if (fd < 0 || ::write(fd, slab.data(), slab.size()) != static_cast<ssize_t>(slab.size())) throw std::runtime_error("memfd");
  if (seals && ::fcntl(fd, F_ADD_SEALS, seals) != 0) throw std::runtime_error("seal");
  return fd;
}

std::string check_message(int fd, std::uint64_t length) {
  try {
    mproc::detail::check_payload_memfd(fd, length);
    return "";
  } catch (const mproc::ProtocolError& e) {
    return e.what();
  }
}

TEST(PayloadMemfd, ASealedSlabWithRoomForThePayloadPasses) {
  int fd = sealed_memfd("hello", F_SEAL_SHRINK | F_SEAL_GROW);
  EXPECT_EQ(check_message(fd, 5), "");
  EXPECT_EQ(check_message(fd, 4), "");  // a slab is reused for smaller payloads
  ::close(fd);
}

TEST(PayloadMemfd, EachMissingSealIsNamed) {
  const int all = F_SEAL_SHRINK | F_SEAL_GROW;
  for (auto [seal, name] : {std::pair{F_SEAL_SHRINK, "F_SEAL_SHRINK"}, {F_SEAL_GROW, "F_SEAL_GROW"}}) {
    int fd = sealed_memfd("hello", all & ~seal);
    std::string what = check_message(fd, 5);
    EXPECT_NE(what.find(std::string("lacks ") + name), std::string::npos) << what;
    ::close(fd);
  }
}

TEST(PayloadMemfd, ASlabSealedAgainstWritingIsRefused) {
  int fd = sealed_memfd("hello", F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE);
  EXPECT_NE(check_message(fd, 5).find("sealed against writing"), std::string::npos);
  ::close(fd);
}

TEST(PayloadMemfd, TheSlabMustHoldTheHeadAndThePayload) {
  int fd = sealed_memfd("hello", F_SEAL_SHRINK | F_SEAL_GROW);
  EXPECT_NE(check_message(fd, 6).find("holds 4101 bytes, too few for a head of 4096 and the 6"), std::string::npos);
  ::close(fd);
  int tiny = ::memfd_create("test", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  ASSERT_EQ(::write(tiny, "abc", 3), 3);
  ASSERT_EQ(::fcntl(tiny, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW), 0);
  EXPECT_NE(check_message(tiny, 0).find("holds 3 bytes, too few for a head"), std::string::npos);
  ::close(tiny);
}

// ----------------------------------------------------------------------------------------------
// The sender's slabs (white-box: SlabCache)

std::uint32_t state_of(const mproc::detail::SlabCache::Slab& s) {
  return std::atomic_ref<std::uint32_t>(s.state()).load();
}

TEST(SlabCache, ASlabIsReusedOnlyAfterItsReceiverReleasedIt) {
  mproc::detail::SlabCache cache;
  const std::string a(100000, 'a'), b(90000, 'b');
  auto& first = cache.fill(a.data(), a.size());
  EXPECT_EQ(state_of(first), mproc::detail::kSlabBusy);
  int first_fd = first.fd.get();
  auto& second = cache.fill(b.data(), b.size());  // the first is not released: a new slab
  EXPECT_NE(second.fd.get(), first_fd);
  EXPECT_EQ(std::string(static_cast<const char*>(first.map.data()) + mproc::detail::kSlabHead, a.size()), a);
  mproc::detail::release_slab(first.fd.get());  // as the receiver does, through its descriptor
  auto& third = cache.fill(b.data(), b.size());
  EXPECT_EQ(third.fd.get(), first_fd);
  EXPECT_EQ(state_of(third), mproc::detail::kSlabBusy);
  EXPECT_EQ(std::string(static_cast<const char*>(third.map.data()) + mproc::detail::kSlabHead, b.size()), b);
}

TEST(SlabCache, ASlabTooSmallIsNotReusedAndFewSlabsAreKept) {
  mproc::detail::SlabCache cache;
  std::string big(3 << 20, 'x');
  for (int i = 0; i < 20; ++i) {
    auto& s = cache.fill(big.data(), big.size());  // never released: a new one each time
    EXPECT_EQ(state_of(s), mproc::detail::kSlabBusy);
  }
  EXPECT_LE(cache.size(), 8u);
  EXPECT_GE(cache.size(), 2u);
  auto& small = cache.fill(big.data(), 1000);
  mproc::detail::release_slab(small.fd.get());
  int small_fd = small.fd.get();
  EXPECT_NE(cache.fill(big.data(), big.size()).fd.get(), small_fd);  // released, but 64 KiB is too small
}

TEST(SlabCache, AFailedSendGivesTheSlabBack) {
  mproc::detail::SlabCache cache;
  std::string bytes(70000, 'z');
  auto& s = cache.fill(bytes.data(), bytes.size());
  int fd = s.fd.get();
  mproc::detail::SlabCache::unsent(s);
  EXPECT_EQ(cache.fill(bytes.data(), bytes.size()).fd.get(), fd);
}

TEST(SlabCache, AForkedChildNeverWritesIntoItsParentsSlabs) {
  mproc::detail::SlabCache cache;
  std::string bytes(70000, 'p');
  auto& s = cache.fill(bytes.data(), bytes.size());
  mproc::detail::release_slab(s.fd.get());
  const auto* parent_view = static_cast<const char*>(s.map.data()) + mproc::detail::kSlabHead;
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    std::string other(70000, 'c');
    cache.fill(other.data(), other.size());  // must take a slab of its own
    ::_exit(0);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  EXPECT_EQ(std::string(parent_view, bytes.size()), bytes);
}

// ----------------------------------------------------------------------------------------------
// Slabs filled in place and passed on as they are (white-box: SlabPool, ConnectionAccess::send_slab)

TEST(SlabPool, ASlabIsTakenAgainOnlyOnceNoChunkHoldsIt) {
  mproc::detail::SlabPool pool(4);
  auto first = pool.take(100000);
  ASSERT_TRUE(first);
  EXPECT_EQ(state_of(*first), mproc::detail::kSlabBusy);
  EXPECT_GE(first->capacity, 100000u);
  auto* raw = first.get();
  mproc::detail::release_slab(raw->fd.get());
  auto held = first;
  first.reset();
  EXPECT_NE(pool.take(100000).get(), raw) << "released, but a chunk still holds it (it may be sent again)";
  held.reset();
  auto again = pool.take(100000);
  EXPECT_EQ(again.get(), raw);
  EXPECT_EQ(state_of(*again), mproc::detail::kSlabBusy);
  // Its receiver died before releasing it: the chunk dropped, the slab is taken again all the same.
  auto* raw2 = again.get();
  again.reset();
  EXPECT_EQ(pool.take(100000).get(), raw2);
}

TEST(SlabPool, NoMoreThanItsSlabsExistAndAFreeSmallOneMakesRoomForALargerOne) {
  mproc::detail::SlabPool pool(2);
  auto a = pool.take(70000), b = pool.take(70000);
  ASSERT_TRUE(a && b);
  EXPECT_FALSE(pool.take(70000)) << "both in use";
  mproc::detail::release_slab(a->fd.get());
  a.reset();
  auto large = pool.take(std::size_t{3} << 20);
  ASSERT_TRUE(large) << "the free one gives way to a larger one";
  EXPECT_GE(large->capacity, std::size_t{3} << 20);
  EXPECT_FALSE(pool.take(70000)) << "still two";
}

TEST(SlabPool, ASlabSentOnAConnectionArrivesWithoutACopyAndComesBackWhenRead) {
  auto [a, b] = mproc::Pipe();
  mproc::detail::SlabPool pool(1);
  auto slab = pool.take(std::size_t{1} << 20);
  ASSERT_TRUE(slab);
  for (int round = 0; round < 2; ++round) {  // the second: sent again from the same bytes, as a retried chunk
    const std::string bytes(std::size_t{1} << 20, static_cast<char>('a' + round));
    std::memcpy(slab->payload(), bytes.data(), bytes.size());
    mproc::detail::ConnectionAccess::send_slab(a, *slab, bytes.size());
    EXPECT_EQ(state_of(*slab), mproc::detail::kSlabBusy);
    {
      auto got = b.recv_buffer();
      ASSERT_EQ(got.size(), bytes.size());
      EXPECT_EQ(std::memcmp(got.data(), bytes.data(), bytes.size()), 0);
    }
    EXPECT_EQ(state_of(*slab), mproc::detail::kSlabFree) << "the receiver released it";
  }
  EXPECT_FALSE(pool.take(100)) << "still held by this test";
  slab.reset();
  EXPECT_TRUE(pool.take(100));
}

TEST(PayloadMemfd, ASocketOrAnInvalidDescriptorIsNotAMemfd) {
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  EXPECT_NE(check_message(sv[0], 0).find("not a memfd: it is a socket"), std::string::npos);
  ::close(sv[0]);
  ::close(sv[1]);
  EXPECT_NE(check_message(-1, 0).find("cannot be examined"), std::string::npos);
}

}  // namespace
