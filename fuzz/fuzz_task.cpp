// The task decoder a worker runs on what its pool (or a Process's start-up message) sends:
// run_saved_task, which checks a function identity, then rebuilds the target and its arguments.
//
// A function identity carries an HMAC tag with the program's key, which no fuzzer can forge, so
// the input's first byte picks a shape: 0 hands the rest over as it is (identity included: the
// tag check is fuzzed), any other value picks a known target whose valid identity the harness
// writes itself, and the rest of the input is what follows the identity (a function object,
// arguments, a map chunk's items). So the argument decoders are reached however this binary is
// built, and the seed corpus stays valid across builds.
#include <map>
#include <optional>
#include <set>
#include <string>
#include <tuple>
#include <unordered_map>
#include <variant>
#include <vector>

#include "common.hpp"
#include "mproc/detail/callable.hpp"
#include "mproc/detail/pool_core.hpp"
#include "mproc/errors.hpp"

namespace {

using namespace mproc::detail;

struct Plain {  // trivially copyable: travels as its bytes
  std::int32_t a;
  double b;
  char c[8];
};

struct Scale {  // a function object with state: travels with serialize()
  std::uint32_t factor = 1;
  std::string label;
  template <class A>
  void serialize(A& a) {
    a(factor, label);
  }
  std::uint32_t operator()(std::uint32_t x) const { return x * factor; }
};

std::size_t containers(std::string s, std::vector<std::int32_t> v, std::map<std::string, std::vector<std::string>> m,
                       std::optional<double> d, bool b) {
  return s.size() + v.size() + m.size() + (d ? 1 : 0) + (b ? 1 : 0);
}

std::string variants(std::variant<std::int64_t, std::string, std::vector<char>> v,
                     std::tuple<std::uint8_t, std::set<std::int32_t>, std::pair<std::int32_t, std::string>> t) {
  return std::to_string(v.index()) + std::get<2>(t).second;
}

std::uint32_t plain(Plain p, std::unordered_map<std::int32_t, std::string> m) {
  return static_cast<std::uint32_t>(p.a) + static_cast<std::uint32_t>(m.size());  // wraps: no overflow
}

std::int32_t square(std::int32_t x) { return static_cast<std::int32_t>(static_cast<std::uint32_t>(x) * static_cast<std::uint32_t>(x)); }
std::size_t length(std::string s) { return s.size(); }
std::string join(std::int32_t n, std::string s) { return std::to_string(n) + s; }

// The bytes before the fuzzed part, for shape k: the invoker's identity, then the target's when
// it is a function pointer (a function object is part of the fuzzed bytes).
template <class F>
std::string prefix(const void* invoker, F f) {
  std::string out;
  OutArchive ar(out);
  ar(code_ref(invoker, type_fingerprint<Invoker>()));
  if constexpr (is_function_pointer<F>) save_target(ar, f);
  return out;
}

template <class F, class... Args>
std::string call_prefix(F f) {
  return prefix(reinterpret_cast<const void*>(&invoke_thunk<F, Args...>), f);
}

template <class F, class T, bool Star = false>
std::string map_prefix(F f) {
  return prefix(reinterpret_cast<const void*>(&map_chunk_thunk<F, T, Star>), f);
}

std::vector<std::string>& prefixes() {
  static std::vector<std::string> p = {
      call_prefix<decltype(&containers), std::string, std::vector<std::int32_t>,
                  std::map<std::string, std::vector<std::string>>, std::optional<double>, bool>(&containers),
      call_prefix<decltype(&variants), std::variant<std::int64_t, std::string, std::vector<char>>,
                  std::tuple<std::uint8_t, std::set<std::int32_t>, std::pair<std::int32_t, std::string>>>(&variants),
      call_prefix<decltype(&plain), Plain, std::unordered_map<std::int32_t, std::string>>(&plain),
      call_prefix<Scale, std::uint32_t>(Scale{}),
      map_prefix<decltype(&square), std::int32_t>(&square),
      map_prefix<decltype(&length), std::string>(&length),
      map_prefix<Scale, std::uint32_t>(Scale{}),
      map_prefix<decltype(&join), std::tuple<std::int32_t, std::string>, true>(&join),
  };
  return p;
}

// Valid tasks of every shape, written by the encoders the pool and Process use.
std::vector<std::string> seeds() {
  std::vector<std::string> whole;
  auto save_task = [&](Task t) {
    std::string out;
    OutArchive ar(out);
    t.save(ar);
    whole.push_back(out);
  };
  save_task(make_task(&containers, std::string("s"), std::vector<std::int32_t>{1, 2, 3},
                      std::map<std::string, std::vector<std::string>>{{"k", {"v", "w"}}}, std::optional<double>(2.5), true));
  save_task(make_task(&variants, std::variant<std::int64_t, std::string, std::vector<char>>(std::string("x")),
                      std::tuple<std::uint8_t, std::set<std::int32_t>, std::pair<std::int32_t, std::string>>{
                          7, {1, 5}, {3, "three"}}));
  save_task(make_task(&plain, Plain{1, 2.0, "abc"}, std::unordered_map<std::int32_t, std::string>{{4, "de"}}));
  save_task(make_task(Scale{3, "three"}, std::uint32_t{14}));
  auto map_task = [&](std::size_t shape, auto f, auto items) {
    std::string out = prefixes()[shape];
    OutArchive ar(out);
    if constexpr (!is_function_pointer<decltype(f)>) save_target(ar, f);
    save_items(ar, items, 0, items.size());
    whole.push_back(out);
  };
  map_task(4, &square, std::vector<std::int32_t>{1, -2, 3});
  map_task(5, &length, std::vector<std::string>{"a", "bb", ""});
  map_task(6, Scale{2, "two"}, std::vector<std::uint32_t>{9, 10});
  map_task(7, &join, std::vector<std::tuple<std::int32_t, std::string>>{{1, "one"}, {2, "two"}});
  std::vector<std::string> out;
  for (std::size_t k = 0; k < whole.size(); ++k) {
    const std::string& p = prefixes()[k];
    out.push_back(std::string(1, static_cast<char>(k + 1)) + whole[k].substr(p.size()));
  }
  out.push_back(std::string(1, '\0') + whole[0]);  // shape 0: a whole task, identity and all
  return out;
}

}  // namespace

MPROC_FUZZ_SEEDS(seeds)

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t n) {
  if (n == 0) return 0;
  std::string task;
  std::size_t shape = data[0];
  if (shape != 0) {
    if (shape > prefixes().size()) return -1;  // not a shape: keep it out of the corpus
    task = prefixes()[shape - 1];
  }
  task.append(reinterpret_cast<const char*>(data + 1), n - 1);
  std::string result(kChunkHeader, '\0');
  try {
    run_saved_task(task.data(), task.size(), &result);
  } catch (const mproc::Error&) {
    // rejected with a named cause, as a worker reports it
  }
  return 0;
}
