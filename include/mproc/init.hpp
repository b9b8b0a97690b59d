// mproc/init.hpp — the C++ form of `if __name__ == "__main__":`.
#pragma once

namespace mproc {

/// Call first in main. In the main program it returns. In a child started with spawn or
/// forkserver (which re-run this binary) it never returns: it runs the child's work and exits.
/// Starting a process under spawn or forkserver without it is an mproc::Error.
///
///     int main(int argc, char** argv) {
///       mproc::init(argc, argv);
///       ...
///     }
void init(int argc, char** argv);

/// Whether init() has run in this process.
bool initialized() noexcept;

}  // namespace mproc
