#include "mproc/pool.hpp"

namespace mproc {

Pool::Pool(PoolOptions options) {
  detail::PoolConfig cfg;
  if (options.processes && *options.processes < 1) throw std::invalid_argument("mproc: a pool needs at least one process");
  cfg.context = options.context ? *options.context : get_context();
  cfg.processes = options.processes.value_or(detail::default_workers(*cfg.context));
  cfg.initializer = options.initializer.task();
  cfg.maxtasksperchild = options.maxtasksperchild;
  cfg.task_timeout = options.task_timeout ? options.task_timeout->count() : 0;
  cfg.max_retries = options.max_retries;
  cfg.limits = options.limits;
  if (cfg.maxtasksperchild < 0) throw std::invalid_argument("mproc: maxtasksperchild must be >= 0");
  core_ = std::make_shared<detail::PoolCore>(std::move(cfg));
  progress_ = std::move(options.progress);
}

Pool::~Pool() {
  if (core_) {
    core_->terminate();
    core_->join();
  }
}

void Pool::close() { core_->close(); }
void Pool::terminate() { core_->terminate(); }
void Pool::join() { core_->join(); }
int Pool::processes() const { return core_->processes(); }
std::vector<int> Pool::worker_pids() const { return core_->worker_pids(); }

// Python's rule: about four chunks per worker.
std::size_t Pool::default_chunksize(std::size_t n) const {
  std::size_t per = static_cast<std::size_t>(processes()) * 4;
  std::size_t size = n / per;
  if (n % per) ++size;
  return size == 0 ? 1 : size;
}

}  // namespace mproc
