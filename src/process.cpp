#include "mproc/process.hpp"

#include <signal.h>
#include <unistd.h>

#include <algorithm>

#include "mproc/detail/timeout.hpp"
#include "mproc/errors.hpp"
#include "inherited.hpp"
#include "popen/popen.hpp"
#include "process_state.hpp"
#include "resource_tracker/resource_tracker.hpp"
#include "spawn/forkserver.hpp"
#include "util/auth.hpp"

namespace mproc {
namespace detail {
namespace {
ProcessState* g_state = new ProcessState;  // leaked on purpose: children replace it, never destroy it

void forget_child(const ProcessImpl* p) {
  auto& st = state();
  std::lock_guard lock(st.children_mu);
  std::erase_if(st.children, [&](const auto& c) { return c.get() == p; });
}

std::vector<std::shared_ptr<ProcessImpl>> children_snapshot() {
  auto& st = state();
  std::lock_guard lock(st.children_mu);
  return st.children;
}
}  // namespace

ProcessImpl::~ProcessImpl() = default;

ProcessState& state() { return *g_state; }

void reset_state_in_child(const std::string& name, std::vector<int> identity, bool daemon, int parent_pid,
                          std::string parent_name, Method started_with) {
  auto* fresh = new ProcessState;
  fresh->initialized = g_state->initialized;
  fresh->argv0 = g_state->argv0;
  fresh->exe.reset(g_state->exe.release());
  fresh->name = name;
  fresh->identity = std::move(identity);
  fresh->daemon = daemon;
  fresh->parent_pid = parent_pid;
  fresh->parent_name = std::move(parent_name);
  fresh->started_with = static_cast<int>(started_with);
  fresh->parents = g_state;
  g_state = fresh;  // the parent's children are not ours to join
  forget_per_process_after_fork();
  forkserver_reset_in_child();
  resource_tracker_reset_in_child();
}

void exit_function() noexcept {
  try {
    auto kids = children_snapshot();
    for (auto& c : kids) {
      std::lock_guard lock(c->mu);
      if (c->daemon && c->popen && !c->popen->poll(false)) c->popen->send_signal(SIGTERM);
    }
    for (auto& c : kids) {
      std::lock_guard lock(c->mu);
      if (c->popen) c->popen->wait(-1);
    }
    std::lock_guard lock(state().children_mu);
    state().children.clear();
  } catch (...) {  // at exit there is no one left to tell
  }
}

}  // namespace detail

Process::Process(ProcessOptions options, detail::Task task) : impl_(std::make_shared<detail::ProcessImpl>()) {
  auto& st = detail::state();
  impl_->task = std::move(task);
  impl_->identity = st.identity;
  {
    std::lock_guard lock(st.children_mu);
    impl_->identity.push_back(++st.child_counter);
  }
  if (options.name.empty()) {
    impl_->name = "Process-";
    for (std::size_t i = 0; i < impl_->identity.size(); ++i) {
      if (i) impl_->name += ':';  // appended piece by piece: GCC 12 warns falsely (-Wrestrict) on "a" + b
      impl_->name += std::to_string(impl_->identity[i]);
    }
  } else {
    impl_->name = std::move(options.name);
  }
  impl_->daemon = options.daemon.value_or(st.daemon);
  impl_->context = options.context;
  impl_->creator_pid = ::getpid();
}

detail::ProcessImpl& Process::impl() const {
  if (impl_->closed) throw Error("process object " + impl_->name + " is closed");
  return *impl_;
}

void Process::start() {
  auto& p = impl();
  std::lock_guard lock(p.mu);
  if (p.popen) throw ProcessError("cannot start a process twice");
  if (p.creator_pid != ::getpid()) throw ProcessError("can only start a process object created by the current process");
  if (detail::state().daemon) throw ProcessError("daemonic processes are not allowed to have children");
  auto method = static_cast<detail::Method>(p.context ? p.context->method_id() : get_context().method_id());
  if (method == detail::Method::mpi)
    throw Error(
        "the 'mpi' context runs the workers of a Pool or ProcessPoolExecutor on MPI ranks; a Process needs the 'fork', "
        "'spawn' or 'forkserver' start method (pass .context = mproc::get_context(\"forkserver\"))");
  if (method != detail::Method::fork && !detail::state().initialized)
    throw Error(std::string("mproc::init(argc, argv) must be called first in main before starting a process with the '") +
                detail::method_name(method) + "' start method: the child re-runs this program and needs it to find its work");
  try {
    switch (method) {
      case detail::Method::fork: p.popen = detail::launch_fork(p); break;
      case detail::Method::spawn: p.popen = detail::launch_spawn(p); break;
      case detail::Method::forkserver: p.popen = detail::launch_forkserver(p); break;
      case detail::Method::mpi: break;  // refused above
    }
  } catch (const OSError& e) {  // "fork: ... (EAGAIN)" alone does not say which start failed
    throw OSError("cannot start process '" + p.name + "' (" + detail::method_name(method) + "): " + e.what(), e.code());
  }
  auto& st = detail::state();
  std::lock_guard lock2(st.children_mu);
  st.children.push_back(impl_);
}

void Process::join() { (void)join_for(-1); }

bool Process::join(seconds timeout) { return join_for(detail::wait_seconds(timeout, "Process.join")); }

bool Process::join_for(double s) {
  auto& p = impl();
  if (p.creator_pid != ::getpid()) throw ProcessError("can only join a child process");
  std::unique_lock lock(p.mu);
  if (!p.popen) throw ProcessError("can only join a started process");
  bool done = p.popen->wait(s).has_value();
  lock.unlock();
  if (done) detail::forget_child(&p);
  return done;
}

bool Process::is_alive() const {
  auto& p = impl();
  std::lock_guard lock(p.mu);
  if (!p.popen || p.creator_pid != ::getpid()) return false;
  return !p.popen->poll(false);
}

std::optional<int> Process::exitcode() const {
  auto& p = impl();
  std::lock_guard lock(p.mu);
  if (!p.popen) return std::nullopt;
  return p.popen->poll(false);
}

std::optional<int> Process::pid() const {
  auto& p = impl();
  std::lock_guard lock(p.mu);
  if (!p.popen) return std::nullopt;
  return p.popen->pid();
}

const std::string& Process::name() const { return impl_->name; }
void Process::set_name(std::string name) { impl().name = std::move(name); }
bool Process::daemon() const { return impl_->daemon; }

void Process::set_daemon(bool daemon) {
  auto& p = impl();
  if (p.popen) throw ProcessError("cannot change the daemon flag of a started process");
  p.daemon = daemon;
}

int Process::sentinel() const {
  auto& p = impl();
  std::lock_guard lock(p.mu);
  if (!p.popen) throw ProcessError("a process has a sentinel only once started");
  return p.popen->sentinel();
}

namespace {
void signal_process(detail::ProcessImpl& p, int sig) {
  std::lock_guard lock(p.mu);
  if (p.popen) p.popen->send_signal(sig);
}
}  // namespace

void Process::interrupt() { signal_process(impl(), SIGINT); }
void Process::terminate() { signal_process(impl(), SIGTERM); }
void Process::kill() { signal_process(impl(), SIGKILL); }

void Process::close() {
  auto& p = impl();
  std::unique_lock lock(p.mu);
  if (p.popen && !p.popen->poll(false))
    throw ProcessError("cannot close process " + p.name + " while it is still running; join or terminate it first");
  p.popen.reset();
  p.task = {};
  p.closed = true;
  lock.unlock();
  detail::forget_child(&p);
}

std::string ProcessInfo::authkey() const { return detail::authkey(); }

bool ParentProcess::is_alive() const {
  if (::getppid() == pid_) return true;  // fast path for fork and spawn children
  int fd = detail::pidfd_open(pid_);
  if (fd < 0) return false;
  bool alive = !os::wait_readable(fd, 0);  // a pidfd turns readable when its process exits
  ::close(fd);
  return alive;
}

ProcessInfo current_process() {
  auto& st = detail::state();
  return ProcessInfo(st.name, ::getpid(), st.daemon, st.identity);
}

std::optional<ParentProcess> parent_process() {
  auto& st = detail::state();
  if (st.parent_pid == 0) return std::nullopt;
  return ParentProcess(st.parent_name, st.parent_pid);
}

std::vector<Process> active_children() {
  std::vector<Process> alive;
  for (auto& c : detail::children_snapshot()) {
    std::unique_lock lock(c->mu);
    bool running = c->popen && !c->popen->poll(false);
    lock.unlock();
    if (running)
      alive.push_back(Process(c));
    else
      detail::forget_child(c.get());
  }
  return alive;
}

}  // namespace mproc
