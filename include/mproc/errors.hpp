// mproc errors: Python's exception names, all derived from mproc::Error.
#pragma once

#include <stdexcept>
#include <string>
#include <system_error>

namespace mproc {

/// Base of every error mproc throws (Python: multiprocessing.ProcessError's family and friends).
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// Python: multiprocessing.ProcessError. Starting, joining or signalling a process went wrong.
class ProcessError : public Error {
 public:
  using Error::Error;
};

/// Python: multiprocessing.BufferTooShort. recv_bytes_into() got a message larger than the buffer;
/// the message is kept and the next recv_bytes() returns it.
class BufferTooShort : public ProcessError {
 public:
  BufferTooShort(const std::string& what, std::size_t needed) : ProcessError(what), needed_(needed) {}
  /// Size of the message that did not fit.
  std::size_t needed() const noexcept { return needed_; }

 private:
  std::size_t needed_;
};

/// Python: multiprocessing.TimeoutError.
class TimeoutError : public ProcessError {
 public:
  using ProcessError::ProcessError;
};

/// Python: OSError. A system call failed: out of descriptors (EMFILE), of processes (EAGAIN from
/// fork), of memory... code() is its errno; what() names the operation, the object and the
/// errno's name, e.g. "cannot start process 'Process-1' (fork): fork: Resource temporarily
/// unavailable (EAGAIN)". Where Python raises OSError, and for what src/os's calls report.
class OSError : public Error {
 public:
  OSError(const std::string& what, std::error_code code) : Error(what), code_(code) {}
  /// The errno, in std::system_category(): compare with std::errc::too_many_files_open, ...
  std::error_code code() const noexcept { return code_; }

 private:
  std::error_code code_;
};

/// Python: FileExistsError. Creating a named object (a SharedMemory segment) whose name is taken.
class FileExistsError : public Error {
 public:
  using Error::Error;
};

/// Python: FileNotFoundError. Attaching to or unlinking a named object that does not exist.
class FileNotFoundError : public Error {
 public:
  using Error::Error;
};

/// Python: IndexError. An index out of range (ShareableList).
class IndexError : public Error {
 public:
  using Error::Error;
};

/// Python: multiprocessing.AuthenticationError. A peer did not prove it holds the authkey.
class AuthenticationError : public ProcessError {
 public:
  using ProcessError::ProcessError;
};

/// Python: ConnectionError (ConnectionRefusedError, BrokenPipeError, ...): nobody listens at an
/// address, or the server of a Connection went away (a manager server that died).
class ConnectionError : public Error {
 public:
  using Error::Error;
};

/// Python: KeyError. A key that is not in a manager's dict.
class KeyError : public Error {
 public:
  using Error::Error;
};

/// Python: EOFError. The peer of a Connection closed its end; nothing more will arrive.
class EOFError : public Error {
 public:
  using Error::Error;
};

/// Python: ValueError. An argument out of range (a negative Semaphore value, a Barrier of no
/// parties), or a semaphore released more times than it was acquired (BoundedSemaphore).
class ValueError : public Error {
 public:
  using Error::Error;
};

/// Python: RuntimeError, as threading raises it for lock misuse: releasing a lock the calling
/// thread does not hold, wait() or notify() on a Condition whose lock it does not hold, or a
/// blocking acquire() of a Lock it already holds (which would never return).
class RuntimeError : public Error {
 public:
  using Error::Error;
};

/// A global made explicit with mproc::inherited was read where it has no value: never set
/// before this process was started, or never set at all. The message names the variable, the
/// process and its start method.
class StateError : public Error {
 public:
  using Error::Error;
};

/// Python: threading.BrokenBarrierError. The Barrier was aborted, reset while this party
/// waited, timed out, its action threw, or a party died while waiting at it.
class BrokenBarrierError : public RuntimeError {
 public:
  using RuntimeError::RuntimeError;
};

/// Bytes on a channel are not a well-formed mproc frame (bad magic, truncated, over the size
/// limit, or a payload that does not decode). The connection is unusable afterwards.
class ProtocolError : public Error {
 public:
  using Error::Error;
};

/// recv<T>() found a message of another type. The message is kept: a recv of the right type, or
/// recv_bytes(), still returns it.
class TypeMismatchError : public ProtocolError {
 public:
  using ProtocolError::ProtocolError;
};

/// A function identity that arrived on a channel does not name code of this binary signed with
/// this program's key. It is never called.
class FunctionIdentityError : public ProtocolError {
 public:
  using ProtocolError::ProtocolError;
};

/// An exception thrown by a task in a worker, carried back to the caller (Python: the exception
/// re-raised with a multiprocessing.pool.RemoteTraceback as its cause). what() reads like
/// Python's print: the remote type and message, then the worker's stack.
class RemoteError : public Error {
 public:
  RemoteError(std::string type, std::string message, std::string worker, int pid, std::string stack);
  /// The remote exception's type, demangled ("std::runtime_error", "int", ...).
  const std::string& type() const noexcept { return type_; }
  /// The remote what(), empty when the exception was not a std::exception.
  const std::string& message() const noexcept { return message_; }
  /// The worker's name and pid.
  const std::string& worker() const noexcept { return worker_; }
  int pid() const noexcept { return pid_; }
  /// Where it was thrown, innermost frame first, symbolised; empty when unknown.
  const std::string& stack() const noexcept { return stack_; }

 private:
  std::string type_, message_, worker_;
  int pid_;
  std::string stack_;
};

/// The worker running a task died (a signal, abort, exit, a null dereference). The pool replaced
/// it; the other tasks were not affected.
class WorkerCrashed : public Error {
 public:
  WorkerCrashed(const std::string& what, int pid, int exitcode, std::size_t first_item, std::size_t item_count)
      : Error(what), pid_(pid), exitcode_(exitcode), first_item_(first_item), item_count_(item_count) {}
  int pid() const noexcept { return pid_; }
  /// Python-style: the exit status, or -N when killed by signal N.
  int exitcode() const noexcept { return exitcode_; }
  /// The signal that killed the worker, or 0 when it exited.
  int signal() const noexcept { return exitcode_ < 0 ? -exitcode_ : 0; }
  /// The input items of the failed task: [first_item, first_item + item_count).
  std::size_t first_item() const noexcept { return first_item_; }
  std::size_t item_count() const noexcept { return item_count_; }

 private:
  int pid_, exitcode_;
  std::size_t first_item_, item_count_;
};

/// Python: concurrent.futures.process.BrokenProcessPool. Only the executor's compatibility mode
/// breaks the whole pool on a worker's death; by default just the task fails (WorkerCrashed).
class BrokenProcessPool : public Error {
 public:
  using Error::Error;
};

/// Python: concurrent.futures.CancelledError. The future was cancelled before it ran.
class CancelledError : public Error {
 public:
  using Error::Error;
};

}  // namespace mproc
