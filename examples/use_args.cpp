// The seed's fix: the registry travels with the task. A function object that carries it (the
// C++ form of Python's functools.partial(process, registry)) is serialised with every chunk of
// work, so the map gives the same list under every start method.
//
//   use_args [fork|spawn|forkserver|mpi]     (mpi: alone, or under mpirun -n 3)
#include "seed_plugins.hpp"

struct Process {
  PluginRegistry registry;
  std::string operator()(int i) const { return registry.process(plugin_for(i), i); }
  template <class A>
  void serialize(A& a) {
    a(registry);
  }
};

int main(int argc, char** argv) {
  mproc::init(argc, argv);
  set_start_method_from(argc, argv);
  PluginRegistry registry = load_plugins();
  std::printf("plugin loaded.\n");
  std::fflush(stdout);
  mproc::Pool pool({.processes = 2});
  print_list(pool.map(Process{registry}, seed_items()));
  return 0;
}
