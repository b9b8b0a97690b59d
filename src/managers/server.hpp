// The manager server (Python: managers.Server): a listening socket, one thread per client
// connection, the table of objects with their reference counts.
#pragma once

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "managers/objects.hpp"
#include "mproc/listener.hpp"
#include "os/fd.hpp"

namespace mproc::detail::mgr {

using Registry = std::map<std::string, const TypeOps*, std::less<>>;

/// What start() hands to the server process: where to listen, the key, the registered types
/// as code identities (the server resolves them in its own copy of the binary).
struct ServerConfig {
  connection::Address address;
  std::string authkey;
  std::vector<std::pair<std::string, CodeRef>> registry;
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
  void handle(const Payload& request, std::string& out, CallCtx& ctx, Client& client, bool& shutdown);
  std::shared_ptr<Object> lookup(std::uint64_t id);
  void decref(std::uint64_t id);
  void reap_finished();

  connection::Address address_;
  std::optional<std::string> authkey_;
  Registry registry_;
  os::Fd listener_, wake_;
  std::atomic<bool> stopping_{false};

  std::mutex table_mu_;
  struct Entry {
    std::shared_ptr<Object> obj;
    std::uint64_t refs = 0;
  };
  std::unordered_map<std::uint64_t, Entry> objects_;
  std::uint64_t next_id_ = 1;

  std::mutex clients_mu_;
  std::vector<std::shared_ptr<Client>> clients_;
  std::uint64_t next_conn_ = 1;
};

/// The server process's main (started by BaseManager::start): listens, reports its address on
/// `report`, serves until shut down.
void server_process_main(ServerConfig config, Connection report);

}  // namespace mproc::detail::mgr
