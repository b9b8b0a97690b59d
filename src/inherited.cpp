// The registry behind mproc::inherited and mproc::per_process: which variables exist in this
// binary, how their values travel in a child's start-up message, and what a fork child resets.
#include "inherited.hpp"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <map>
#include <set>
#include <tuple>
#include <vector>

#include "mproc/errors.hpp"
#include "mproc/inherited.hpp"
#include "process_state.hpp"

namespace mproc::detail {
namespace {

struct Pending {
  std::uint64_t fingerprint = 0;
  std::string bytes;
};

struct Registry {
  std::mutex mu;
  std::vector<InheritedBase*> vars;
  std::vector<PerProcessBase*> per_process;
  std::map<std::string, Pending> pending;  // values that arrived before their variable was built
};

// Never destroyed: variables unregister during static destruction, in any order.
Registry& registry() {
  static auto* r = new Registry;
  return *r;
}

std::string basename_of(const char* path) {
  std::string_view s = path;
  auto slash = s.rfind('/');
  return std::string(slash == std::string_view::npos ? s : s.substr(slash + 1));
}

// One entry of the blob: key, type fingerprint, encoded value.
using Entry = std::tuple<std::string, std::uint64_t, std::string>;

void load_into(InheritedBase& v, std::uint64_t fingerprint, const std::string& bytes) {
  if (fingerprint != v.fingerprint())
    throw ProtocolError("mproc::inherited '" + v.key() + "' arrived with another type than it has in this process");
  v.load(bytes.data(), bytes.size());
}

}  // namespace

InheritedBase::InheritedBase(std::string_view name, std::source_location where, std::uint64_t fingerprint,
                             std::string_view type)
    : key_(name.empty() ? std::string(where.file_name()) + ":" + std::to_string(where.line()) : std::string(name)),
      where_(basename_of(where.file_name()) + ":" + std::to_string(where.line())),
      type_(type),
      fingerprint_(fingerprint) {
  auto& r = registry();
  std::lock_guard lock(r.mu);
  r.vars.push_back(this);
}

InheritedBase::~InheritedBase() { unregister(); }

void InheritedBase::unregister() noexcept {
  auto& r = registry();
  std::lock_guard lock(r.mu);
  if (registered_) std::erase(r.vars, this);
  registered_ = false;
}

void InheritedBase::adopt_pending() {
  auto& r = registry();
  std::lock_guard lock(r.mu);
  auto it = r.pending.find(key_);
  if (it == r.pending.end()) return;
  Pending p = std::move(it->second);
  r.pending.erase(it);
  try {
    load_into(*this, p.fingerprint, p.bytes);
  } catch (const std::exception& e) {  // a constructor at static initialisation must not throw
    std::fprintf(stderr, "mproc: cannot restore inherited '%s': %s\n", key_.c_str(), e.what());
  }
}

void InheritedBase::throw_unset() const {
  const auto& st = state();
  std::string what = "mproc::inherited<" + type_ + "> '" + key_ + "' (defined at " + where_ + ") has no value in " +
                     st.name + " (pid " + std::to_string(::getpid()) + ")";
  if (st.started_with < 0)
    what += ": set() it before reading it";
  else
    what += ", started with " + std::string(method_name(static_cast<Method>(st.started_with))) + ": it was not set in " +
            (st.parent_name.empty() ? std::string("the parent") : st.parent_name) +
            " when this process was started. Set it in the parent before starting processes";
  throw StateError(what);
}

PerProcessBase::PerProcessBase() {
  auto& r = registry();
  std::lock_guard lock(r.mu);
  r.per_process.push_back(this);
}

PerProcessBase::~PerProcessBase() {
  auto& r = registry();
  std::lock_guard lock(r.mu);
  std::erase(r.per_process, this);
}

std::string save_inherited() {
  auto& r = registry();
  std::lock_guard lock(r.mu);
  std::vector<Entry> entries;
  std::set<std::string_view> keys;
  for (auto* v : r.vars) {
    // A child could not tell them apart: refuse, rather than give one the other's value.
    if (!keys.insert(v->key()).second)
      throw Error("two mproc::inherited variables share the name '" + v->key() + "': give each its own");
    if (!v->has_value()) continue;
    std::string bytes;
    v->save(bytes);
    entries.emplace_back(v->key(), v->fingerprint(), std::move(bytes));
  }
  std::string out;
  if (!entries.empty()) encode(out, entries);
  return out;
}

void restore_inherited(const std::string& blob) {
  if (blob.empty()) return;
  auto entries = decode<std::vector<Entry>>(blob.data(), blob.size());
  auto& r = registry();
  std::lock_guard lock(r.mu);
  for (auto& [key, fingerprint, bytes] : entries) {
    auto it = std::find_if(r.vars.begin(), r.vars.end(), [&](InheritedBase* v) { return v->key() == key; });
    if (it == r.vars.end())
      r.pending[key] = Pending{fingerprint, std::move(bytes)};
    else
      load_into(**it, fingerprint, bytes);
  }
}

void forget_per_process_after_fork() noexcept {
  auto& r = registry();
  new (&r.mu) std::mutex;  // single-threaded here; a parent thread may have held it at fork
  for (auto* p : r.per_process) p->forget_after_fork();
}

}  // namespace mproc::detail
