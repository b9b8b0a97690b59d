// SharedMemory and SharedMemoryManager (CPython's shared_memory.py, managers.SharedMemoryManager).
#include "mproc/shared_memory.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <mutex>

#include "os/mapping.hpp"
#include "os/shm.hpp"
#include "resource_tracker/resource_tracker.hpp"
#include "util/auth.hpp"

namespace mproc {
namespace detail {

struct SharedMemoryImpl {
  std::string name;         // with the leading '/', as shm_open wants it
  std::string public_name;  // without, as Python reports it
  std::size_t size = 0;
  os::FileIdentity id;      // the file behind the name when we opened it
  os::Mapping map;
  bool track = true;
  bool tracked = false;     // registered by this handle and not unlinked through it
};

}  // namespace detail

namespace {

using detail::ResourceKind;

// Names come from users and from other processes: show them, not their control characters.
std::string quoted(std::string_view name) {
  std::string out = "'";
  for (char ch : name) {
    auto u = static_cast<unsigned char>(ch);
    if (u < 0x20 || u == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", u);
      out += buf;
    } else {
      out += ch;
    }
    if (out.size() > 80) {
      out += "...";
      break;
    }
  }
  return out + "'";
}

// "mproc_<pid of the program's main process>_<16 hex digits>": a leaked segment names the
// program that made it (a hint: pids are reused), and the prefix is the one the test suite's
// leak check looks for.
std::string fresh_name() {
  static const char digits[] = "0123456789abcdef";
  std::string name = "/mproc_" + std::to_string(detail::resource_tracker_endpoint().root_pid) + "_";
  for (unsigned char b : detail::random_bytes(8)) {
    name += digits[b >> 4];
    name += digits[b & 15];
  }
  return name;
}

[[noreturn]] void throw_open_error(const std::string& name, bool create, std::error_code err) {
  std::string shown = quoted(name.substr(1));
  if (err.value() == EEXIST) throw FileExistsError("shared memory segment " + shown + " already exists");
  if (err.value() == ENOENT) throw FileNotFoundError("no shared memory segment named " + shown);
  if (err.value() == EINVAL || err.value() == ENAMETOOLONG)
    throw ValueError("invalid shared memory name " + shown + ": " + err.message());
  throw OSError(std::string("cannot ") + (create ? "create" : "open") + " shared memory segment " + shown + ": " +
                    os::errno_text(err.value()),
                err);
}

}  // namespace

SharedMemory::SharedMemory(SharedMemoryOptions o) : impl_(std::make_shared<detail::SharedMemoryImpl>()) {
  auto& m = *impl_;
  if (o.create) {
    if (o.size == 0) throw ValueError("'size' must be a positive number different from zero");
    if (o.size > static_cast<std::size_t>(PTRDIFF_MAX))
      throw ValueError("'size' " + std::to_string(o.size) + " is too large (a negative number converted to size_t?)");
  } else if (o.name.empty()) {
    throw ValueError("'name' can only be empty if create = true");
  }
  if (!o.name.empty()) {
    std::string problem = os::shm_name_problem(o.name);
    if (!problem.empty()) throw ValueError("invalid shared memory name " + quoted(o.name) + ": " + problem);
    m.name = o.name.starts_with('/') ? o.name : "/" + o.name;
  }
  const int flags = o.create ? O_CREAT | O_EXCL | O_RDWR : O_RDWR;
  std::error_code err;
  os::Fd fd;
  if (m.name.empty()) {
    for (int attempt = 0; attempt < 100 && !fd; ++attempt) {  // a collision of 64 random bits: try again
      err.clear();
      m.name = fresh_name();
      fd = os::shm_open(m.name, flags, 0600, err);
      if (!fd && err.value() != EEXIST) break;
    }
  } else {
    fd = os::shm_open(m.name, flags, 0600, err);
  }
  if (!fd) throw_open_error(m.name, o.create, err);
  m.public_name = m.name.substr(1);
  m.id = os::identity_of_fd(fd.get());
  m.track = o.track;
  try {
    if (o.create) {
      m.size = o.size;
      if (os::retry([&] { return ::ftruncate(fd.get(), static_cast<off_t>(o.size)); }) != 0)
        os::throw_errno("cannot size shared memory segment " + quoted(m.public_name) + " to " + std::to_string(o.size) + " bytes");
    } else {
      m.size = os::file_size(fd.get());
      if (m.size == 0) throw ValueError("shared memory segment " + quoted(m.public_name) + " is empty (0 bytes): nothing to map");
      if (o.size > m.size)
        throw ValueError("shared memory segment " + quoted(m.public_name) + " has " + std::to_string(m.size) +
                         " bytes, fewer than the " + std::to_string(o.size) + " asked for");
    }
    m.map = os::Mapping(fd.get(), m.size);
    if (o.create && o.track) {
      detail::resource_tracker_register(ResourceKind::shared_memory, m.name, m.id);
      m.tracked = true;
    }
  } catch (...) {
    std::error_code ignored;
    if (o.create) os::shm_unlink(m.name, ignored);  // ours, just made: nobody else can have it yet
    throw;
  }
  // The descriptor is not needed once mapped: a program with many segments keeps no descriptor
  // per segment (Python keeps one).
}

detail::SharedMemoryImpl& SharedMemory::impl() const {
  if (!impl_) throw ValueError("empty SharedMemory handle (default-constructed)");
  return *impl_;
}

const std::string& SharedMemory::name() const { return impl().public_name; }
std::size_t SharedMemory::size() const { return impl().size; }

std::span<std::byte> SharedMemory::buf() const {
  auto& m = impl();
  if (!m.map) throw ValueError("shared memory segment " + quoted(m.public_name) + " is closed");
  return {static_cast<std::byte*>(m.map.data()), m.size};
}

void SharedMemory::close() {
  if (impl_) impl_->map.reset();
}

bool SharedMemory::closed() const noexcept { return !impl_ || !impl_->map; }
bool SharedMemory::tracked() const noexcept { return impl_ && impl_->tracked; }

void SharedMemory::unlink() {
  auto& m = impl();
  std::error_code err;
  if (!os::shm_unlink(m.name, err)) {
    if (err.value() == ENOENT) throw FileNotFoundError("no shared memory segment named " + quoted(m.public_name) + " (unlinked already?)");
    throw OSError("cannot unlink shared memory segment " + quoted(m.public_name) + ": " + os::errno_text(err.value()), err);
  }
  // An attached handle tells the tracker too: another process of the program may have created
  // and registered the segment. The identity keeps a newer segment of the same name registered.
  if (m.track) detail::resource_tracker_unregister(ResourceKind::shared_memory, m.name, m.id);
  m.tracked = false;
}

void SharedMemory::save(detail::OutArchive& ar) const {
  auto& m = impl();
  ar(m.public_name, static_cast<std::uint64_t>(m.size), m.track);
}

void SharedMemory::load(detail::InArchive& ar) {
  std::string name;
  std::uint64_t size = 0;
  bool track = true;
  ar(name, size, track);
  // The bytes come from another process: the constructor validates the name; the size must be
  // that of a segment that was mapped, which is never empty.
  if (name.empty() || size == 0 || size > static_cast<std::uint64_t>(PTRDIFF_MAX))
    throw ProtocolError("a received SharedMemory has no name or an impossible size (" + std::to_string(size) + ")");
  *this = SharedMemory({.name = name, .create = false, .size = static_cast<std::size_t>(size), .track = track});
}

// ---------------------------------------------------------------------------------------------

namespace detail {

struct SharedMemoryManagerImpl {
  std::mutex mu;
  enum { initial, started, shut_down } stage = initial;
  int owner = 0;  // the process that started it: a fork child's copy owns nothing
  std::vector<std::pair<std::string, os::FileIdentity>> owned;

  void check_usable() {
    if (stage == initial) throw ProcessError("SharedMemoryManager: start() was not called");
    if (stage == shut_down) throw ProcessError("SharedMemoryManager: it has been shut down");
    if (owner != ::getpid()) throw ProcessError("SharedMemoryManager: only the process that started it can use it");
  }
};

}  // namespace detail

SharedMemoryManager::SharedMemoryManager() : impl_(std::make_unique<detail::SharedMemoryManagerImpl>()) {}
SharedMemoryManager::~SharedMemoryManager() { shutdown(); }
SharedMemoryManager::SharedMemoryManager(SharedMemoryManager&&) noexcept = default;
SharedMemoryManager& SharedMemoryManager::operator=(SharedMemoryManager&& o) noexcept {
  if (this != &o) {
    shutdown();
    impl_ = std::move(o.impl_);
  }
  return *this;
}

void SharedMemoryManager::start() {
  if (!impl_) throw ProcessError("SharedMemoryManager: moved from");
  std::lock_guard lock(impl_->mu);
  if (impl_->stage != detail::SharedMemoryManagerImpl::initial) throw ProcessError("SharedMemoryManager: already started");
  impl_->stage = detail::SharedMemoryManagerImpl::started;
  impl_->owner = ::getpid();
}

void SharedMemoryManager::shutdown() noexcept {
  if (!impl_) return;
  std::lock_guard lock(impl_->mu);
  if (impl_->stage != detail::SharedMemoryManagerImpl::started || impl_->owner != ::getpid()) return;
  for (const auto& [name, id] : impl_->owned) {
    // Only the segment we made: one unlinked meanwhile and created again belongs to someone else.
    detail::unlink_if_same(ResourceKind::shared_memory, name, id);
    detail::resource_tracker_unregister(ResourceKind::shared_memory, name, id);
  }
  impl_->owned.clear();
  impl_->stage = detail::SharedMemoryManagerImpl::shut_down;
}

mproc::SharedMemory SharedMemoryManager::SharedMemory(std::size_t size) {
  if (!impl_) throw ProcessError("SharedMemoryManager: moved from");
  std::lock_guard lock(impl_->mu);
  impl_->check_usable();
  mproc::SharedMemory shm({.create = true, .size = size, .track = true});
  impl_->owned.emplace_back(shm.impl_->name, shm.impl_->id);
  return shm;
}

mproc::ShareableList SharedMemoryManager::ShareableList(const std::vector<ShareableValue>& sequence) {
  if (!impl_) throw ProcessError("SharedMemoryManager: moved from");
  std::lock_guard lock(impl_->mu);
  impl_->check_usable();
  mproc::ShareableList list(sequence, {.track = true});
  auto shm = list.shm();
  impl_->owned.emplace_back(shm.impl_->name, shm.impl_->id);
  return list;
}

}  // namespace mproc
