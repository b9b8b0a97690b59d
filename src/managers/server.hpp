// The manager server (Python: managers.Server): a listening socket, one thread per client
// connection, the table of objects with their reference counts.
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "managers/dispatch.hpp"
#include "mproc/listener.hpp"
#include "os/fd.hpp"

namespace mproc::detail::mgr {

/// What start() hands to the server process: where to listen, the key, the registered types
/// as code identities (the server resolves them in its own copy of the binary): name, type
/// operations, factory.
struct ServerConfig {
  connection::Address address;
  std::string authkey;
  std::vector<std::tuple<std::string, CodeRef, std::string>> registry;
  template <class A>
  void serialize(A& a) {
    a(address, authkey, registry);
  }
};

class ServerCore {
 public:
  ServerCore(const connection::Address& address, std::optional<std::string> authkey, Registry registry);
  ~ServerCore();
  const connection::Address& address() const { return address_; }
  /// Accepts and serves until a shutdown request (or stop()); then ends every connection and
  /// returns.
  void serve_forever();
  void stop() noexcept;

 private:
  struct Client;
  void serve_client(std::shared_ptr<Client> client);
  void reap_finished();

  connection::Address address_;
  std::optional<std::string> authkey_;
  Dispatcher dispatcher_;
  os::Fd listener_, wake_;
  std::atomic<bool> stopping_{false};

  std::mutex clients_mu_;
  std::vector<std::shared_ptr<Client>> clients_;
};

/// The server process's main (started by BaseManager::start): listens, reports its address on
/// `report`, serves until shut down.
void server_process_main(ServerConfig config, Connection report);

}  // namespace mproc::detail::mgr
