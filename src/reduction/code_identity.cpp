// Function identities: module build-id + offset, tagged with the program's key (DESIGN: "What
// crosses the boundary"). A receiver maps the identity back to an address only when the module
// is loaded here, the address is inside one of its executable segments, and the tag verifies.
#include <elf.h>
#include <link.h>

#include <atomic>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <map>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "mproc/detail/callable.hpp"
#include "mproc/errors.hpp"
#include "util/auth.hpp"

namespace mproc::detail {
namespace {

struct Segment {
  std::uintptr_t begin, end;
};
struct Module {
  std::uint64_t id;  // hash of the GNU build-id (or of the file name when there is none)
  std::uintptr_t bias;
  std::string name;
  std::vector<Segment> code;
};

std::uint64_t fnv1a(const void* p, std::size_t n, std::uint64_t h = 0xcbf29ce484222325ull) {
  auto b = static_cast<const unsigned char*>(p);
  for (std::size_t i = 0; i < n; ++i) h = (h ^ b[i]) * 0x100000001b3ull;
  return h;
}

std::uint64_t build_id_hash(const dl_phdr_info* info) {
  for (int i = 0; i < info->dlpi_phnum; ++i) {
    const auto& ph = info->dlpi_phdr[i];
    if (ph.p_type != PT_NOTE) continue;
    auto p = reinterpret_cast<const unsigned char*>(info->dlpi_addr + ph.p_vaddr);
    auto end = p + ph.p_memsz;
    while (p + sizeof(ElfW(Nhdr)) <= end) {
      auto nh = reinterpret_cast<const ElfW(Nhdr)*>(p);
      auto name = p + sizeof(ElfW(Nhdr));
      auto desc = name + ((nh->n_namesz + 3) & ~3u);
      if (nh->n_type == NT_GNU_BUILD_ID && nh->n_namesz == 4 && std::memcmp(name, "GNU", 4) == 0)
        return fnv1a(desc, nh->n_descsz);
      p = desc + ((nh->n_descsz + 3) & ~3u);
    }
  }
  std::string name = info->dlpi_name ? info->dlpi_name : "";
  return fnv1a(name.data(), name.size(), 0x84222325cbf29ce4ull);
}

// The loaded modules, with the loader's counters of objects added and removed when they were read.
struct Table {
  std::vector<Module> mods;
  unsigned long long adds = 0, subs = 0;
  const Table* older = nullptr;  // the table this one replaced: kept (and reachable), see below
};

Table scan_modules() {
  Table t;
  dl_iterate_phdr(
      [](dl_phdr_info* info, std::size_t size, void* out) {
        auto& t = *static_cast<Table*>(out);
        if (size >= offsetof(dl_phdr_info, dlpi_subs) + sizeof info->dlpi_subs) {
          t.adds = info->dlpi_adds;
          t.subs = info->dlpi_subs;
        }
        Module m{build_id_hash(info), info->dlpi_addr, info->dlpi_name ? info->dlpi_name : "", {}};
        for (int i = 0; i < info->dlpi_phnum; ++i) {
          const auto& ph = info->dlpi_phdr[i];
          if (ph.p_type == PT_LOAD && (ph.p_flags & PF_X))
            m.code.push_back({info->dlpi_addr + ph.p_vaddr, info->dlpi_addr + ph.p_vaddr + ph.p_memsz});
        }
        if (!m.code.empty()) t.mods.push_back(std::move(m));
        return 0;
      },
      &t);
  return t;
}

bool loader_changed_since(const Table& t) {
  std::pair<unsigned long long, unsigned long long> now{t.adds, t.subs};
  dl_iterate_phdr(
      [](dl_phdr_info* info, std::size_t size, void* out) {
        if (size >= offsetof(dl_phdr_info, dlpi_subs) + sizeof info->dlpi_subs)
          *static_cast<std::pair<unsigned long long, unsigned long long>*>(out) = {info->dlpi_adds, info->dlpi_subs};
        return 1;  // the counters are the same in every entry
      },
      &now);
  return now.first != t.adds || now.second != t.subs;
}

// One table for the process, replaced (never changed) when a lookup misses after the loader
// loaded or unloaded something, and filled at init. Scanning takes the dynamic loader's lock
// (dl_iterate_phdr); a child forked while another thread held it (unwinding an exception does)
// would hang if it had to scan, so a fork child must find the table already filled. Replaced
// tables are never freed (a reader may still hold one) but stay reachable from the new one;
// there is one per dlopen/dlclose at most, since a miss with no change of modules keeps the table.
std::atomic<const Table*> g_modules{nullptr};

const std::vector<Module>& modules(bool rescan) {
  const Table* current = g_modules.load(std::memory_order_acquire);
  if (current && (!rescan || !loader_changed_since(*current))) return current->mods;
  auto* fresh = new Table(scan_modules());
  fresh->older = current;
  if (!g_modules.compare_exchange_strong(current, fresh, std::memory_order_acq_rel)) {
    delete fresh;  // another thread published its table first: never seen by anyone, take that one
    return current->mods;
  }
  return fresh->mods;
}

const Module* find_module(std::uintptr_t addr) {
  for (int pass = 0; pass < 2; ++pass) {
    for (const auto& m : modules(pass == 1))
      for (const auto& s : m.code)
        if (addr >= s.begin && addr < s.end) return &m;
  }
  return nullptr;
}

const Module* find_module_by_id(std::uint64_t id) {
  for (int pass = 0; pass < 2; ++pass) {
    for (const auto& m : modules(pass == 1))
      if (m.id == id) return &m;
  }
  return nullptr;
}

std::array<std::uint8_t, 16> tag_of(std::uint64_t module, std::uint64_t offset, std::uint64_t kind) {
  std::uint64_t msg[3] = {module, offset, kind};
  Digest d = hmac_sha256(authkey(), msg, sizeof msg);
  std::array<std::uint8_t, 16> tag{};
  std::memcpy(tag.data(), d.data(), tag.size());
  return tag;
}

std::string hex(std::uint64_t v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "0x%llx", static_cast<unsigned long long>(v));
  return buf;
}

struct Cache {
  std::uint64_t generation = ~0ull;
  std::map<std::pair<const void*, std::uint64_t>, CodeRef> sent;
  std::map<std::tuple<std::uint64_t, std::uint64_t, std::uint64_t, std::array<std::uint8_t, 16>>, const void*> verified;
  void check_generation() {
    if (generation != authkey_generation()) {  // a new key invalidates every tag
      sent.clear();
      verified.clear();
      generation = authkey_generation();
    }
  }
};
thread_local Cache t_cache;

}  // namespace

void prime_code_identity() { (void)modules(false); }

std::uint64_t program_id() {
  const auto& mods = modules(false);  // the loader lists the main program first
  return mods.empty() ? 0 : mods.front().id;
}

CodeRef code_ref(const void* code, std::uint64_t kind) {
  t_cache.check_generation();
  if (auto it = t_cache.sent.find({code, kind}); it != t_cache.sent.end()) return it->second;
  auto addr = reinterpret_cast<std::uintptr_t>(code);
  const Module* m = find_module(addr);
  if (!m) throw Error("mproc: function at " + hex(addr) + " is not in the code of any loaded module");
  CodeRef ref{m->id, addr - m->bias, tag_of(m->id, addr - m->bias, kind)};
  t_cache.sent.emplace(std::make_pair(code, kind), ref);
  return ref;
}

const void* resolve_code(const CodeRef& ref, std::uint64_t kind) {
  t_cache.check_generation();
  auto key = std::make_tuple(ref.module, ref.offset, kind, ref.tag);
  if (auto it = t_cache.verified.find(key); it != t_cache.verified.end()) return it->second;
  auto expected = tag_of(ref.module, ref.offset, kind);
  if (!equal_constant_time(expected.data(), ref.tag.data(), expected.size()))
    throw FunctionIdentityError("function identity rejected: its tag does not verify with this program's key for this "
                                "kind of function (forged, corrupted, misplaced, or from another program); module " +
                                hex(ref.module) + " offset " + hex(ref.offset));
  const Module* m = find_module_by_id(ref.module);
  if (!m)
    throw FunctionIdentityError("function identity rejected: module " + hex(ref.module) +
                                " is not loaded in this process (was the other process built from another binary?)");
  std::uintptr_t addr = m->bias + ref.offset;
  bool in_code = false;
  for (const auto& s : m->code) in_code = in_code || (addr >= s.begin && addr < s.end);
  if (!in_code)
    throw FunctionIdentityError("function identity rejected: offset " + hex(ref.offset) + " is outside the code of " +
                                (m->name.empty() ? std::string("the main program") : m->name));
  auto p = reinterpret_cast<const void*>(addr);
  t_cache.verified.emplace(key, p);
  return p;
}

void run_saved_task(const void* data, std::size_t n, std::string* result) {
  InArchive in(data, n);
  CodeRef ref;
  try {
    in(ref);
  } catch (const cereal::Exception& e) {
    throw ProtocolError(std::string("malformed task: ") + e.what());
  }
  auto invoker = reinterpret_cast<Invoker>(const_cast<void*>(resolve_code(ref, type_fingerprint<Invoker>())));
  invoker(in, result);
}

}  // namespace mproc::detail
