// What /proc says about a process.
#pragma once

#include <cstdint>

namespace mproc::os {

/// The start time of process pid (field 22 of /proc/<pid>/stat, clock ticks since boot); 0 when
/// there is no such process. With the pid it names one process for good: a recycled pid has
/// another start time.
std::uint64_t process_start_time(int pid) noexcept;

}  // namespace mproc::os
