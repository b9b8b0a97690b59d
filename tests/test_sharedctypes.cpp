// Value, Array, RawValue, RawArray under every start method: exact counts under the lock,
// shared writes both ways, options, and handles that arrive as garbage.
#include <gtest/gtest.h>
#include <mproc/mproc.hpp>
#include <fcntl.h>
#include <unistd.h>

#include <mutex>
#include <numeric>
#include <string>
#include <thread>
#include <vector>

#include "mproc/detail/fd_passing.hpp"

#include "support/handles.hpp"

namespace {

using namespace std::chrono_literals;

class SharedCtypesTest : public ::testing::TestWithParam<std::string> {
 protected:
  mproc::Context ctx() const { return mproc::get_context(GetParam()); }
};

struct Point {
  double x;
  double y;
  int tag;
  bool operator==(const Point&) const = default;
};

struct Defaulted {  // trivially copyable, but T{} is not all zero bytes
  int a = 7;
  float b = 1.5f;
};

void join_all(std::vector<mproc::Process>& ps) {
  for (auto& p : ps) {
    p.join();
    EXPECT_EQ(p.exitcode(), 0);
  }
}

// --------------------------------------------------------------------------- children

void increment_value(mproc::Value<int> v, int n) {
  for (int i = 0; i < n; ++i) {
    std::scoped_lock guard(v.get_lock());
    v.value() += 1;
  }
}

void increment_every_element(mproc::Array<long> a, int n) {
  for (int i = 0; i < n; ++i) {
    std::scoped_lock guard(a.get_lock());
    for (auto& x : a) ++x;
  }
}

void write_point(mproc::Value<Point> v) { v.value() = Point{1.5, -2.25, 42}; }

void fill_squares(mproc::Array<int> a) {
  for (std::size_t i = 0; i < a.size(); ++i) a[i] = static_cast<int>(i * i);
}

void raw_write(mproc::RawValue<double> v, mproc::RawArray<char> a) {
  v.value() = 3.75;
  for (auto& c : a) c = 'z';
}

void report_array(mproc::Array<int> a, mproc::Connection out) {
  out.send(std::vector<int>(a.begin(), a.end()));
}

void try_lock_report(mproc::RLock lock, mproc::Connection out) {
  bool got = lock.try_lock();
  if (got) lock.unlock();
  out.send(got);
}

void report_defaulted(mproc::Array<Defaulted> a, mproc::Connection out) {
  out.send(std::make_pair(a[0].a, a[a.size() - 1].b));
}

void count_worker(mproc::Value<int> started) {
  std::scoped_lock guard(started.get_lock());
  ++started.value();
}

int square(int x) { return x * x; }

// --------------------------------------------------------------------------- Value

TEST_P(SharedCtypesTest, ValueIncrementedUnderItsLockByFourProcessesIsExact) {
  mproc::Value<int> sut(0);
  std::vector<mproc::Process> ps;
  for (int i = 0; i < 4; ++i) ps.push_back(ctx().Process(increment_value, sut, 10000));
  for (auto& p : ps) p.start();
  join_all(ps);
  EXPECT_EQ(sut.value(), 40000);
  EXPECT_FALSE(sut.get_lock().locked());
}

TEST_P(SharedCtypesTest, ValueOfAStructWrittenByAChildIsSeenByTheParent) {
  mproc::Value<Point> sut(Point{0, 0, 0});
  auto p = ctx().Process(write_point, sut);
  p.start();
  p.join();
  EXPECT_EQ(sut.value(), (Point{1.5, -2.25, 42}));
}

TEST_P(SharedCtypesTest, ValueLockPassedOnItsOwnIsTheSameLock) {
  mproc::Value<int> sut(5);
  auto [parent, child] = mproc::Pipe();
  std::scoped_lock guard(sut.get_lock());
  auto p = ctx().Process(try_lock_report, sut.get_lock(), child);
  p.start();
  EXPECT_FALSE(parent.recv<bool>());
  p.join();
}

// The initializer travels with each worker's start (its descriptors as a Process's arguments do).
TEST_P(SharedCtypesTest, ValueReachesEveryPoolWorkerThroughItsInitializer) {
  mproc::Value<int> started(0);
  {
    mproc::Pool pool({.processes = 3, .initializer = mproc::call(count_worker, started), .context = ctx()});
    EXPECT_EQ(pool.map(square, std::vector<int>{1, 2, 3, 4}), (std::vector<int>{1, 4, 9, 16}));
    pool.close();
    pool.join();
  }
  EXPECT_EQ(started.value(), 3);
}

TEST(ValueTest, InitialValueAndDefaultConstruction) {
  mproc::Value<double> d(2.5);
  EXPECT_EQ(d.value(), 2.5);
  mproc::Value<int> z;
  EXPECT_EQ(z.value(), 0);
  mproc::Value ctad(7L);
  static_assert(std::is_same_v<decltype(ctad), mproc::Value<long>>);
  EXPECT_EQ(ctad.value(), 7L);
}

TEST(ValueTest, CopiesShareTheValueAndTheLock) {
  mproc::Value<int> sut(1);
  mproc::Value<int> copy = sut;
  copy.value() = 9;
  EXPECT_EQ(sut.value(), 9);
  std::scoped_lock g(sut.get_lock());
  EXPECT_TRUE(copy.get_lock().locked());
}

TEST(ValueTest, ItsLockIsAnRLock) {
  mproc::Value<int> sut(0);
  const mproc::RLock& lock = sut.get_lock();
  ASSERT_TRUE(lock.acquire());
  ASSERT_TRUE(lock.acquire(false));
  lock.release();
  EXPECT_TRUE(lock.locked());
  lock.release();
  EXPECT_FALSE(lock.locked());
}

TEST(ValueTest, WithoutALockGetLockThrows) {
  mproc::Value<int> sut(3, {.lock = false});
  EXPECT_EQ(sut.value(), 3);
  EXPECT_THROW(sut.get_lock(), mproc::Error);
}

// --------------------------------------------------------------------------- Array

TEST_P(SharedCtypesTest, ArrayFilledByAChildIsSeenByTheParent) {
  mproc::Array<int> sut(100);
  auto p = ctx().Process(fill_squares, sut);
  p.start();
  p.join();
  ASSERT_EQ(sut.size(), 100u);
  for (std::size_t i = 0; i < sut.size(); ++i) EXPECT_EQ(sut[i], static_cast<int>(i * i));
}

TEST_P(SharedCtypesTest, ArrayArrivesInAChildWithItsContents) {
  mproc::Array<int> sut{3, 1, 4, 1, 5, 9, 2, 6};
  auto [parent, child] = mproc::Pipe();
  auto p = ctx().Process(report_array, sut, child);
  p.start();
  EXPECT_EQ(parent.recv<std::vector<int>>(), (std::vector<int>{3, 1, 4, 1, 5, 9, 2, 6}));
  p.join();
}

TEST_P(SharedCtypesTest, ArrayElementsIncrementedUnderItsLockByFourProcessesAreExact) {
  mproc::Array<long> sut(16);
  std::vector<mproc::Process> ps;
  for (int i = 0; i < 4; ++i) ps.push_back(ctx().Process(increment_every_element, sut, 2500));
  for (auto& p : ps) p.start();
  join_all(ps);
  for (long x : sut) EXPECT_EQ(x, 10000);
}

TEST_P(SharedCtypesTest, ArrayOfATypeWithDefaultMemberInitialisersArrivesInitialised) {
  mproc::Array<Defaulted> sut(10);
  auto [parent, child] = mproc::Pipe();
  auto p = ctx().Process(report_defaulted, sut, child);
  p.start();
  auto got = parent.recv<std::pair<int, float>>();
  EXPECT_EQ(got, std::make_pair(7, 1.5f));
  p.join();
}

TEST_P(SharedCtypesTest, RawValueAndRawArrayAreSharedToo) {
  mproc::RawValue<double> v(0.0);
  mproc::RawArray<char> a(5);
  auto p = ctx().Process(raw_write, v, a);
  p.start();
  p.join();
  EXPECT_EQ(v.value(), 3.75);
  EXPECT_EQ(std::string(a.begin(), a.end()), "zzzzz");
}

TEST(ArrayTest, ConstructionFromSizeListAndSpan) {
  mproc::Array<double> zeros(4);
  EXPECT_EQ(zeros.size(), 4u);
  for (double x : zeros) EXPECT_EQ(x, 0.0);

  mproc::Array<int> listed{1, 2, 3};
  EXPECT_EQ(listed.size(), 3u);
  EXPECT_EQ(listed[2], 3);

  std::vector<int> v(1000);
  std::iota(v.begin(), v.end(), 0);
  mproc::Array<int> from_span(v, {.lock = false});
  EXPECT_EQ(from_span.size(), 1000u);
  EXPECT_TRUE(std::equal(v.begin(), v.end(), from_span.span().begin()));
  EXPECT_EQ(from_span.data()[999], 999);
  EXPECT_THROW(from_span.get_lock(), mproc::Error);

  mproc::Array<int> empty;
  EXPECT_EQ(empty.size(), 0u);
  EXPECT_EQ(empty.begin(), empty.end());

  mproc::Array<Defaulted> built(3);
  EXPECT_EQ(built[2].a, 7);
}

TEST(ArrayTest, AHugeArrayIsValueError) {
  EXPECT_THROW(mproc::RawArray<long>(std::size_t{1} << 62), mproc::ValueError);
}

// --------------------------------------------------------------------------- garbage handles

using mproc_test::encode_handle;

template <class T>
std::string decode_handle(const std::string& bytes, const std::vector<int>& fds) {
  return mproc_test::decode_handle_with<T>(bytes, fds, [](auto f) -> std::string {
    try {
      f();
      return "ok";
    } catch (const mproc::ProtocolError&) {
      return "ProtocolError";
    } catch (const std::exception& e) {
      return std::string("other: ") + e.what();
    }
  });
}

TEST(SharedCtypesGarbageTest, AValueOfAnotherTypeIsProtocolError) {
  mproc::Value<int> ints(1);
  auto [bytes, fds] = encode_handle(ints);
  EXPECT_EQ(decode_handle<mproc::Value<int>>(bytes, fds), "ok");
  EXPECT_EQ(decode_handle<mproc::Value<unsigned>>(bytes, fds), "ProtocolError");  // same size, other type
  EXPECT_EQ(decode_handle<mproc::Value<double>>(bytes, fds), "ProtocolError");
  EXPECT_EQ(decode_handle<mproc::Array<int>>(bytes, fds), "ProtocolError");
  EXPECT_EQ(decode_handle<mproc::Lock>(bytes, fds), "ProtocolError");
  EXPECT_EQ(decode_handle<mproc::RLock>(bytes, fds), "ok");  // its lock
}

TEST(SharedCtypesGarbageTest, ARawValueHasNoLockToReceive) {
  mproc::RawValue<int> raw(1);
  auto [bytes, fds] = encode_handle(raw);
  EXPECT_EQ(decode_handle<mproc::RLock>(bytes, fds), "ProtocolError");
  EXPECT_EQ(decode_handle<mproc::RawValue<int>>(bytes, fds), "ok");
}

TEST(SharedCtypesGarbageTest, TruncatedBytesAreProtocolError) {
  mproc::Array<int> a(3);
  auto [bytes, fds] = encode_handle(a);
  for (std::size_t n = 0; n < bytes.size(); ++n)
    EXPECT_EQ(decode_handle<mproc::Array<int>>(bytes.substr(0, n), fds), "ProtocolError") << n;
}

INSTANTIATE_TEST_SUITE_P(StartMethods, SharedCtypesTest, ::testing::Values("fork", "spawn", "forkserver"));

}  // namespace
