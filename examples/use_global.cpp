// The seed's first script: the plugin registry lives in a plain global pointer set by main.
// Under fork every worker has a copy of it and the map works. Under spawn and forkserver a
// worker is a fresh run of this program: main's assignment never happened there, the pointer is
// null, and the task says so. The pool hands that error back as mproc::RemoteError naming the
// worker and its stack; nothing hangs. (use_args and use_inherited are the fixes.)
//
//   use_global [fork|spawn|forkserver|mpi]   (mpi: a worker rank is another run of this program, as under spawn)
#include "seed_plugins.hpp"

PluginRegistry* registry = nullptr;  // filled in by main, in the main process only

std::string process(int i) {
  if (!registry)  // Python: AttributeError: 'NoneType' object has no attribute 'process'
    throw std::runtime_error("process(" + std::to_string(i) + "): the global registry is null in " +
                             mproc::current_process().name() + " (a global set in main() is not there under " +
                             mproc::get_start_method() + ")");
  return registry->process(plugin_for(i), i);
}

int main(int argc, char** argv) {
  mproc::init(argc, argv);
  set_start_method_from(argc, argv);
  PluginRegistry loaded = load_plugins();
  registry = &loaded;
  std::printf("plugin loaded.\n");
  std::fflush(stdout);
  try {
    mproc::Pool pool({.processes = 2});
    print_list(pool.map(process, seed_items()));
  } catch (const mproc::RemoteError& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
  return 0;
}
