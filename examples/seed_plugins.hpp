// The seed's plugin registry (../shared/SEED.md), shared by use_global, use_args and
// use_inherited: two plugins, func0 and func1, "loaded" once at some cost; item i goes to
// func{i % 2} and comes back as "func{i % 2}: {i}".
#pragma once

#include <mproc/mproc.hpp>
#ifdef MPROC_EXAMPLES_MPI
#include <mproc/mpi.hpp>  // the "mpi" method too: the workers are MPI ranks (README, "Running on a cluster")
#endif

#include <cstdio>
#include <stdexcept>
#include <string>
#include <vector>

struct PluginRegistry {
  std::vector<std::string> names;

  std::string process(const std::string& name, int i) const {
    for (const auto& n : names)
      if (n == name) return name + ": " + std::to_string(i);
    throw std::out_of_range("no plugin named " + name);
  }
  template <class A>
  void serialize(A& a) {
    a(names);
  }
};

inline PluginRegistry load_plugins() { return PluginRegistry{{"func0", "func1"}}; }

inline std::string plugin_for(int i) { return "func" + std::to_string(i % 2); }

/// The items 0..9 of the seed.
inline std::vector<int> seed_items() { return {0, 1, 2, 3, 4, 5, 6, 7, 8, 9}; }

/// Prints a list of strings as Python prints one: ['func0: 0', 'func1: 1', ...]
inline void print_list(const std::vector<std::string>& v) {
  std::string s = "[";
  for (std::size_t i = 0; i < v.size(); ++i) s += (i ? ", '" : "'") + v[i] + "'";
  std::printf("%s]\n", s.c_str());
  std::fflush(stdout);  // before the workers of a next map print their own lines
}

/// The seed's start-up: the start method from argv[1] (default: the platform's), logged as the
/// seed logs it.
inline void set_start_method_from(int argc, char** argv) {
  std::string method = argc > 1 ? argv[1] : mproc::get_start_method();
  mproc::set_start_method(method);
  std::printf("set_start_method: %s\n", method.c_str());
  std::fflush(stdout);
}
