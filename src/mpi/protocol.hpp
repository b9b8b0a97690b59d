// What rank 0 and a worker rank say to each other over MPI (see README, "Running on a cluster").
//
// A pool's chunks keep the local wire format ([id: 8][kind: 1][task]) and its answers too
// ([id: 8][ok: 1][result, or a Failure]), so that a worker rank hands them to its local pool as
// they come. Small ones travel many per message (kTasks, kAnswers: [length: 8][bytes] each);
// a large one travels alone (kTask, kAnswer), as its own buffer.
#pragma once

#include <cstdint>
#include <string>

#include "mproc/detail/pool_core.hpp"

namespace mproc::detail::mpi {

enum Tag : int {
  kAttach = 1,    // rank 0 -> worker: Attach, a pool takes this rank
  kAttached = 2,  // worker -> rank 0: Attached
  kTasks = 3,     // rank 0 -> worker: chunks, packed
  kTask = 4,      // rank 0 -> worker: one chunk
  kAnswers = 5,   // worker -> rank 0: answers, packed
  kAnswer = 6,    // worker -> rank 0: one answer
  kDetach = 7,    // rank 0 -> worker: [terminate signal: 4] (0: finish what was sent first)
  kDetached = 8,  // worker -> rank 0: empty, after the last answer
  kExit = 9,      // rank 0 -> worker: the program ends
};

/// Sent alone rather than packed from this size on.
constexpr std::size_t kAloneBytes = 64 * 1024;
/// MPI counts bytes in an int: a larger chunk or answer fails alone, with an error saying so.
constexpr std::size_t kMaxMessage = 0x7fffffff;
/// Bumped whenever a message's layout changes: ranks of different mproc builds refuse each other.
constexpr std::uint32_t kVersion = 1;

struct Attach {
  std::uint32_t version = kVersion;
  std::uint64_t program = 0;  // the build id of rank 0's program: every rank must run the same
  std::string authkey;        // rank 0's: function identities are tagged with it
  std::string initializer;    // written by Task::save; empty: none
  std::int64_t maxtasks = 0;
  double task_timeout = 0;
  std::int32_t max_retries = 0;
  bool break_on_crash = false;
  std::uint64_t address_space = 0, cpu_seconds = 0, open_files = 0;
  template <class A>
  void serialize(A& a) {
    a(version, program, authkey, initializer, maxtasks, task_timeout, max_retries, break_on_crash, address_space,
      cpu_seconds, open_files);
  }
};

struct Attached {
  std::string error;  // empty: ready
  std::int32_t pid = 0;
  std::string host;
  template <class A>
  void serialize(A& a) {
    a(error, pid, host);
  }
};

/// Why a chunk failed on a worker rank, as its local pool said.
struct Failure {
  enum Kind : std::uint8_t { remote = 1, crashed = 2, timeout = 3, broken = 4, other = 5 };
  std::uint8_t kind = other;
  std::string type, what, worker, stack;  // remote: the exception; others: what() only
  std::int32_t pid = 0, code = 0;         // the local worker's pid; crashed: its exit code
  template <class A>
  void serialize(A& a) {
    a(kind, type, what, worker, stack, pid, code);
  }
};

template <class T>
std::string encoded(const T& v) {
  std::string s;
  encode(s, v);
  return s;
}

}  // namespace mproc::detail::mpi
