#include "mproc/detail/fd_passing.hpp"

#include <string>

#include "mproc/errors.hpp"

namespace mproc::detail {
namespace {
thread_local std::vector<int>* t_export = nullptr;
thread_local std::vector<int>* t_import = nullptr;
}  // namespace

int export_fd(int fd) {
  if (!t_export)
    throw Error("a Connection can be passed to a child as a Process argument, but cannot be sent inside a message");
  t_export->push_back(fd);
  return static_cast<int>(t_export->size() - 1);
}

int import_fd(int slot) {
  if (!t_import) throw ProtocolError("a descriptor slot appeared where no descriptors were passed");
  if (slot < 0 || static_cast<std::size_t>(slot) >= t_import->size() || (*t_import)[static_cast<std::size_t>(slot)] < 0)
    throw ProtocolError("descriptor slot " + std::to_string(slot) + " does not name a descriptor that was passed");
  int fd = (*t_import)[static_cast<std::size_t>(slot)];
  (*t_import)[static_cast<std::size_t>(slot)] = -1;
  return fd;
}

FdExportScope::FdExportScope(std::vector<int>& fds) : prev_(t_export) { t_export = &fds; }
FdExportScope::~FdExportScope() { t_export = prev_; }
FdImportScope::FdImportScope(std::vector<int>& fds) : prev_(t_import) { t_import = &fds; }
FdImportScope::~FdImportScope() { t_import = prev_; }

}  // namespace mproc::detail
