// mproc — Python's multiprocessing for C++20 on Linux. Include this for everything.
#pragma once

#include "mproc/connection.hpp"
#include "mproc/context.hpp"
#include "mproc/errors.hpp"
#include "mproc/executor.hpp"
#include "mproc/inherited.hpp"
#include "mproc/init.hpp"
#include "mproc/listener.hpp"
#include "mproc/managers.hpp"
#include "mproc/pool.hpp"
#include "mproc/process.hpp"
#include "mproc/progress.hpp"
#include "mproc/queues.hpp"
#include "mproc/shared_memory.hpp"
#include "mproc/sharedctypes.hpp"
#include "mproc/synchronize.hpp"
