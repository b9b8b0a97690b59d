// SharedMemory, ShareableList and SharedMemoryManager under every start method: sharing with
// children by argument and by name, sizes, names, errors, close/unlink, the tracker's registry.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <mproc/mproc.hpp>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <string>

#include "resource_tracker/protocol.hpp"
#include "resource_tracker/resource_tracker.hpp"
#include "support/capture.hpp"

namespace {

using namespace std::string_literals;
using mproc::Bytes;
using mproc::ShareableValue;

bool exists(const std::string& name) {
  struct stat st {};
  return ::stat(("/dev/shm/" + name).c_str(), &st) == 0;
}

// A name no other test (or concurrent test process) uses.
std::string unique_name(const char* what) {
  static int n = 0;
  return "mproc_test_"s + what + "_" + std::to_string(::getpid()) + "_" + std::to_string(++n);
}

// The tracker holds the stderr it was started with; start it before any test captures stderr,
// so that it never holds a capture pipe open.
class TrackerRunning : public ::testing::Environment {
  void SetUp() override { mproc::detail::resource_tracker_ensure_running(); }
};
const auto* const g_tracker_env = ::testing::AddGlobalTestEnvironment(new TrackerRunning);

class SharedMemoryTest : public ::testing::TestWithParam<std::string> {
 protected:
  mproc::Context ctx() const { return mproc::get_context(GetParam()); }

  void run(mproc::Process p) {
    p.start();
    p.join();
    ASSERT_EQ(p.exitcode(), 0);
  }
};

// ------------------------------------------------------------------ children

void fill_with(mproc::SharedMemory shm, unsigned char value) {
  std::fill(shm.buf().begin(), shm.buf().end(), std::byte{value});
}

void fill_by_name(std::string name, std::size_t size, unsigned char value) {
  mproc::SharedMemory shm({.name = name});
  if (shm.size() != size) std::abort();
  fill_with(shm, value);
  shm.close();
}

void create_and_report(mproc::Connection c, std::size_t size) {
  mproc::SharedMemory shm({.create = true, .size = size});
  std::memset(shm.buf().data(), 0x5a, size);
  c.send(std::make_tuple(shm.name(), shm.tracked(), mproc::detail::resource_tracker_endpoint().pid));
}

void set_items(mproc::ShareableList sl) {
  sl.set(0, std::int64_t{-7});
  sl.set(1, "child");
  sl.set(2, nullptr);
  sl.set(-1, 0.25);
}

void set_items_by_name(std::string name) { set_items(mproc::ShareableList::attach(name)); }

TEST_P(SharedMemoryTest, ChildWritesThroughAnArgumentAndParentReadsIt) {
  mproc::SharedMemory sut({.create = true, .size = 3 * 4096 + 5});
  run(ctx().Process(fill_with, sut, static_cast<unsigned char>(0xab)));
  auto buf = sut.buf();
  EXPECT_EQ(std::count(buf.begin(), buf.end(), std::byte{0xab}), static_cast<long>(buf.size()));
  sut.close();
  sut.unlink();
}

TEST_P(SharedMemoryTest, ChildAttachesByNameAndParentReadsWhatItWrote) {
  mproc::SharedMemory sut({.create = true, .size = 1000});
  run(ctx().Process(fill_by_name, sut.name(), std::size_t{1000}, static_cast<unsigned char>(7)));
  EXPECT_EQ(sut.buf()[0], std::byte{7});
  EXPECT_EQ(sut.buf()[999], std::byte{7});
  sut.unlink();
}

TEST_P(SharedMemoryTest, SegmentCreatedByAChildOutlivesItAndIsTrackedByTheSameTracker) {
  mproc::detail::resource_tracker_ensure_running();
  const int tracker = mproc::detail::resource_tracker_endpoint().pid;
  auto [parent, child] = mproc::Pipe();
  run(ctx().Process(create_and_report, child, std::size_t{8192}));
  auto [name, tracked, child_tracker] = parent.recv<std::tuple<std::string, bool, int>>();
  EXPECT_TRUE(tracked);
  EXPECT_EQ(name.rfind("mproc_" + std::to_string(::getpid()) + "_", 0), 0u) << "named after its program: " << name;
  EXPECT_EQ(child_tracker, tracker) << "the child registered with another tracker than its program's";
  ASSERT_TRUE(exists(name)) << "the child's segment vanished when the child exited";
  mproc::SharedMemory sut({.name = name});
  EXPECT_EQ(sut.size(), 8192u);
  EXPECT_EQ(sut.buf()[8191], std::byte{0x5a});
  EXPECT_FALSE(sut.tracked()) << "attaching must never register";
  sut.unlink();
  EXPECT_FALSE(exists(name));
}

TEST_P(SharedMemoryTest, ShareableListSetInAChildIsSeenByTheParent) {
  mproc::ShareableList sut({std::int64_t{1}, "parent", true, 1.5});
  run(ctx().Process(set_items, sut));
  EXPECT_EQ(sut.to_vector(), (std::vector<ShareableValue>{std::int64_t{-7}, "child"s, nullptr, 0.25}));
  sut.shm().unlink();
}

TEST_P(SharedMemoryTest, ShareableListAttachedByNameInAChildIsTheSameList) {
  mproc::ShareableList sut({std::int64_t{1}, "parent", true, 1.5});
  run(ctx().Process(set_items_by_name, sut.shm().name()));
  EXPECT_EQ(sut.to_vector(), (std::vector<ShareableValue>{std::int64_t{-7}, "child"s, nullptr, 0.25}));
  sut.shm().unlink();
}

INSTANTIATE_TEST_SUITE_P(StartMethods, SharedMemoryTest, ::testing::Values("fork", "spawn", "forkserver"),
                         [](const auto& info) { return info.param; });

TEST(SharedMemoryPassing, ArgumentWhoseSegmentWasUnlinkedFailsTheChildClearlyUnderSpawnAndForkserver) {
  for (std::string method : {"spawn", "forkserver"}) {
    mproc::SharedMemory shm({.create = true, .size = 64});
    shm.unlink();  // gone before the child attaches: only fork carries the mapping itself
    mproc_test::CaptureFd err(2);
    auto p = mproc::get_context(method).Process(fill_with, shm, static_cast<unsigned char>(1));
    p.start();
    p.join();
    std::string text = err.finish();
    EXPECT_EQ(p.exitcode(), 1) << method;
    EXPECT_NE(text.find("mproc::FileNotFoundError: no shared memory segment named '" + shm.name() + "'"), std::string::npos)
        << method << ": " << text;
  }
}

// ------------------------------------------------------------------ one process

TEST(SharedMemory, CreateWithoutANameGivesAFreshMprocNameAndZeroedMemory) {
  mproc::SharedMemory sut({.create = true, .size = 4096});
  const std::string prefix = "mproc_" + std::to_string(::getpid()) + "_";  // the program's pid
  EXPECT_EQ(sut.name().rfind(prefix, 0), 0u) << sut.name();
  EXPECT_EQ(sut.name().size(), prefix.size() + 16u);
  EXPECT_TRUE(exists(sut.name()));
  EXPECT_EQ(sut.size(), 4096u);
  EXPECT_EQ(sut.buf().size(), 4096u);
  EXPECT_EQ(std::count(sut.buf().begin(), sut.buf().end(), std::byte{0}), 4096);
  EXPECT_TRUE(sut.tracked());
  mproc::SharedMemory other({.create = true, .size = 4096});
  EXPECT_NE(other.name(), sut.name());
  sut.unlink();
  other.unlink();
}

TEST(SharedMemory, SizesAreExactAndAnAttachMayAskForAtMostTheSegmentsSize) {
  for (std::size_t size : {std::size_t{1}, std::size_t{4095}, std::size_t{4096}, std::size_t{(1 << 20) + 1}}) {
    mproc::SharedMemory sut({.create = true, .size = size});
    EXPECT_EQ(sut.size(), size);
    EXPECT_EQ(sut.buf().size(), size);
    sut.buf()[size - 1] = std::byte{9};
    mproc::SharedMemory whole({.name = sut.name(), .size = size});
    EXPECT_EQ(whole.size(), size);
    EXPECT_EQ(whole.buf()[size - 1], std::byte{9});
    mproc::SharedMemory any({.name = sut.name()});
    EXPECT_EQ(any.size(), size);
    try {
      mproc::SharedMemory({.name = sut.name(), .size = size + 1});
      ADD_FAILURE() << "attaching with a larger size succeeded";
    } catch (const mproc::ValueError& e) {
      EXPECT_EQ(std::string(e.what()), "shared memory segment '" + sut.name() + "' has " + std::to_string(size) +
                                           " bytes, fewer than the " + std::to_string(size + 1) + " asked for");
    }
    sut.unlink();
  }
}

TEST(SharedMemory, LeadingSlashIsOptionalAndNotPartOfTheName) {
  std::string name = unique_name("slash");
  mproc::SharedMemory sut({.name = "/" + name, .create = true, .size = 10});
  EXPECT_EQ(sut.name(), name);
  mproc::SharedMemory same({.name = name});
  EXPECT_EQ(same.name(), name);
  sut.unlink();
}

TEST(SharedMemory, CreatingATakenNameThrowsFileExistsErrorAndLeavesTheSegmentAlone) {
  mproc::SharedMemory first({.create = true, .size = 100});
  first.buf()[0] = std::byte{1};
  try {
    mproc::SharedMemory({.name = first.name(), .create = true, .size = 200});
    FAIL() << "no exception";
  } catch (const mproc::FileExistsError& e) {
    EXPECT_EQ(std::string(e.what()), "shared memory segment '" + first.name() + "' already exists");
  }
  mproc::SharedMemory again({.name = first.name()});
  EXPECT_EQ(again.size(), 100u);
  EXPECT_EQ(again.buf()[0], std::byte{1});
  first.unlink();
}

TEST(SharedMemory, AttachingAMissingSegmentThrowsFileNotFoundError) {
  std::string name = unique_name("missing");
  try {
    mproc::SharedMemory({.name = name});
    FAIL() << "no exception";
  } catch (const mproc::FileNotFoundError& e) {
    EXPECT_EQ(std::string(e.what()), "no shared memory segment named '" + name + "'");
  }
  EXPECT_FALSE(exists(name));
}

TEST(SharedMemory, HostileNamesAreRefusedWithValueErrorBeforeTouchingTheSystem) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"/", "a shared memory name must not be empty"},
      {"a/b", "a shared memory name must not contain '/' after its first character"},
      {"/../etc/passwd", "a shared memory name must not contain '/' after its first character"},
      {"..", "'.' and '..' are not shared memory names"},
      {".", "'.' and '..' are not shared memory names"},
      {"mproc_a\0b"s, "a shared memory name must not contain a NUL character"},
      {std::string(256, 'x'), "a shared memory name must be at most 255 characters (this one has 256)"},
  };
  for (const auto& [name, why] : cases) {
    for (bool create : {true, false}) {
      try {
        mproc::SharedMemory({.name = name, .create = create, .size = 8});
        ADD_FAILURE() << "accepted " << name;
      } catch (const mproc::ValueError& e) {
        EXPECT_NE(std::string(e.what()).find(why), std::string::npos) << e.what();
        EXPECT_EQ(std::string(e.what()).find('\0'), std::string::npos);
      }
    }
  }
  EXPECT_NO_THROW(mproc::SharedMemory({.name = std::string(255, 'y'), .create = true, .size = 8}).unlink());
}

TEST(SharedMemory, ZeroOrNegativeSizeAndMissingNameAreValueErrors) {
  try {
    mproc::SharedMemory({.create = true, .size = 0});
    FAIL() << "size 0 accepted";
  } catch (const mproc::ValueError& e) {
    EXPECT_STREQ(e.what(), "'size' must be a positive number different from zero");
  }
  try {
    mproc::SharedMemory({.create = true, .size = static_cast<std::size_t>(-1)});
    FAIL() << "size -1 accepted";
  } catch (const mproc::ValueError& e) {
    EXPECT_STREQ(e.what(), "'size' 18446744073709551615 is too large (a negative number converted to size_t?)");
  }
  try {
    mproc::SharedMemory({.size = 8});
    FAIL() << "attach without a name accepted";
  } catch (const mproc::ValueError& e) {
    EXPECT_STREQ(e.what(), "'name' can only be empty if create = true");
  }
}

TEST(SharedMemory, AttachingAnEmptySegmentIsAValueError) {
  std::string name = unique_name("empty");
  int fd = ::shm_open(("/" + name).c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);  // never sized
  ASSERT_GE(fd, 0);
  ::close(fd);
  EXPECT_THROW(mproc::SharedMemory({.name = name}), mproc::ValueError);
  ::shm_unlink(("/" + name).c_str());
}

TEST(SharedMemory, CloseUnmapsButKeepsTheSegmentAndUnlinkRemovesTheName) {
  mproc::SharedMemory sut({.create = true, .size = 64});
  mproc::SharedMemory copy = sut;
  sut.buf()[3] = std::byte{33};
  copy.close();  // copies share one mapping
  EXPECT_TRUE(sut.closed());
  EXPECT_THROW((void)sut.buf(), mproc::ValueError);
  EXPECT_NO_THROW(sut.close());
  EXPECT_TRUE(exists(sut.name()));
  mproc::SharedMemory reader({.name = sut.name()});
  EXPECT_EQ(reader.buf()[3], std::byte{33});
  sut.unlink();  // works after close
  EXPECT_FALSE(exists(sut.name()));
  EXPECT_FALSE(sut.tracked());
  EXPECT_EQ(reader.buf()[3], std::byte{33}) << "a mapping must survive the unlink of its name";
  try {
    sut.unlink();
    FAIL() << "a second unlink succeeded";
  } catch (const mproc::FileNotFoundError& e) {
    EXPECT_EQ(std::string(e.what()), "no shared memory segment named '" + sut.name() + "' (unlinked already?)");
  }
}

TEST(SharedMemory, TrackFalseAndAttachingRegisterNothing) {
  mproc::SharedMemory untracked({.create = true, .size = 8, .track = false});
  EXPECT_FALSE(untracked.tracked());
  mproc::SharedMemory attached({.name = untracked.name()});
  EXPECT_FALSE(attached.tracked());
  untracked.unlink();
}

TEST(SharedMemory, EmptyHandleThrowsValueError) {
  mproc::SharedMemory sut;
  EXPECT_TRUE(sut.closed());
  EXPECT_THROW((void)sut.name(), mproc::ValueError);
  EXPECT_THROW(sut.unlink(), mproc::ValueError);
  EXPECT_NO_THROW(sut.close());
}

// ------------------------------------------------------------------ ShareableList

TEST(ShareableList, HoldsEveryItemTypeAndReadsItBack) {
  const std::vector<ShareableValue> items = {
      std::int64_t{-5}, 2.5, true, false, "héllo"s, Bytes{std::byte{0}, std::byte{1}, std::byte{0}}, nullptr, 1, "x"};
  mproc::ShareableList sut(items);
  EXPECT_EQ(sut.size(), items.size());
  EXPECT_EQ(sut.to_vector(), items);
  EXPECT_EQ(std::get<std::int64_t>(sut[7]), 1);
  EXPECT_EQ(std::get<std::string>(sut[-1]), "x");
  EXPECT_EQ(std::get<Bytes>(sut[5]).size(), 3u) << "bytes ending in NUL keep them (Python strips them)";
  EXPECT_EQ(sut.shm().name().rfind("mproc_", 0), 0u);
  sut.shm().unlink();
}

TEST(ShareableList, SetChangesTypeWithinAnItemsStorage) {
  mproc::ShareableList sut({std::int64_t{1}, "abc", "abcdefgh"});
  sut.set(0, "12345678");  // 8 bytes: any item has that much
  EXPECT_EQ(std::get<std::string>(sut[0]), "12345678");
  EXPECT_THROW(sut.set(0, "123456789"), mproc::ValueError);
  sut.set(1, 3.0);
  EXPECT_EQ(std::get<double>(sut[1]), 3.0);
  sut.set(1, "ABCDEFGH");  // "abc" had 8 bytes, as Python gives it
  EXPECT_EQ(std::get<std::string>(sut[1]), "ABCDEFGH");
  sut.set(2, std::string(16, 'z'));  // "abcdefgh" had 16
  EXPECT_EQ(std::get<std::string>(sut[2]), std::string(16, 'z'));
  try {
    sut.set(2, std::string(17, 'z'));
    FAIL() << "no exception";
  } catch (const mproc::ValueError& e) {
    EXPECT_STREQ(e.what(), "bytes/str item exceeds available storage (17 bytes for 16 at index 2)");
  }
  EXPECT_EQ(std::get<std::string>(sut[2]), std::string(16, 'z')) << "a refused set must change nothing";
  sut.set(-3, nullptr);
  EXPECT_EQ(sut[0], ShareableValue(nullptr));
  sut.shm().unlink();
}

TEST(ShareableList, IndexOutOfRangeThrowsIndexError) {
  mproc::ShareableList sut({std::int64_t{1}, std::int64_t{2}});
  EXPECT_THROW((void)sut[2], mproc::IndexError);
  EXPECT_THROW((void)sut[-3], mproc::IndexError);
  EXPECT_THROW(sut.set(2, std::int64_t{0}), mproc::IndexError);
  try {
    (void)sut[5];
  } catch (const mproc::IndexError& e) {
    EXPECT_STREQ(e.what(), "ShareableList index 5 out of range (size 2)");
  }
  EXPECT_EQ(std::get<std::int64_t>(sut[-2]), 1);
  sut.shm().unlink();
}

TEST(ShareableList, CountAndIndexCompareByTypeAndValue) {
  mproc::ShareableList sut({std::int64_t{1}, 1.0, true, std::int64_t{1}, "1"});
  EXPECT_EQ(sut.count(std::int64_t{1}), 2u);
  EXPECT_EQ(sut.count(1.0), 1u);
  EXPECT_EQ(sut.count(nullptr), 0u);
  EXPECT_EQ(sut.index(true), 2u);
  EXPECT_EQ(sut.index("1"), 4u);
  EXPECT_THROW((void)sut.index(2.0), mproc::ValueError);
  sut.shm().unlink();
}

TEST(ShareableList, EmptyListIsAllowed) {
  mproc::ShareableList sut(std::vector<ShareableValue>{});
  EXPECT_EQ(sut.size(), 0u);
  EXPECT_EQ(mproc::ShareableList::attach(sut.shm().name()).size(), 0u);
  sut.shm().unlink();
}

TEST(ShareableList, AttachingASegmentThatHoldsNoListIsAValueError) {
  mproc::SharedMemory plain({.create = true, .size = 4096});
  EXPECT_THROW((void)mproc::ShareableList::attach(plain.name()), mproc::ValueError);
  // A list whose first slot was scribbled over to point outside the segment.
  mproc::ShareableList list({std::int64_t{1}});
  auto bytes = list.shm().buf();
  std::uint64_t far = 1 << 20;
  std::memcpy(bytes.data() + 32 + 8, &far, sizeof far);
  try {
    (void)mproc::ShareableList::attach(list.shm().name());
    ADD_FAILURE() << "no exception";
  } catch (const mproc::ValueError& e) {
    EXPECT_NE(std::string(e.what()).find("item 0 lies outside its segment"), std::string::npos) << e.what();
  }
  plain.unlink();
  list.shm().unlink();
}

TEST(ShareableList, NamedListIsFoundByItsName) {
  std::string name = unique_name("list");
  mproc::ShareableList sut({"a", "b"}, {.name = name});
  EXPECT_EQ(sut.shm().name(), name);
  auto same = mproc::ShareableList::attach(name);
  same.set(0, "c");
  EXPECT_EQ(std::get<std::string>(sut[0]), "c");
  EXPECT_THROW(mproc::ShareableList({"again"}, {.name = name}), mproc::FileExistsError);
  sut.shm().unlink();
}

// ------------------------------------------------------------------ SharedMemoryManager

TEST(SharedMemoryManager, ShutdownUnlinksEverythingCreatedThroughIt) {
  mproc::SharedMemoryManager sut;
  sut.start();
  auto a = sut.SharedMemory(4096);
  auto b = sut.SharedMemory(1);
  auto list = sut.ShareableList({std::int64_t{1}, "two"});
  a.buf()[0] = std::byte{5};
  for (const auto& n : {a.name(), b.name(), list.shm().name()}) EXPECT_TRUE(exists(n));
  sut.shutdown();
  for (const auto& n : {a.name(), b.name(), list.shm().name()}) EXPECT_FALSE(exists(n)) << n;
  EXPECT_EQ(a.buf()[0], std::byte{5}) << "handles keep their mappings";
  EXPECT_EQ(std::get<std::string>(list[1]), "two");
  EXPECT_NO_THROW(sut.shutdown());
  EXPECT_THROW((void)sut.SharedMemory(10), mproc::ProcessError);
}

TEST(SharedMemoryManager, DestructorShutsDown) {
  std::string name;
  {
    mproc::SharedMemoryManager sut;
    sut.start();
    name = sut.SharedMemory(100).name();
    EXPECT_TRUE(exists(name));
  }
  EXPECT_FALSE(exists(name));
}

TEST(SharedMemoryManager, UseBeforeStartOrTwoStartsAreProcessErrors) {
  mproc::SharedMemoryManager sut;
  EXPECT_THROW((void)sut.SharedMemory(10), mproc::ProcessError);
  EXPECT_THROW((void)sut.ShareableList({}), mproc::ProcessError);
  sut.start();
  EXPECT_THROW(sut.start(), mproc::ProcessError);
}

TEST(SharedMemoryManager, SegmentUnlinkedAndCreatedAgainBySomeoneElseIsLeftAlone) {
  mproc::SharedMemoryManager sut;
  sut.start();
  auto mine = sut.SharedMemory(64);
  std::string name = mine.name();
  mine.unlink();
  mproc::SharedMemory theirs({.name = name, .create = true, .size = 64, .track = false});
  sut.shutdown();
  EXPECT_TRUE(exists(name)) << "the manager unlinked a segment it did not create";
  theirs.unlink();
}

// The tracker's registry is bounded: a client registering new names without end (hostile, or a
// program leaking segments in a loop) is refused past kMaxRegistered, and the tracker goes on.
TEST(ResourceTrackerRegistry, IsBoundedAndStillTakesUnregistersAndKnownNamesWhenFull) {
  namespace rt = mproc::detail::tracker;
  auto request = [](const char* op, const std::string& name, std::uint64_t ino) {
    std::string m(op, 4);
    auto kind = static_cast<std::uint32_t>(mproc::detail::ResourceKind::shared_memory);
    std::uint64_t dev = 1;
    m.append(reinterpret_cast<const char*>(&kind), 4);
    m.append(reinterpret_cast<const char*>(&dev), 8);
    m.append(reinterpret_cast<const char*>(&ino), 8);
    return m + name;
  };
  auto send = [&](rt::Registry& r, const std::string& m) {
    return rt::handle_request(r, reinterpret_cast<const unsigned char*>(m.data()), m.size());
  };
  rt::Registry registry;
  for (std::size_t i = 0; i < rt::kMaxRegistered; ++i)
    ASSERT_EQ(send(registry, request(rt::kRegister, "/n" + std::to_string(i), i + 1)), rt::RequestOutcome::applied);
  EXPECT_EQ(send(registry, request(rt::kRegister, "/one-too-many", 7)), rt::RequestOutcome::registry_full);
  EXPECT_EQ(registry.size(), rt::kMaxRegistered);
  EXPECT_EQ(send(registry, request(rt::kRegister, "/n0", 99)), rt::RequestOutcome::applied);  // known: updated
  EXPECT_EQ(send(registry, request(rt::kUnregister, "/n1", 2)), rt::RequestOutcome::applied);
  EXPECT_EQ(send(registry, request(rt::kRegister, "/one-too-many", 7)), rt::RequestOutcome::applied);
  EXPECT_EQ(send(registry, "garbage"), rt::RequestOutcome::malformed);
}

}  // namespace
