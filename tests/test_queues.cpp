// Queue, SimpleQueue, JoinableQueue: Python's semantics in one process, then many producers and
// consumers across processes under every start method, items larger than the ring, and handles
// that arrive as garbage. (Killed producers and consumers: tests/fault/test_queue_kills.cpp.)
#include <gtest/gtest.h>
#include <mproc/mproc.hpp>
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <map>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "mproc/detail/fd_passing.hpp"

#include "support/handles.hpp"

namespace {

using namespace std::chrono_literals;
using mproc::seconds;

class QueueTest : public ::testing::TestWithParam<std::string> {
 protected:
  mproc::Context ctx() const { return mproc::get_context(GetParam()); }
};

template <class F>
std::string outcome(F f) {
  try {
    f();
    return "ok";
  } catch (const mproc::queue::Empty&) {
    return "Empty";
  } catch (const mproc::queue::Full&) {
    return "Full";
  } catch (const mproc::ValueError&) {
    return "ValueError";
  } catch (const mproc::ProtocolError&) {
    return "ProtocolError";
  } catch (const std::exception& e) {
    return std::string("other: ") + e.what();
  }
}

void join_all(std::vector<mproc::Process>& ps) {
  for (auto& p : ps) {
    p.join();
    EXPECT_EQ(p.exitcode(), 0);
  }
}

// A string whose every byte depends on its seed and position: a torn or mixed item shows.
std::string pattern(std::size_t n, unsigned seed) {
  std::string s(n, '\0');
  for (std::size_t i = 0; i < n; ++i) s[i] = static_cast<char>((i * 131 + seed * 7919 + (i >> 12)) & 0xff);
  return s;
}

struct Point {
  double x, y;
  int id;
  bool operator==(const Point&) const = default;
};

struct Record {
  std::string name;
  std::map<std::string, std::vector<int>> tags;
  template <class A>
  void serialize(A& a) {
    a(name, tags);
  }
  bool operator==(const Record&) const = default;
};

// --------------------------------------------------------------------------- children

void produce_range(mproc::Queue<int> q, int first, int count) {
  for (int i = first; i < first + count; ++i) q.put(i);
}

// Takes ints until -1 and counts each one in seen (an atomic add: a duplicate shows as 2).
void consume_counting(mproc::Queue<int> q, mproc::RawArray<int> seen) {
  for (;;) {
    int v = q.get();
    if (v < 0) return;
    std::atomic_ref<int>(seen[static_cast<std::size_t>(v)]).fetch_add(1);
  }
}

void produce_strings(mproc::Queue<std::string> q, int n, std::size_t size) {
  for (int i = 0; i < n; ++i) q.put(pattern(size, static_cast<unsigned>(i)));
}

void echo_simple(mproc::SimpleQueue<std::string> in, mproc::SimpleQueue<std::string> out) {
  for (;;) {
    std::string s = in.get();
    out.put(s + "!");
    if (s.empty()) return;
  }
}

void work_and_task_done(mproc::JoinableQueue<int> q, mproc::RawValue<int> sum) {
  for (;;) {
    int v = q.get();
    if (v >= 0) std::atomic_ref<int>(sum.value()).fetch_add(v);
    q.task_done();
    if (v < 0) return;
  }
}

void put_records(mproc::Queue<Record> q, mproc::Queue<std::vector<double>> big) {
  q.put(Record{"child", {{"a", {1, 2, 3}}, {"b", {}}}});
  std::vector<double> v(3 << 17);  // 3 MiB: streams through the default 1 MiB ring
  for (std::size_t i = 0; i < v.size(); ++i) v[i] = static_cast<double>(i) * 0.5;
  big.put(v);
}

// --------------------------------------------------------------------------- one process

TEST(QueueBasics, PutThenGetReturnsItemsInFifoOrder) {
  mproc::Queue<int> sut;
  for (int i = 0; i < 1000; ++i) sut.put(i);
  EXPECT_EQ(sut.qsize(), 1000u);
  EXPECT_FALSE(sut.empty());
  for (int i = 0; i < 1000; ++i) ASSERT_EQ(sut.get(), i);
  EXPECT_TRUE(sut.empty());
  EXPECT_EQ(sut.qsize(), 0u);
}

TEST(QueueBasics, GetNowaitAndGetWithTimeoutOnAnEmptyQueueThrowEmpty) {
  mproc::Queue<int> sut;
  EXPECT_EQ(outcome([&] { sut.get_nowait(); }), "Empty");
  EXPECT_EQ(outcome([&] { sut.get(10ms); }), "Empty");
  EXPECT_EQ(outcome([&] { sut.get(false, std::nullopt); }), "Empty");
  EXPECT_EQ(outcome([&] { sut.get(true, seconds(0)); }), "Empty");
  sut.put(7);
  EXPECT_EQ(sut.get_nowait(), 7);
}

TEST(QueueBasics, MaxsizeBoundsTheItemsAndPutNowaitThrowsFull) {
  mproc::Queue<int> sut(2);
  EXPECT_EQ(sut.maxsize(), 2);
  sut.put(1);
  EXPECT_FALSE(sut.full());
  sut.put_nowait(2);
  EXPECT_TRUE(sut.full());
  EXPECT_EQ(outcome([&] { sut.put_nowait(3); }), "Full");
  EXPECT_EQ(outcome([&] { sut.put(3, 10ms); }), "Full");
  EXPECT_EQ(outcome([&] { sut.put(3, false, std::nullopt); }), "Full");
  EXPECT_EQ(sut.get(), 1);
  EXPECT_FALSE(sut.full());
  sut.put(3, 10ms);
  EXPECT_EQ(sut.get(), 2);
  EXPECT_EQ(sut.get(), 3);
}

TEST(QueueBasics, AnUnboundedQueueWhoseRingIsFullThrowsFullOnPutNowait) {
  mproc::Queue<std::string> sut(0, {.buffer_bytes = 64 << 10});
  const std::string item(1000, 'x');
  int n = 0;
  while (outcome([&] { sut.put_nowait(item); }) == "ok") ++n;
  EXPECT_GT(n, 50);  // about 64 KiB of 1 KiB items
  EXPECT_EQ(outcome([&] { sut.put(item, 10ms); }), "Full");
  EXPECT_EQ(sut.qsize(), static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i) ASSERT_EQ(sut.get_nowait(), item);
  sut.put_nowait(item);  // room again
  EXPECT_EQ(sut.get(), item);
}

TEST(QueueBasics, NaNTimeoutsAreInvalidArgumentsNamingTheCall) {
  const auto nan = mproc::seconds(std::nan(""));
  mproc::JoinableQueue<int> sut;
  sut.put(1);
  auto message = [](auto f) -> std::string {
    try {
      f();
    } catch (const std::invalid_argument& e) {
      return e.what();
    } catch (const std::exception& e) {
      return std::string("another exception: ") + e.what();
    }
    return "no exception";
  };
  EXPECT_NE(message([&] { sut.put(2, true, nan); }).find("Queue.put(): timeout is NaN"), std::string::npos);
  EXPECT_NE(message([&] { (void)sut.get(true, nan); }).find("Queue.get(): timeout is NaN"), std::string::npos);
  EXPECT_NE(message([&] { (void)sut.join(nan); }).find("JoinableQueue.join(): timeout is NaN"), std::string::npos);
  EXPECT_EQ(sut.get(), 1);  // the queue is as it was: one item, which get() still finds
  EXPECT_TRUE(sut.empty());
  sut.task_done();
}

TEST(QueueBasics, NegativeMaxsizeIsValueError) {
  EXPECT_EQ(outcome([] { mproc::Queue<int> q(-1); }), "ValueError");
}

TEST(QueueBasics, PutAndGetOnAClosedHandleThrowValueErrorThatSaysSo) {
  mproc::Queue<int> sut;
  sut.put(1);
  auto copy = sut;
  sut.close();
  try {
    copy.put(2);
    FAIL() << "put on a closed queue succeeded";
  } catch (const mproc::ValueError& e) {
    EXPECT_NE(std::string(e.what()).find("closed"), std::string::npos) << e.what();
  }
  EXPECT_EQ(outcome([&] { sut.get(); }), "ValueError");
  sut.join_thread();         // no-ops, as documented
  sut.cancel_join_thread();
}

TEST(QueueBasics, ItemsOfEveryEncodingRoundTrip) {
  mproc::Queue<Point> points;
  points.put(Point{1.5, -2.5, 3});
  EXPECT_EQ(points.get(), (Point{1.5, -2.5, 3}));

  mproc::Queue<std::string> strings;
  strings.put("");
  strings.put("hello");
  EXPECT_EQ(strings.get(), "");
  EXPECT_EQ(strings.get(), "hello");

  mproc::Queue<std::vector<std::int16_t>> shorts;
  shorts.put({1, -2, 3});
  shorts.put({});
  EXPECT_EQ(shorts.get(), (std::vector<std::int16_t>{1, -2, 3}));
  EXPECT_TRUE(shorts.get().empty());

  mproc::Queue<Record> records;
  Record r{"r", {{"x", {1}}, {"y", {2, 3}}}};
  records.put(r);
  EXPECT_EQ(records.get(), r);
}

TEST(QueueBasics, ItemsLargerThanTheRingStreamThroughIt) {
  mproc::Queue<std::string> sut(0, {.buffer_bytes = 64 << 10});
  mproc::Queue<Record> records(0, {.buffer_bytes = 64 << 10});
  Record big{"big", {}};
  for (int i = 0; i < 5000; ++i) big.tags["k" + std::to_string(i)] = std::vector<int>(10, i);
  // A consumer thread makes room while the producer streams.
  std::thread consumer([&] {
    for (unsigned i = 0; i < 4; ++i) EXPECT_EQ(sut.get(), pattern((1u << 20) * (i + 1) + i, i)) << i;
    EXPECT_EQ(records.get(), big);
  });
  for (unsigned i = 0; i < 4; ++i) sut.put(pattern((1u << 20) * (i + 1) + i, i));
  records.put(big);
  consumer.join();
  EXPECT_TRUE(sut.empty());
  EXPECT_EQ(sut.qsize(), 0u);
}

TEST(QueueBasics, APutThatTimesOutInTheMiddleOfALargeItemLeavesNothingOfIt) {
  mproc::Queue<std::string> sut(0, {.buffer_bytes = 64 << 10});
  // Nobody gets: the ring fills with the first chunks, then the put gives the item up.
  EXPECT_EQ(outcome([&] { sut.put(pattern(1 << 20, 1), 20ms); }), "Full");
  EXPECT_FALSE(sut.empty());  // its first chunks are there...
  EXPECT_EQ(sut.qsize(), 0u);  // ...but they are not an item
  EXPECT_EQ(outcome([&] { sut.get(200ms); }), "Empty");  // it takes the chunks and drops them
  EXPECT_TRUE(sut.empty());
  sut.put("after");
  EXPECT_EQ(sut.get(), "after");
}

TEST(QueueBasics, ManyThreadsPutAndGetEveryItemExactlyOnce) {
  constexpr int kProducers = 4, kConsumers = 4, kPer = 20000;
  mproc::Queue<int> sut(100);
  std::vector<std::atomic<int>> seen(kProducers * kPer);
  std::vector<std::thread> ts;
  for (int p = 0; p < kProducers; ++p)
    ts.emplace_back([&, p] {
      for (int i = 0; i < kPer; ++i) sut.put(p * kPer + i);
    });
  for (int c = 0; c < kConsumers; ++c)
    ts.emplace_back([&] {
      for (int v; (v = sut.get()) >= 0;) seen[static_cast<std::size_t>(v)].fetch_add(1);
    });
  for (int p = 0; p < kProducers; ++p) ts[static_cast<std::size_t>(p)].join();
  for (int c = 0; c < kConsumers; ++c) sut.put(-1);
  for (int c = 0; c < kConsumers; ++c) ts[static_cast<std::size_t>(kProducers + c)].join();
  for (std::size_t i = 0; i < seen.size(); ++i) ASSERT_EQ(seen[i].load(), 1) << "item " << i;
  EXPECT_TRUE(sut.empty());
}

TEST(QueueBasics, GetWaitsForAPutFromAnotherThread) {
  mproc::Queue<int> sut;
  std::thread t([&] {
    std::this_thread::sleep_for(20ms);
    sut.put(42);
  });
  EXPECT_EQ(sut.get(30s), 42);
  t.join();
}

TEST(QueueBasics, JoinableQueueCountsTasksAndRejectsTooManyTaskDone) {
  mproc::JoinableQueue<int> sut;
  EXPECT_TRUE(sut.join(0s));  // nothing put: nothing to wait for
  sut.put(1);
  sut.put(2);
  EXPECT_FALSE(sut.join(10ms));
  sut.get();
  sut.task_done();
  EXPECT_FALSE(sut.join(10ms));
  sut.get();
  sut.task_done();
  sut.join();
  EXPECT_EQ(outcome([&] { sut.task_done(); }), "ValueError");
}

TEST(QueueBasics, SimpleQueuePutsAndGets) {
  mproc::SimpleQueue<std::string> sut;
  EXPECT_TRUE(sut.empty());
  sut.put("a");
  EXPECT_FALSE(sut.empty());
  EXPECT_EQ(sut.get(), "a");
  sut.close();
  EXPECT_EQ(outcome([&] { sut.put("b"); }), "ValueError");
}

// --------------------------------------------------------------------------- across processes

TEST_P(QueueTest, ManyProducerAndConsumerProcessesMoveEveryItemExactlyOnce) {
  constexpr int kProducers = 3, kConsumers = 3, kPer = 5000;
  mproc::Queue<int> sut(64);
  mproc::RawArray<int> seen(kProducers * kPer);
  std::vector<mproc::Process> producers, consumers;
  for (int c = 0; c < kConsumers; ++c) consumers.push_back(ctx().Process(consume_counting, sut, seen));
  for (int p = 0; p < kProducers; ++p) producers.push_back(ctx().Process(produce_range, sut, p * kPer, kPer));
  for (auto& p : consumers) p.start();
  for (auto& p : producers) p.start();
  join_all(producers);
  for (int c = 0; c < kConsumers; ++c) sut.put(-1);
  join_all(consumers);
  for (std::size_t i = 0; i < seen.size(); ++i) ASSERT_EQ(seen[i], 1) << "item " << i;
  EXPECT_TRUE(sut.empty());
  EXPECT_EQ(sut.qsize(), 0u);
}

TEST_P(QueueTest, ItemsLargerThanTheRingCrossProcessesIntact) {
  mproc::Queue<std::string> sut(0, {.buffer_bytes = 64 << 10});
  auto p = ctx().Process(produce_strings, sut, 6, std::size_t{3} << 20);
  p.start();
  for (unsigned i = 0; i < 6; ++i) ASSERT_EQ(sut.get(60s), pattern(std::size_t{3} << 20, i)) << i;
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
}

TEST_P(QueueTest, CerealItemsAndLargeVectorsComeFromAChild) {
  mproc::Queue<Record> records;
  mproc::Queue<std::vector<double>> big;
  auto p = ctx().Process(put_records, records, big);
  p.start();
  EXPECT_EQ(records.get(60s), (Record{"child", {{"a", {1, 2, 3}}, {"b", {}}}}));
  auto v = big.get(60s);
  ASSERT_EQ(v.size(), std::size_t{3} << 17);
  for (std::size_t i = 0; i < v.size(); ++i) ASSERT_EQ(v[i], static_cast<double>(i) * 0.5) << i;
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
}

TEST_P(QueueTest, SimpleQueuesCarryItemsBothWays) {
  mproc::SimpleQueue<std::string> in, out;
  auto p = ctx().Process(echo_simple, in, out);
  p.start();
  in.put("a");
  in.put("bc");
  in.put("");
  EXPECT_EQ(out.get(), "a!");
  EXPECT_EQ(out.get(), "bc!");
  EXPECT_EQ(out.get(), "!");
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
}

TEST_P(QueueTest, JoinableQueueJoinReturnsWhenChildrenMarkedEveryTaskDone) {
  mproc::JoinableQueue<int> sut;
  mproc::RawValue<int> sum(0);
  std::vector<mproc::Process> ps;
  for (int c = 0; c < 2; ++c) ps.push_back(ctx().Process(work_and_task_done, sut, sum));
  for (auto& p : ps) p.start();
  int expected = 0;
  for (int i = 1; i <= 500; ++i) {
    sut.put(i);
    expected += i;
  }
  sut.join();
  EXPECT_EQ(std::atomic_ref<int>(sum.value()).load(), expected);
  sut.put(-1);
  sut.put(-1);
  sut.join();
  join_all(ps);
  EXPECT_EQ(outcome([&] { sut.task_done(); }), "ValueError");
}

INSTANTIATE_TEST_SUITE_P(StartMethods, QueueTest, ::testing::Values("fork", "spawn", "forkserver"));

// --------------------------------------------------------------------------- garbage handles

using mproc_test::encode_handle;

template <class T>
std::string decode_handle(const std::string& bytes, const std::vector<int>& fds) {
  return mproc_test::decode_handle_with<T>(bytes, fds, [](auto f) { return outcome(f); });
}

TEST(QueueHandleTest, AValidHandleDecodesToTheSameQueue) {
  mproc::Queue<int> sut;
  auto [bytes, fds] = encode_handle(sut);
  std::vector<int> in{::fcntl(fds[0], F_DUPFD_CLOEXEC, 0)};
  mproc::detail::FdImportScope scope(in);
  mproc::detail::InArchive ar(bytes.data(), bytes.size());
  mproc::Queue<int> copy;
  ar(copy);
  sut.put(5);
  EXPECT_EQ(copy.get_nowait(), 5);
}

TEST(QueueHandleTest, AnotherItemTypeOrKindOfQueueIsProtocolError) {
  mproc::Queue<int> sut;
  auto [bytes, fds] = encode_handle(sut);
  EXPECT_EQ(decode_handle<mproc::Queue<int>>(bytes, fds), "ok");
  EXPECT_EQ(decode_handle<mproc::Queue<long>>(bytes, fds), "ProtocolError");
  EXPECT_EQ(decode_handle<mproc::JoinableQueue<int>>(bytes, fds), "ProtocolError");
  EXPECT_EQ(decode_handle<mproc::SimpleQueue<int>>(bytes, fds), "ProtocolError");
}

TEST(QueueHandleTest, TruncatedBytesAndForeignDescriptorsAreProtocolError) {
  mproc::Queue<int> sut;
  mproc::Lock lock;
  auto [bytes, fds] = encode_handle(sut);
  for (std::size_t n = 0; n < bytes.size(); ++n)
    EXPECT_EQ(decode_handle<mproc::Queue<int>>(bytes.substr(0, n), fds), "ProtocolError") << n;
  auto [lock_bytes, lock_fds] = encode_handle(lock);
  EXPECT_EQ(decode_handle<mproc::Queue<int>>(bytes, lock_fds), "ProtocolError");
  for (std::size_t size : {std::size_t{0}, std::size_t{4096}, std::size_t{4096 + (64 << 10)}}) {
    int fd = ::memfd_create("garbage", MFD_CLOEXEC);
    ASSERT_EQ(::ftruncate(fd, static_cast<off_t>(size)), 0);
    EXPECT_EQ(decode_handle<mproc::Queue<int>>(bytes, {fd}), "ProtocolError") << size;
    ::close(fd);
  }
}

}  // namespace
