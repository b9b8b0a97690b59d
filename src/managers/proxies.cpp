// The non-template proxies of mproc/managers.hpp (BaseProxy, Namespace, the synchronisation
// proxies): which request each method sends. Out of the header so that the public header
// declares the API and the wire stays here; a call costs a round trip, not this function call.
#include "mproc/managers.hpp"

namespace mproc {

std::uint64_t BaseProxy::id() const { return ref().id; }
connection::Address BaseProxy::address() const { return detail::mgr::endpoint_address(*ref().endpoint); }
void BaseProxy::save(detail::OutArchive& ar) const { detail::mgr::save_ref(ar, ref_); }
void BaseProxy::load(detail::InArchive& ar) { ref_ = detail::mgr::load_ref(ar); }

bool NamespaceProxy::has(const std::string& name) const { return call_<bool>("has", name); }
void NamespaceProxy::erase(const std::string& name) { call_("del", name); }
std::vector<std::string> NamespaceProxy::names() const { return call_<std::vector<std::string>>("names"); }

bool AcquirerProxy::acquire(bool blocking, std::optional<seconds> timeout) {
  return call_<bool>("acquire", blocking, detail::mgr::wire_timeout(timeout, "AcquirerProxy.acquire"));
}
void AcquirerProxy::release() { call_("release"); }
bool AcquirerProxy::locked() const { return call_<bool>("locked"); }
std::int64_t AcquirerProxy::get_value() const { return call_<std::int64_t>("get_value"); }

bool ConditionProxy::wait(std::optional<seconds> timeout) {
  return call_<bool>("wait", detail::mgr::wire_timeout(timeout, "ConditionProxy.wait"));
}
void ConditionProxy::notify(std::int64_t n) { call_("notify", n); }
void ConditionProxy::notify_all() { call_("notify_all"); }

void EventProxy::set() { call_("set"); }
void EventProxy::clear() { call_("clear"); }
bool EventProxy::is_set() const { return call_<bool>("is_set"); }
bool EventProxy::wait(std::optional<seconds> timeout) {
  return call_<bool>("wait", detail::mgr::wire_timeout(timeout, "EventProxy.wait"));
}

std::int64_t BarrierProxy::wait(std::optional<seconds> timeout) {
  return call_<std::int64_t>("wait", detail::mgr::wire_timeout(timeout, "BarrierProxy.wait"));
}
void BarrierProxy::abort() { call_("abort"); }
void BarrierProxy::reset() { call_("reset"); }
std::int64_t BarrierProxy::parties() const { return call_<std::int64_t>("parties"); }
std::int64_t BarrierProxy::n_waiting() const { return call_<std::int64_t>("n_waiting"); }
bool BarrierProxy::broken() const { return call_<bool>("broken"); }

}  // namespace mproc
