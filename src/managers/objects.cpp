// Data objects of a manager server: dict, list, Namespace, Value, Array, and registered types.
// Every call runs under the object's mutex, so each call is atomic; values are the bytes the
// clients encoded (see objects.hpp).
#include "managers/objects.hpp"

#include <cxxabi.h>

#include <cstring>
#include <deque>
#include <list>
#include <typeinfo>
#include <unordered_map>
#include <vector>

namespace mproc::detail::mgr {

[[noreturn]] void unknown_method(std::string_view kind, std::string_view method) {
  throw Reply{Err::error, std::string(kind) + " has no method '" + std::string(method) + "'"};
}

namespace {

std::string demangled(const std::type_info& t) {
  int status = 0;
  char* d = abi::__cxa_demangle(t.name(), nullptr, nullptr, &status);
  std::string out = status == 0 && d ? d : t.name();
  std::free(d);
  return out;
}

template <class F>
void run_user_code(F f) {
  try {
    f();
  } catch (const Error&) {
    throw;
  } catch (const Reply&) {
    throw;
  } catch (const std::exception& e) {
    throw Reply{Err::remote, demangled(typeid(e)) + ": " + e.what()};
  } catch (...) {
    throw Reply{Err::remote, "an exception that is not a std::exception"};
  }
}

void end_of_args(InArchive& in) {
  if (in.left() != 0) throw_trailing_bytes(in.left(), "a manager request");
}

template <class T>
T arg(InArchive& in) {
  T v{};
  in(v);
  return v;
}

// update_with: the function came as a code identity; only code of this binary signed with this
// server's key runs (resolve_code), never an address from the wire.
void run_update(const std::string& request, std::string& value, bool exists) {
  InArchive ua(request.data(), request.size());
  CodeRef ref;
  ua(ref);
  UpdateFn fn = nullptr;
  try {
    fn = reinterpret_cast<UpdateFn>(const_cast<void*>(resolve_code(ref, type_fingerprint<UpdateFn>())));
  } catch (const FunctionIdentityError& e) {
    throw FunctionIdentityError(std::string("update_with: the manager server cannot run this function: ") + e.what() +
                                ". A server runs only functions of its own program: one started by Manager() or "
                                "start() from this program; use add() or get/set with another program's server");
  }
  run_user_code([&] { fn(ua, value, exists); });
}

template <class T>
std::string add_as(const std::string* old, const std::string& delta) {
  T a{}, d{};
  if (old) {
    if (old->size() != sizeof(T)) throw TypeMismatchError("add(): the stored value is not of the delta's type");
    std::memcpy(&a, old->data(), sizeof(T));
  }
  std::memcpy(&d, delta.data(), sizeof(T));
  T r;
  if constexpr (std::is_integral_v<T>) {
    using U = std::make_unsigned_t<T>;
    r = static_cast<T>(static_cast<U>(static_cast<U>(a) + static_cast<U>(d)));  // wraps, as the hardware does
  } else {
    r = a + d;
  }
  return std::string(reinterpret_cast<const char*>(&r), sizeof(T));
}

// add(): numbers the server understands without the client's code; code from arith_code<T>().
std::string add_bytes(const std::string* old, std::uint8_t code, const std::string& delta) {
  std::size_t size = code == 1 ? 4 : code == 2 ? 8 : code > 20 ? code - 20u : code > 10 ? code - 10u : 0;
  if (size == 0 || size > 8 || delta.size() != size) throw ValueError("add(): malformed delta");
  switch (code) {
    case 1: return add_as<float>(old, delta);
    case 2: return add_as<double>(old, delta);
    case 11: return add_as<std::int8_t>(old, delta);
    case 12: return add_as<std::int16_t>(old, delta);
    case 14: return add_as<std::int32_t>(old, delta);
    case 18: return add_as<std::int64_t>(old, delta);
    case 21: return add_as<std::uint8_t>(old, delta);
    case 22: return add_as<std::uint16_t>(old, delta);
    case 24: return add_as<std::uint32_t>(old, delta);
    case 28: return add_as<std::uint64_t>(old, delta);
    default: throw ValueError("add(): malformed delta");
  }
}

std::size_t index_of(std::int64_t i, std::size_t n, const char* kind) {
  auto sn = static_cast<std::int64_t>(n);
  if (i < 0) i += sn;
  if (i < 0 || i >= sn) throw IndexError(std::string(kind) + " index out of range");
  return static_cast<std::size_t>(i);
}

void put_present(std::string& out, const std::string* v) {
  out.push_back(v ? '\1' : '\0');
  if (v) out += *v;
}

void put_count(std::string& out, std::size_t n) {
  auto c = static_cast<std::uint64_t>(n);
  out.append(reinterpret_cast<const char*>(&c), sizeof c);
}

// ------------------------------------------------------------------------------------- dict

// Python's dict keeps insertion order: keys(), values() and items() list keys in the order
// they were first set; setting an existing key keeps its place, deleting one forgets it. A list
// holds the entries in that order, a hash index points into it (its keys are views of the
// list's, which never move).
template <class V>
class OrderedMap {
 public:
  using List = std::list<std::pair<std::string, V>>;
  using iterator = typename List::iterator;

  iterator begin() { return entries_.begin(); }
  iterator end() { return entries_.end(); }
  std::size_t size() const { return entries_.size(); }
  std::size_t count(std::string_view k) const { return index_.count(k); }
  iterator find(std::string_view k) {
    auto it = index_.find(k);
    return it == index_.end() ? entries_.end() : it->second;
  }
  std::pair<iterator, bool> try_emplace(std::string k, V v) {
    if (auto it = find(k); it != end()) return {it, false};
    entries_.emplace_back(std::move(k), std::move(v));
    auto last = std::prev(entries_.end());
    index_.emplace(last->first, last);
    return {last, true};
  }
  void insert_or_assign(std::string k, V v) {
    auto [it, inserted] = try_emplace(std::move(k), V{});
    it->second = std::move(v);
  }
  void erase(iterator it) {
    index_.erase(it->first);
    entries_.erase(it);
  }
  std::size_t erase(std::string_view k) {
    auto it = find(k);
    if (it == end()) return 0;
    erase(it);
    return 1;
  }
  void clear() {
    index_.clear();
    entries_.clear();
  }

 private:
  List entries_;
  std::unordered_map<std::string_view, iterator> index_;
};

class Dict final : public Object {
 public:
  void call(std::string_view m, InArchive& in, std::string& out, CallCtx&) override {
    std::lock_guard lk(mu_);
    if (m == "set") {
      auto k = arg<std::string>(in);
      auto v = arg<std::string>(in);
      end_of_args(in);
      map_.insert_or_assign(std::move(k), std::move(v));
    } else if (m == "get" || m == "pop") {
      auto k = arg<std::string>(in);
      end_of_args(in);
      auto it = map_.find(k);
      if (it == map_.end()) throw KeyError("key not in the manager's dict");
      out += it->second;
      if (m == "pop") map_.erase(it);
    } else if (m == "getopt" || m == "popopt") {
      auto k = arg<std::string>(in);
      end_of_args(in);
      auto it = map_.find(k);
      put_present(out, it == map_.end() ? nullptr : &it->second);
      if (m == "popopt" && it != map_.end()) map_.erase(it);
    } else if (m == "contains") {
      auto k = arg<std::string>(in);
      end_of_args(in);
      out.push_back(map_.count(k) ? '\1' : '\0');
    } else if (m == "len") {
      end_of_args(in);
      put_count(out, map_.size());
    } else if (m == "del") {
      auto k = arg<std::string>(in);
      end_of_args(in);
      if (map_.erase(k) == 0) throw KeyError("key not in the manager's dict");
    } else if (m == "setdefault") {
      auto k = arg<std::string>(in);
      auto v = arg<std::string>(in);
      end_of_args(in);
      out += map_.try_emplace(std::move(k), std::move(v)).first->second;
    } else if (m == "get_many") {
      auto ks = arg<std::vector<std::string>>(in);
      end_of_args(in);
      put_count(out, ks.size());
      for (const auto& k : ks) {
        auto it = map_.find(k);
        put_present(out, it == map_.end() ? nullptr : &it->second);
      }
    } else if (m == "set_many") {
      auto kvs = arg<std::vector<std::pair<std::string, std::string>>>(in);
      end_of_args(in);
      for (auto& [k, v] : kvs) map_.insert_or_assign(std::move(k), std::move(v));
    } else if (m == "keys" || m == "values" || m == "items") {
      end_of_args(in);
      put_count(out, map_.size());
      for (const auto& [k, v] : map_) {
        if (m != "values") out += k;
        if (m != "keys") out += v;
      }
    } else if (m == "clear") {
      end_of_args(in);
      map_.clear();
    } else if (m == "add") {
      auto k = arg<std::string>(in);
      auto code = arg<std::uint8_t>(in);
      auto d = arg<std::string>(in);
      end_of_args(in);
      auto it = map_.find(k);
      std::string r = add_bytes(it == map_.end() ? nullptr : &it->second, code, d);
      out += r;
      map_.insert_or_assign(std::move(k), std::move(r));
    } else if (m == "update_with") {
      auto k = arg<std::string>(in);
      auto req = arg<std::string>(in);
      end_of_args(in);
      auto it = map_.find(k);
      std::string v = it == map_.end() ? std::string() : it->second;
      run_update(req, v, it != map_.end());
      out += v;
      map_.insert_or_assign(std::move(k), std::move(v));
    } else {
      unknown_method("dict", m);
    }
  }

 private:
  std::mutex mu_;
  OrderedMap<std::string> map_;
};

// ------------------------------------------------------------------------------------- list

class List final : public Object {
 public:
  explicit List(std::vector<std::string> items) : items_(std::move(items)) {}
  void call(std::string_view m, InArchive& in, std::string& out, CallCtx&) override {
    std::lock_guard lk(mu_);
    if (m == "append") {
      auto v = arg<std::string>(in);
      end_of_args(in);
      items_.push_back(std::move(v));
    } else if (m == "get") {
      auto i = arg<std::int64_t>(in);
      end_of_args(in);
      out += items_[index_of(i, items_.size(), "list")];
    } else if (m == "set") {
      auto i = arg<std::int64_t>(in);
      auto v = arg<std::string>(in);
      end_of_args(in);
      items_[index_of(i, items_.size(), "list")] = std::move(v);
    } else if (m == "len") {
      end_of_args(in);
      put_count(out, items_.size());
    } else if (m == "extend") {
      auto vs = arg<std::vector<std::string>>(in);
      end_of_args(in);
      for (auto& v : vs) items_.push_back(std::move(v));
    } else if (m == "insert") {
      auto i = arg<std::int64_t>(in);
      auto v = arg<std::string>(in);
      end_of_args(in);
      auto n = static_cast<std::int64_t>(items_.size());
      if (i < 0) i = std::max<std::int64_t>(0, i + n);
      items_.insert(items_.begin() + std::min(i, n), std::move(v));
    } else if (m == "pop" || m == "del") {
      auto i = arg<std::int64_t>(in);
      end_of_args(in);
      if (items_.empty()) throw IndexError("pop from empty list");
      auto at = index_of(i, items_.size(), "list");
      if (m == "pop") out += items_[at];
      items_.erase(items_.begin() + static_cast<std::ptrdiff_t>(at));
    } else if (m == "remove" || m == "index" || m == "count") {
      auto v = arg<std::string>(in);
      end_of_args(in);
      std::size_t n = 0, first = items_.size();
      for (std::size_t i = 0; i < items_.size(); ++i)
        if (items_[i] == v) {
          if (first == items_.size()) first = i;
          ++n;
        }
      if (m == "count") {
        put_count(out, n);
      } else if (first == items_.size()) {
        throw ValueError("list." + std::string(m) + "(x): x not in list");
      } else if (m == "index") {
        put_count(out, first);
      } else {
        items_.erase(items_.begin() + static_cast<std::ptrdiff_t>(first));
      }
    } else if (m == "items") {
      end_of_args(in);
      put_count(out, items_.size());
      for (const auto& v : items_) out += v;
    } else if (m == "clear") {
      end_of_args(in);
      items_.clear();
    } else if (m == "add") {
      auto i = arg<std::int64_t>(in);
      auto code = arg<std::uint8_t>(in);
      auto d = arg<std::string>(in);
      end_of_args(in);
      auto& slot = items_[index_of(i, items_.size(), "list")];
      slot = add_bytes(&slot, code, d);
      out += slot;
    } else if (m == "update_with") {
      auto i = arg<std::int64_t>(in);
      auto req = arg<std::string>(in);
      end_of_args(in);
      auto& slot = items_[index_of(i, items_.size(), "list")];
      std::string v = slot;
      run_update(req, v, true);
      slot = v;
      out += v;
    } else {
      unknown_method("list", m);
    }
  }

 private:
  std::mutex mu_;
  std::vector<std::string> items_;
};

// --------------------------------------------------------------------------- Namespace, Value

class Namespace final : public Object {
 public:
  void call(std::string_view m, InArchive& in, std::string& out, CallCtx&) override {
    std::lock_guard lk(mu_);
    if (m == "set") {
      auto name = arg<std::string>(in);
      auto type = arg<std::uint64_t>(in);
      auto v = arg<std::string>(in);
      end_of_args(in);
      attrs_.insert_or_assign(std::move(name), std::make_pair(type, std::move(v)));
    } else if (m == "get") {
      auto name = arg<std::string>(in);
      auto type = arg<std::uint64_t>(in);
      end_of_args(in);
      auto it = attrs_.find(name);
      if (it == attrs_.end()) throw KeyError("'Namespace' object has no attribute '" + name + "'");
      if (it->second.first != type)
        throw TypeMismatchError("Namespace attribute '" + name + "' holds another type than the one asked for");
      out += it->second.second;
    } else if (m == "has") {
      auto name = arg<std::string>(in);
      end_of_args(in);
      out.push_back(attrs_.count(name) ? '\1' : '\0');
    } else if (m == "del") {
      auto name = arg<std::string>(in);
      end_of_args(in);
      if (attrs_.erase(name) == 0) throw KeyError("'Namespace' object has no attribute '" + name + "'");
    } else if (m == "names") {
      end_of_args(in);
      std::vector<std::string> names;
      for (const auto& [k, v] : attrs_) names.push_back(k);
      encode(out, names);
    } else {
      unknown_method("Namespace", m);
    }
  }

 private:
  std::mutex mu_;
  OrderedMap<std::pair<std::uint64_t, std::string>> attrs_;
};

class Value final : public Object {
 public:
  explicit Value(std::string v) : value_(std::move(v)) {}
  void call(std::string_view m, InArchive& in, std::string& out, CallCtx&) override {
    std::lock_guard lk(mu_);
    if (m == "get") {
      end_of_args(in);
      out += value_;
    } else if (m == "set") {
      auto v = arg<std::string>(in);
      end_of_args(in);
      value_ = std::move(v);
    } else if (m == "add") {
      auto code = arg<std::uint8_t>(in);
      auto d = arg<std::string>(in);
      end_of_args(in);
      value_ = add_bytes(&value_, code, d);
      out += value_;
    } else if (m == "update_with") {
      auto req = arg<std::string>(in);
      end_of_args(in);
      std::string v = value_;
      run_update(req, v, true);
      value_ = v;
      out += v;
    } else {
      unknown_method("Value", m);
    }
  }

 private:
  std::mutex mu_;
  std::string value_;
};

// ------------------------------------------------------------------------------------ Array

class Array final : public Object {
 public:
  Array(std::size_t elem, std::string raw) : elem_(elem), raw_(std::move(raw)) {
    if (elem_ == 0 || elem_ > (std::size_t{1} << 20) || raw_.size() % elem_ != 0)
      throw ValueError("Array: the initial bytes are not whole elements");
  }
  void call(std::string_view m, InArchive& in, std::string& out, CallCtx&) override {
    std::lock_guard lk(mu_);
    std::size_t n = raw_.size() / elem_;
    if (m == "get") {
      auto i = arg<std::int64_t>(in);
      end_of_args(in);
      out.append(raw_, index_of(i, n, "array") * elem_, elem_);
    } else if (m == "set") {
      auto i = arg<std::int64_t>(in);
      auto v = arg<std::string>(in);
      end_of_args(in);
      if (v.size() != elem_) throw TypeMismatchError("Array: the element has another size than the array's");
      raw_.replace(index_of(i, n, "array") * elem_, elem_, v);
    } else if (m == "len") {
      end_of_args(in);
      put_count(out, n);
    } else if (m == "items") {
      end_of_args(in);
      out += raw_;
    } else if (m == "assign") {
      auto v = arg<std::string>(in);
      end_of_args(in);
      if (v.size() != raw_.size()) throw ValueError("Array: assign() must keep the length");
      raw_ = std::move(v);
    } else if (m == "add") {
      auto i = arg<std::int64_t>(in);
      auto code = arg<std::uint8_t>(in);
      auto d = arg<std::string>(in);
      end_of_args(in);
      std::size_t at = index_of(i, n, "array") * elem_;
      std::string old = raw_.substr(at, elem_);
      std::string r = add_bytes(&old, code, d);
      raw_.replace(at, elem_, r);
      out += r;
    } else {
      unknown_method("Array", m);
    }
  }

 private:
  std::mutex mu_;
  std::size_t elem_;
  std::string raw_;
};

// ---------------------------------------------------------------------------- registered types

class Registered final : public Object {
 public:
  Registered(const TypeOps* ops, std::shared_ptr<void> obj) : ops_(ops), obj_(std::move(obj)) {}
  void call(std::string_view m, InArchive& in, std::string& out, CallCtx& ctx) override {
    for (const auto& [name, fn] : ops_->methods)
      if (name == m) {
        std::lock_guard lk(mu_);
        run_user_code([&] { fn(obj_.get(), in, out, *ctx.sink); });
        return;
      }
    unknown_method(ops_->name, m);
  }

 private:
  std::mutex mu_;
  const TypeOps* ops_;
  std::shared_ptr<void> obj_;
};

}  // namespace

std::shared_ptr<Object> make_sync_object(std::string_view typeid_, InArchive& args, const Lookup& lookup);

std::shared_ptr<Object> make_builtin(std::string_view t, InArchive& args, const Lookup& lookup) {
  std::shared_ptr<Object> obj;
  if (t == "dict") {
    obj = std::make_shared<Dict>();
  } else if (t == "list") {
    obj = std::make_shared<List>(arg<std::vector<std::string>>(args));
  } else if (t == "Namespace") {
    obj = std::make_shared<Namespace>();
  } else if (t == "Value") {
    obj = std::make_shared<Value>(arg<std::string>(args));
  } else if (t == "Array") {
    auto elem = arg<std::uint64_t>(args);
    obj = std::make_shared<Array>(static_cast<std::size_t>(elem), arg<std::string>(args));
  } else {
    return make_sync_object(t, args, lookup);
  }
  end_of_args(args);
  return obj;
}

std::shared_ptr<void> run_factory(const TypeOps& ops, InArchive& factory, InArchive& args) {
  std::shared_ptr<void> obj;
  run_user_code([&] { obj = ops.create(factory, args); });
  return obj;
}

std::shared_ptr<Object> make_registered(const TypeOps* ops, std::shared_ptr<void> obj) {
  return std::make_shared<Registered>(ops, std::move(obj));
}

}  // namespace mproc::detail::mgr
