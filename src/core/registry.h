// Things that register themselves by name: transformer families, pipelines,
// schedulers, VAEs, text encoders (by diffusers' `_class_name`) and cache
// methods. Each is added by its own file with one PAB_REGISTER line; no other
// file lists them. (Backends register the same way by device name, through
// register_backend in backend/backend.h, which hands back their Device.) The
// engine's library is linked whole (CMake's PAB_ENGINE), so a registration is
// never dropped by the linker for want of a reference.
//
//   PAB_REGISTER(SchedulerEntry, "DDIMScheduler", {make_ddim});
//   const SchedulerEntry& e = Registry<SchedulerEntry>::get().at("DDIMScheduler", "scheduler");
#pragma once

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "core/error.h"

namespace pab {

template <class Entry>
class Registry {
 public:
  // The one registry of Entry; registrations fill it before main runs.
  static Registry& get() {
    static Registry r;
    return r;
  }

  // Adds `entry` under `name`; a name registered twice is a build error
  // caught at start-up.
  void add(const std::string& name, Entry entry) {
    PAB_ASSERT(!name.empty() && entries_.find(name) == entries_.end(), "registered twice: '", name, "'");
    entries_.emplace(name, std::move(entry));
  }

  const Entry* find(const std::string& name) const {
    auto it = entries_.find(name);
    return it == entries_.end() ? nullptr : &it->second;
  }
  // The entry named `name`; otherwise fails: "unsupported <what> 'X' (supported: A, B)".
  const Entry& at(const std::string& name, const std::string& what) const {
    if (const Entry* e = find(name)) return *e;
    fail("unsupported ", what, " '", name, "' (supported: ", list(), ")");
  }

  // Every name, sorted.
  std::vector<std::string> names() const {
    std::vector<std::string> out;
    for (const auto& [name, entry] : entries_) out.push_back(name);
    return out;
  }
  const std::map<std::string, Entry>& entries() const { return entries_; }
  // "A, B, C"
  std::string list() const {
    std::string s;
    for (const auto& [name, entry] : entries_) s += (s.empty() ? "" : ", ") + name;
    return s;
  }

 private:
  Registry() = default;
  std::map<std::string, Entry> entries_;
};

#define PAB_REGISTRY_CONCAT2(a, b) a##b
#define PAB_REGISTRY_CONCAT(a, b) PAB_REGISTRY_CONCAT2(a, b)
// Registers an Entry under `name` at start-up, from namespace scope in the
// file that implements it.
#define PAB_REGISTER(Entry, name, ...)                                          \
  [[maybe_unused]] static const bool PAB_REGISTRY_CONCAT(pab_registered_, __LINE__) = \
      (::pab::Registry<Entry>::get().add(name, Entry __VA_ARGS__), true)

}  // namespace pab
