#include "pool/engine.hpp"

#include <signal.h>

#include <atomic>
#include <string>

#include "process_state.hpp"

namespace mproc::detail {
namespace {
std::atomic<const MpiBackend*> g_mpi{nullptr};
}  // namespace

void set_mpi_backend(const MpiBackend* backend) noexcept { g_mpi.store(backend, std::memory_order_release); }
const MpiBackend* mpi_backend() noexcept { return g_mpi.load(std::memory_order_acquire); }

std::string describe_exit(int code) {
  if (code >= 0) return "exited with code " + std::to_string(code);
  std::string s = "killed by signal " + std::to_string(-code);
  if (-code == SIGXCPU) s += " (SIGXCPU: over its cpu_seconds limit)";
  return s;
}

int default_workers(const Context& ctx) { return ctx.method_id() == static_cast<int>(Method::mpi) ? 0 : cpu_count(); }

PoolCore::PoolCore(PoolConfig config) {
  if (!config.context) config.context = get_context();
  if (config.context->method_id() == static_cast<int>(Method::mpi)) {
    const MpiBackend* mpi = mpi_backend();
    if (!mpi) throw_mpi_unavailable();
    impl_ = mpi->make_engine(std::move(config));
  } else {
    impl_ = make_local_engine(std::move(config));
  }
}

PoolCore::~PoolCore() {
  impl_->terminate(15);
  impl_->join();
}

void PoolCore::submit(std::vector<Chunk> chunks) { impl_->submit(std::move(chunks)); }
bool PoolCore::cancel(const JobBase* job) { return impl_->cancel(job); }
void PoolCore::cancel_all(std::exception_ptr error) { impl_->cancel_all(std::move(error)); }
void PoolCore::close() { impl_->close(); }
void PoolCore::terminate(int signal) { impl_->terminate(signal); }
void PoolCore::join() { impl_->join(); }
int PoolCore::processes() const noexcept { return impl_->processes(); }
std::vector<int> PoolCore::worker_pids() const { return impl_->worker_pids(); }
std::string PoolCore::take_buffer() { return impl_->take_buffer(); }

}  // namespace mproc::detail
