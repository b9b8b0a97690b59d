// Descriptors inside serialised values (a Connection passed to a child): the value writes a
// slot number, the descriptor travels beside the bytes. Not API.
#pragma once

#include <vector>

namespace mproc::detail {

/// Records fd to be handed to the receiving process and returns its slot. Throws when nothing
/// is collecting descriptors (the value is being sent where descriptors cannot follow).
int export_fd(int fd);
/// The descriptor that arrived in slot, now owned by the caller. Each slot is taken once.
int import_fd(int slot);

/// While alive, export_fd() on this thread appends to fds.
class FdExportScope {
 public:
  explicit FdExportScope(std::vector<int>& fds);
  ~FdExportScope();
  FdExportScope(const FdExportScope&) = delete;
  FdExportScope& operator=(const FdExportScope&) = delete;

 private:
  std::vector<int>* prev_;
};

/// While alive, import_fd() on this thread takes from fds (and marks taken slots -1).
class FdImportScope {
 public:
  explicit FdImportScope(std::vector<int>& fds);
  ~FdImportScope();
  FdImportScope(const FdImportScope&) = delete;
  FdImportScope& operator=(const FdImportScope&) = delete;

 private:
  std::vector<int>* prev_;
};

}  // namespace mproc::detail
