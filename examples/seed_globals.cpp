// The seed (../shared/SEED.md): a plugin registry loaded once into a global by the parent.
// Under fork a child sees it (a copy-on-write copy); under spawn and forkserver the child is a
// fresh run of this program, so the global is still empty there: Python 3.8's surprise on
// macOS. The fix is the same as in Python: pass the registry as an argument.
//
//   seed_globals fork|spawn|forkserver
#include <mproc/mproc.hpp>

#include <cstdio>
#include <string>
#include <vector>

struct Registry {
  std::vector<std::string> plugins;
  std::string process(int i) const { return plugins[static_cast<std::size_t>(i) % plugins.size()] + ": " + std::to_string(i); }
  template <class A>
  void serialize(A& a) {
    a(plugins);
  }
};

Registry* g_registry = nullptr;  // set by main at run time, like the seed's use_global.py

std::string show(const std::vector<std::string>& v) {
  std::string s = "[";
  for (std::size_t i = 0; i < v.size(); ++i) s += (i ? ", '" : "'") + v[i] + "'";
  return s + "]";
}

void use_global(std::vector<int> items, mproc::Connection out) {
  std::vector<std::string> results;
  for (int i : items) {
    if (!g_registry) {  // what Python reports as AttributeError: 'NoneType' object has no attribute 'process'
      results.push_back("g_registry is null in " + mproc::current_process().name());
      break;
    }
    results.push_back(g_registry->process(i));
  }
  out.send(results);
}

void use_args(std::vector<int> items, Registry registry, mproc::Connection out) {
  std::vector<std::string> results;
  for (int i : items) results.push_back(registry.process(i));
  out.send(results);
}

int main(int argc, char** argv) {
  mproc::init(argc, argv);
  std::string method = argc > 1 ? argv[1] : mproc::get_start_method();
  mproc::set_start_method(method);
  std::printf("set_start_method: %s\n", method.c_str());

  Registry registry{{"func0", "func1"}};  // "loading plugins" is slow: done once, in the parent
  g_registry = &registry;
  std::printf("plugin loaded.\n");
  std::vector<int> items{0, 1, 2, 3, 4, 5, 6, 7, 8, 9};

  auto [reader, writer] = mproc::Pipe(false);
  mproc::Process global_child(use_global, items, writer);
  global_child.start();
  std::printf("use_global: %s\n", show(reader.recv<std::vector<std::string>>()).c_str());
  global_child.join();

  mproc::Process args_child(use_args, items, registry, writer);
  args_child.start();
  std::printf("use_args:   %s\n", show(reader.recv<std::vector<std::string>>()).c_str());
  args_child.join();

  // A Pipe round trip: the child echoes what it gets, doubled.
  auto [parent_end, child_end] = mproc::Pipe();
  mproc::Process echo(
      [](mproc::Connection c) {
        auto v = c.recv<std::vector<double>>();
        for (auto& x : v) x *= 2;
        c.send(v);
      },
      child_end);
  echo.start();
  parent_end.send(std::vector<double>{1.5, 2.5, 4.0});
  auto back = parent_end.recv<std::vector<double>>();
  echo.join();
  std::printf("pipe round trip: sent [1.5, 2.5, 4] got [%g, %g, %g] from %s (exit code %d)\n\n", back[0], back[1], back[2],
              echo.name().c_str(), echo.exitcode().value_or(-999));
  return 0;
}
