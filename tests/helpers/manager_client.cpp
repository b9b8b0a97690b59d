// A separate program that uses a manager server another program started (Python's remote
// managers): `manager_client HOST PORT KEY`. Prints what it saw, one line per check; exit
// code 0 when all went as expected, 3 on AuthenticationError, 4 on ConnectionError, 1 otherwise.
#include <mproc/managers.hpp>
#include <mproc/mproc.hpp>

#include <cstdio>
#include <cstdlib>
#include <string>

// The same types as the server's program (tests/test_managers.cpp): the server checks their names
// and their methods' signatures.
struct Counter {
  long n = 0;
  long add(long k) { return n += k; }
  long get() const { return n; }
  void fail() { throw std::logic_error("counter says no"); }
};

struct Account {
  std::string owner;
  long balance = 0;
  long deposit(long k) { return balance += k; }
  std::string who() const { return owner; }
};

int plus_one(int v) { return v + 1; }

int main(int argc, char** argv) {
  mproc::init(argc, argv);
  if (argc != 4) {
    std::fprintf(stderr, "usage: manager_client HOST PORT KEY\n");
    return 2;
  }
  mproc::connection::Address address(argv[1], std::atoi(argv[2]));
  try {
    mproc::SyncManager m({.address = address, .authkey = std::string(argv[3])});
    m.connect();  // nothing to register: create() names the type, the server made the registrations
    auto d = m.dict<std::string, int>();
    d.set("x", 1);
    std::printf("add %d\n", d.add("x", 41));
    try {
      d.update_with("x", plus_one);
      std::printf("update_with ran\n");
    } catch (const mproc::FunctionIdentityError&) {
      std::printf("update_with refused\n");  // another program's function: the server will not run it
    }
    auto c = m.create<Counter>("Counter");
    c.call<&Counter::add>(5);
    std::printf("counter %ld\n", c.call<&Counter::add>(6));
    auto a = m.create<Account>("Account", "remote", 5L);  // the server's factory, our arguments
    std::printf("account %s %ld\n", a.call<&Account::who>().c_str(), a.call<&Account::deposit>(1));
    auto shared = m.list<std::string>();
    shared.append("from the helper");
    std::printf("list %zu\n", shared.size());
    std::fflush(stdout);
    return 0;
  } catch (const mproc::AuthenticationError& e) {
    std::printf("AuthenticationError: %s\n", e.what());
    return 3;
  } catch (const mproc::ConnectionError& e) {
    std::printf("ConnectionError: %s\n", e.what());
    return 4;
  } catch (const std::exception& e) {
    std::printf("error: %s\n", e.what());
    return 1;
  }
}
