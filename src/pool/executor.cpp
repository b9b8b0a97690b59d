#include "mproc/executor.hpp"

#include <signal.h>

namespace mproc {
namespace {
std::shared_ptr<detail::PoolCore> make_core(const ExecutorOptions& o) {
  detail::PoolConfig cfg;
  cfg.context = o.mp_context ? *o.mp_context : get_context();
  cfg.processes = o.max_workers.value_or(detail::default_workers(*cfg.context));
  cfg.initializer = o.initializer.task();
  cfg.maxtasksperchild = o.max_tasks_per_child;
  cfg.break_on_crash = o.break_on_crash;
  cfg.limits = o.limits;
  if (cfg.processes < 1 && o.max_workers) throw std::invalid_argument("mproc: max_workers must be at least 1");
  if (cfg.maxtasksperchild < 0) throw std::invalid_argument("mproc: max_tasks_per_child must be >= 0");
  return std::make_shared<detail::PoolCore>(std::move(cfg));
}
}  // namespace

ProcessPoolExecutor::ProcessPoolExecutor(ExecutorOptions options) : pool_(make_core(options)) { core_ = pool_.core_; }

ProcessPoolExecutor::~ProcessPoolExecutor() {
  try {
    shutdown(true);
  } catch (...) {  // a destructor reports nothing further
  }
}

void ProcessPoolExecutor::shutdown(bool wait, bool cancel_futures) {
  if (cancel_futures) core_->cancel_all(std::make_exception_ptr(CancelledError("cancelled by shutdown(cancel_futures = true)")));
  core_->close();
  if (wait) core_->join();
}

void ProcessPoolExecutor::terminate_workers() {
  core_->terminate(SIGTERM);
  core_->join();
}

void ProcessPoolExecutor::kill_workers() {
  core_->terminate(SIGKILL);
  core_->join();
}

}  // namespace mproc
