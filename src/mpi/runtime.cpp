#include "mpi/runtime.hpp"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "mpi/relay.hpp"
#include "mproc/errors.hpp"

namespace mproc::detail::mpi {
namespace {

struct State {
  std::mutex mu;  // every MPI call
  bool ours = false;    // MPI_Init was ours: so is MPI_Finalize
  bool leader = false;  // the program's rank 0 (a spawned worker's world has a rank 0 too)
  MPI_Comm world = MPI_COMM_NULL;
  int rank = 0, size = 1;
  std::string host;
  std::mutex ranks_mu;
  std::vector<bool> busy;  // rank 0: worker ranks a pool holds
};

State& state() {
  static State s;
  return s;
}

// Rank 0 at exit: the worker ranks leave their loop, then MPI ends in every rank.
void finalize_at_exit() {
  auto& s = state();
  {
    std::lock_guard l(s.mu);
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (finalized) return;
  }
  if (s.leader)
    for (int r = 1; r < s.size; ++r) {
      try {
        send(s.world, r, kExit, {});
      } catch (...) {
      }
    }
  std::lock_guard l(s.mu);
  MPI_Comm_free(&s.world);
  if (s.ours || !s.leader) MPI_Finalize();  // a worker rank is ours to end in any case
}

void initialize(int* argc, char*** argv) {
  auto& s = state();
  std::lock_guard l(s.mu);
  int already = 0;
  MPI_Initialized(&already);
  if (s.world != MPI_COMM_NULL) return;
  if (!already) {
    int provided = 0;
    check(MPI_Init_thread(argc, argv, MPI_THREAD_MULTIPLE, &provided), "MPI_Init_thread");
    if (provided < MPI_THREAD_SERIALIZED)
      throw Error("mproc's mpi context needs MPI_THREAD_SERIALIZED at least; this MPI library offers level " +
                  std::to_string(provided));
    s.ours = true;
  }
  check(MPI_Comm_dup(MPI_COMM_WORLD, &s.world), "MPI_Comm_dup");
  MPI_Comm_rank(s.world, &s.rank);
  MPI_Comm_size(s.world, &s.size);
  char name[256] = {};
  ::gethostname(name, sizeof name - 1);
  s.host = name;
  s.busy.assign(static_cast<std::size_t>(s.size), false);
  MPI_Comm parent = MPI_COMM_NULL;
  MPI_Comm_get_parent(&parent);
  // The program's rank 0 (not a worker spawned by a pool, whose world has a rank 0 too) tells the
  // worker ranks to end even when the program started MPI itself (they never return from
  // mproc::init, so only this ends them); it ends MPI only if mproc started it.
  s.leader = s.rank == 0 && parent == MPI_COMM_NULL;
  if (s.leader) std::atexit(finalize_at_exit);
}

bool under_mpirun() {
  // OpenMPI's mpirun sets the first; PMIx and PMI launchers (srun, hydra) the others.
  for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK"})
    if (std::getenv(v)) return true;
  return false;
}

[[noreturn]] void end_worker_rank() {
  finalize_at_exit();
  std::exit(0);
}

}  // namespace

void check(int rc, const char* call) {
  if (rc == MPI_SUCCESS) return;
  char msg[MPI_MAX_ERROR_STRING] = {};
  int len = 0;
  MPI_Error_string(rc, msg, &len);
  throw Error(std::string(call) + " failed: " + std::string(msg, static_cast<std::size_t>(len)));
}

void ensure_initialized() { initialize(nullptr, nullptr); }
std::unique_lock<std::mutex> lock() { return std::unique_lock(state().mu); }
MPI_Comm world() { return state().world; }
int world_rank() { return state().rank; }
int world_size() { return state().size; }
const std::string& host() { return state().host; }

std::vector<int> take_ranks(int want) {
  auto& s = state();
  std::lock_guard l(s.ranks_mu);
  std::vector<int> free;
  for (int r = 1; r < s.size; ++r)
    if (!s.busy[static_cast<std::size_t>(r)]) free.push_back(r);
  if (want > static_cast<int>(free.size()) || free.empty())
    throw Error("the mpi context has " + std::to_string(free.size()) + " free worker rank(s) of the " +
                std::to_string(s.size - 1) + " that mpirun started (-n " + std::to_string(s.size) + "); this pool asks for " +
                (want ? std::to_string(want) : std::string("at least one")) +
                ". Start more ranks, ask for fewer workers, or close the pool that holds them");
  if (want) free.resize(static_cast<std::size_t>(want));
  for (int r : free) s.busy[static_cast<std::size_t>(r)] = true;
  return free;
}

void release_ranks(const std::vector<int>& ranks) {
  auto& s = state();
  std::lock_guard l(s.ranks_mu);
  for (int r : ranks) s.busy[static_cast<std::size_t>(r)] = false;
}

std::optional<Probed> try_probe(MPI_Comm comm, int source) {
  auto l = lock();
  int flag = 0;
  Probed p;
  MPI_Status status;
  check(MPI_Improbe(source, MPI_ANY_TAG, comm, &flag, &p.handle, &status), "MPI_Improbe");
  if (!flag) return std::nullopt;
  int count = 0;
  MPI_Get_count(&status, MPI_BYTE, &count);
  p.tag = status.MPI_TAG;
  p.size = static_cast<std::size_t>(count);
  return p;
}

void receive_into(Probed& p, void* dst) {
  auto l = lock();
  check(MPI_Mrecv(dst, static_cast<int>(p.size), MPI_BYTE, &p.handle, MPI_STATUS_IGNORE), "MPI_Mrecv");
}

Message receive(Probed& p, std::string* spare) {
  Message m;
  m.tag = p.tag;
  if (spare && spare->capacity() >= p.size) m.bytes = std::move(*spare);
  m.bytes.resize(p.size);  // in a spare of this size or more: no page to fault in, nothing to zero
  receive_into(p, m.bytes.data());
  return m;
}

std::optional<Message> try_recv(MPI_Comm comm, int source, std::string* spare) {
  auto p = try_probe(comm, source);
  if (!p) return std::nullopt;
  return receive(*p, spare);
}

Sends::~Sends() {
  // Only at the end of an exchange that already waited for its sends; a request still pending
  // here (an error path) is let go rather than waited for, and its buffer kept alive.
  for (auto& p : pending_) {
    auto l = lock();
    int done = 0;
    MPI_Test(&p.request, &done, MPI_STATUS_IGNORE);
    if (!done) {
      MPI_Request_free(&p.request);
      new std::string(std::move(p.bytes));  // MPI may still read it
    }
  }
}

void Sends::start(MPI_Comm comm, int dest, int tag, std::string bytes) {
  if (bytes.size() > static_cast<std::size_t>(INT32_MAX))
    throw Error("an MPI message of " + std::to_string(bytes.size()) + " bytes is over MPI's limit of 2 GiB per message");
  pending_.push_back({MPI_REQUEST_NULL, std::move(bytes)});
  auto& p = pending_.back();
  auto l = lock();
  int rc = MPI_Isend(p.bytes.data(), static_cast<int>(p.bytes.size()), MPI_BYTE, dest, tag, comm, &p.request);
  if (rc != MPI_SUCCESS) {
    pending_.pop_back();
    check(rc, "MPI_Isend");
  }
}

bool Sends::test(std::vector<std::string>* finished) {
  if (pending_.empty()) return false;
  auto l = lock();
  std::size_t before = pending_.size();
  std::erase_if(pending_, [&](Pending& p) {
    int done = 0;
    MPI_Test(&p.request, &done, MPI_STATUS_IGNORE);
    if (done && finished) finished->push_back(std::move(p.bytes));
    return done != 0;
  });
  return pending_.size() != before;
}

void Sends::wait() {
  Backoff backoff;
  while (!empty())
    if (!test()) backoff.pause();
}

void send(MPI_Comm comm, int dest, int tag, std::string bytes) {
  Sends s;
  s.start(comm, dest, tag, std::move(bytes));
  s.wait();
}

Message recv(MPI_Comm comm, int source, std::chrono::microseconds cap) {
  Backoff backoff(cap);
  for (;;) {
    if (auto m = try_recv(comm, source)) return std::move(*m);
    backoff.pause();
  }
}

std::chrono::microseconds Backoff::next() noexcept {
  constexpr int kSpins = 16;
  if (misses_ < kSpins) {
    ++misses_;
    return std::chrono::microseconds(0);
  }
  int doublings = std::min(misses_++ - kSpins, 16);
  return std::min(cap_, std::chrono::microseconds(10) * (1 << doublings));
}

void Backoff::pause() {
  auto d = next();
  if (d.count() != 0) std::this_thread::sleep_for(d);
}

void append_frame(std::string& packed, std::string_view frame) {
  std::uint64_t n = frame.size();
  packed.append(reinterpret_cast<const char*>(&n), sizeof n);
  packed.append(frame);
}

// mproc::init's part: which role this rank has.
void init_ranks(int argc, char** argv) {
  bool spawned = argc >= 2 && argv && argv[1] && std::strcmp(argv[1], kWorkerMarker) == 0;
  if (!spawned && !under_mpirun()) return;  // MPI starts later, if a pool asks for it
  try {
    initialize(&argc, &argv);
    MPI_Comm parent = MPI_COMM_NULL;
    {
      auto l = lock();
      MPI_Comm_get_parent(&parent);
    }
    if (parent != MPI_COMM_NULL) {  // the dynamic model: one pool, then the end
      Message m = recv(parent, 0);
      if (m.tag == kAttach) serve_pool(parent, 0, std::move(m));
      {
        auto l = lock();
        MPI_Comm_disconnect(&parent);
      }
      end_worker_rank();
    }
    if (spawned) throw Error("started as an MPI worker, but no parent spawned it");
    if (world_rank() == 0) return;
    // The static model: this rank serves rank 0's pools, one after another, until the program ends.
    for (;;) {
      Message m = recv(world(), 0, std::chrono::microseconds(5000));  // idle between pools
      if (m.tag == kExit) break;
      if (m.tag == kAttach && !serve_pool(world(), 0, std::move(m))) break;
    }
    end_worker_rank();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mproc: MPI rank %d on %s: %s\n", world_rank(), host().c_str(), e.what());
    MPI_Abort(MPI_COMM_WORLD, 1);
    std::_Exit(1);
  }
}

}  // namespace mproc::detail::mpi
