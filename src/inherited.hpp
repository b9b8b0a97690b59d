// How mproc::inherited values cross into a child (see mproc/inherited.hpp).
#pragma once

#include <string>

namespace mproc::detail {

/// Every inherited variable that has a value, encoded for a start-up message. Descriptors the
/// values carry go to the current FdExportScope.
std::string save_inherited();
/// In a child, before its work: sets the variables from save_inherited()'s bytes.
void restore_inherited(const std::string& blob);
/// In a fork child, before anything else runs: per_process objects are the parent's.
void forget_per_process_after_fork() noexcept;

}  // namespace mproc::detail
