#include "managers/dispatch.hpp"

#include <unistd.h>

#include <cereal/details/helpers.hpp>

#include "mproc/queues.hpp"

namespace mproc::detail::mgr {

namespace {

void error_reply(std::string& out, Err code, const std::string& message) {
  out.assign(1, '\1');
  out.push_back(static_cast<char>(code));
  OutArchive ar(out);
  ar(message);
}

}  // namespace

// A registered method's result that stays on the server: it joins the table with one
// reference held by the calling connection (the client moves it to its session).
class Dispatcher::Sink final : public ObjectSink {
 public:
  Sink(Dispatcher& d, Session& s) : d_(d), s_(s) {}
  std::uint64_t adopt(std::shared_ptr<void> obj, std::uint64_t type, std::string_view type_name) override {
    const TypeOps* ops = nullptr;
    for (const auto& [name, reg] : d_.registry_)
      if (reg.ops->type == type) ops = reg.ops;
    if (!ops)
      throw Reply{Err::error, "a method returned a " + std::string(type_name) +
                                  ", which is not registered with this manager server (register_type it too)"};
    auto served = make_registered(ops, std::move(obj));
    served->type = type;
    return d_.insert(std::move(served), s_);
  }

 private:
  Dispatcher& d_;
  Session& s_;
};

Dispatcher::Dispatcher(Registry registry) : registry_(std::move(registry)) {}

Dispatcher::~Dispatcher() = default;

Session Dispatcher::open_session() {
  std::lock_guard lk(mu_);
  Session s;
  s.id = next_session_++;
  return s;
}

std::shared_ptr<Object> Dispatcher::lookup(std::uint64_t id) {
  std::lock_guard lk(mu_);
  auto it = objects_.find(id);
  return it == objects_.end() ? nullptr : it->second.obj;
}

std::uint64_t Dispatcher::insert(std::shared_ptr<Object> obj, Session& s) {
  std::uint64_t id;
  {
    std::lock_guard lk(mu_);
    id = next_id_++;
    objects_.emplace(id, Entry{std::move(obj), 1});
  }
  ++s.refs[id];
  return id;
}

void Dispatcher::decref(std::uint64_t id) {
  std::shared_ptr<Object> dying;  // destroyed after the table's lock is let go
  std::lock_guard lk(mu_);
  auto it = objects_.find(id);
  if (it == objects_.end()) return;
  if (--it->second.refs == 0) {
    dying = std::move(it->second.obj);
    objects_.erase(it);
  }
}

std::size_t Dispatcher::number_of_objects() {
  std::lock_guard lk(mu_);
  return objects_.size();
}

void Dispatcher::close_session(Session& s) noexcept {
  for (auto& [id, weak] : s.owned)
    if (auto obj = weak.lock()) obj->disconnected(s.id);
  s.owned.clear();
  for (auto& [id, n] : s.refs)
    for (std::uint64_t i = 0; i < n; ++i) decref(id);
  s.refs.clear();
}

Outcome Dispatcher::handle(Session& s, const void* data, std::size_t size, std::string& reply) noexcept {
  CallCtx ctx{s.id, -1, nullptr, {}};  // no socket: a call that would block has nobody to wait for
  return handle(s, data, size, reply, ctx);
}

Outcome Dispatcher::handle(Session& s, const void* data, std::size_t size, std::string& out, CallCtx& ctx) noexcept {
  bool shutdown = false;
  try {
    return answer(s, data, size, out, ctx, shutdown) ? (shutdown ? Outcome::shutdown : Outcome::reply) : Outcome::close;
  } catch (...) {  // not even an error reply could be built (out of memory): drop this client, not the server
    return Outcome::close;
  }
}

// True with a reply (or error reply) in out; false when there must be none.
bool Dispatcher::answer(Session& s, const void* data, std::size_t size, std::string& out, CallCtx& ctx, bool& shutdown) {
  try {
    out.assign(1, '\0');
    if (size == 0) throw ProtocolError("empty request");
    InArchive in(data, size);
    dispatch(s, in, out, ctx, shutdown);
  } catch (const ClientGone&) {
    return false;
  } catch (const Reply& r) {
    error_reply(out, r.code, r.message);
  } catch (const FunctionIdentityError& e) {
    error_reply(out, Err::function_identity, e.what());
  } catch (const TypeMismatchError& e) {
    error_reply(out, Err::type_mismatch, e.what());
  } catch (const ProtocolError& e) {
    error_reply(out, Err::protocol, e.what());
  } catch (const KeyError& e) {
    error_reply(out, Err::key, e.what());
  } catch (const IndexError& e) {
    error_reply(out, Err::index, e.what());
  } catch (const ValueError& e) {
    error_reply(out, Err::value, e.what());
  } catch (const BrokenBarrierError& e) {
    error_reply(out, Err::broken_barrier, e.what());
  } catch (const RuntimeError& e) {
    error_reply(out, Err::runtime, e.what());
  } catch (const queue::Empty& e) {
    error_reply(out, Err::empty, e.what());
  } catch (const queue::Full& e) {
    error_reply(out, Err::full, e.what());
  } catch (const TimeoutError& e) {
    error_reply(out, Err::timeout, e.what());
  } catch (const cereal::Exception& e) {
    error_reply(out, Err::protocol, std::string("malformed request: ") + e.what());
  } catch (const std::bad_alloc&) {
    error_reply(out, Err::error, "the manager server is out of memory");
  } catch (const std::exception& e) {
    error_reply(out, Err::error, e.what());
  } catch (...) {
    error_reply(out, Err::error, "unknown error in the manager server");
  }
  return true;
}

void Dispatcher::dispatch(Session& s, InArchive& in, std::string& out, CallCtx& ctx, bool& shutdown) {
  std::uint8_t op = 0;
  in(op);
  if (static_cast<Op>(op) == Op::hello) {
    std::uint32_t version = 0;
    in(version);
    if (in.left() != 0) throw_trailing_bytes(in.left(), "a hello");
    if (version != kProtocolVersion) throw Reply{Err::version, version_mismatch(version, kProtocolVersion)};
    s.greeted = true;
    OutArchive ar(out);
    ar(kProtocolVersion);
    return;
  }
  // A client without the hello speaks version 1 (or is not an mproc manager client): its
  // request would be read in another layout, so it is not read at all.
  if (!s.greeted)
    throw Reply{Err::version, version_mismatch(1, kProtocolVersion) + "; request " + std::to_string(op) +
                                  " came before the version hello"};
  switch (static_cast<Op>(op)) {
    case Op::call: {
      std::uint64_t id = 0, type = 0;
      std::string method;
      in(id, type, method);
      auto obj = lookup(id);
      if (!obj)
        throw Reply{Err::unknown_object, "the manager has no object " + std::to_string(id) +
                                             " (its last proxy went away, or it never existed)"};
      if (obj->type != type) throw TypeMismatchError("a proxy of another type than the manager's object " + std::to_string(id));
      if (obj->has_owners()) s.owned.emplace(id, obj);
      Sink sink(*this, s);
      ctx.sink = &sink;
      obj->call(method, in, out, ctx);
      return;
    }
    case Op::create: {
      std::string typeid_;
      std::uint64_t type = 0;
      in(typeid_, type);
      std::shared_ptr<Object> obj;
      if (auto it = registry_.find(typeid_); it != registry_.end()) {
        const TypeOps& ops = *it->second.ops;
        if (ops.type != type)
          throw TypeMismatchError("typeid '" + typeid_ + "' is registered for " + std::string(ops.name) +
                                  " on the manager server, not for the type create() asked for");
        std::uint64_t args_type = 0;
        in(args_type);
        if (args_type != ops.args_type)
          throw TypeMismatchError("'" + typeid_ + "' is made from the arguments " + std::string(ops.args_name) +
                                  " on the manager server: create() must pass exactly those types");
        InArchive factory(it->second.factory.data(), it->second.factory.size());
        obj = make_registered(&ops, run_factory(ops, factory, in));
      } else {
        obj = make_builtin(typeid_, in, [this](std::uint64_t id) { return lookup(id); });
        // KeyError, as Python's Server.create looking the typeid up in its registry.
        if (!obj) throw Reply{Err::key, "the manager has no typeid '" + typeid_ + "' (register_type it in the server)"};
      }
      obj->type = type;
      std::uint64_t id = insert(std::move(obj), s);
      OutArchive ar(out);
      ar(id);
      return;
    }
    case Op::incref: {
      std::uint64_t id = 0;
      in(id);
      {
        std::lock_guard lk(mu_);
        auto it = objects_.find(id);
        if (it == objects_.end())
          throw Reply{Err::unknown_object, "the manager has no object " + std::to_string(id) + " any more"};
        ++it->second.refs;
      }
      ++s.refs[id];
      return;
    }
    case Op::decref: {
      std::uint64_t id = 0;
      in(id);
      auto it = s.refs.find(id);
      if (it == s.refs.end()) return;  // only what this connection holds can be let go
      if (--it->second == 0) s.refs.erase(it);
      decref(id);
      return;
    }
    case Op::shutdown:
      shutdown = true;
      return;
    case Op::info: {
      std::uint64_t n = number_of_objects();
      OutArchive ar(out);
      ar(static_cast<std::int32_t>(::getpid()), n);
      return;
    }
    case Op::hello: break;  // answered above
  }
  throw ProtocolError("unknown manager request " + std::to_string(op));
}

}  // namespace mproc::detail::mgr
