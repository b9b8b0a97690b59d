// The mproc way: the global is declared as what it is. An mproc::inherited value set by main
// reaches every worker under every start method (copied with the memory under fork, sent in the
// start-up message under spawn and forkserver), so the task reads it as a global and the map
// gives the same list everywhere. The log says where the plugins were loaded: once, in the main
// process. mproc::per_process is the other shape: an object each worker builds for itself on
// first use (Python's Pool initializer, without a global pointer); its log line comes from the
// workers.
//
//   use_inherited [fork|spawn|forkserver]
#include <unistd.h>

#include "seed_plugins.hpp"

mproc::inherited<PluginRegistry> registry{"registry"};

PluginRegistry load_in_this_process() {
  auto me = mproc::current_process();
  std::printf("plugin loaded. (per_process, in %s)\n", me.name().c_str());
  std::fflush(stdout);
  return load_plugins();
}
mproc::per_process<PluginRegistry> local_registry{load_in_this_process};

std::string process(int i) { return registry->process(plugin_for(i), i); }
std::string process_locally(int i) { return local_registry->process(plugin_for(i), i); }

int main(int argc, char** argv) {
  mproc::init(argc, argv);
  set_start_method_from(argc, argv);
  registry.set(load_plugins());
  std::printf("plugin loaded. (inherited, in %s)\n", mproc::current_process().name().c_str());
  std::fflush(stdout);
  mproc::Pool pool({.processes = 2});
  print_list(pool.map(process, seed_items()));
  print_list(pool.map(process_locally, seed_items()));
  return 0;
}
