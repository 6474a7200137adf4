#include "cache/pab_config.h"

#include <set>

#include "io/config.h"

namespace pab {

namespace {

constexpr const char* kKinds[3] = {"spatial", "temporal", "cross"};

std::array<double, 2> read_window(const nlohmann::json& v, const std::string& where, const std::string& key) {
  if (!v.is_array() || v.size() != 2 || !v[0].is_number() || !v[1].is_number())
    fail(where, ": key '", key, "': expected [low, high], got ", v.dump());
  return {v[0].get<double>(), v[1].get<double>()};
}

int read_range(const nlohmann::json& v, const std::string& where, const std::string& key) {
  if (!v.is_number_integer()) fail(where, ": key '", key, "': expected an integer >= 1, got ", v.dump());
  int64_t r = v.get<int64_t>();
  if (r < 1 || r > 1000000) fail(where, ": key '", key, "': range must be >= 1, got ", r);
  return int(r);
}

PabConfig parse_diffusers(const nlohmann::json& j, const std::string& where) {
  PabConfig c;
  c.counting = Counting::diffusers;
  std::set<std::string> known;
  bool any_range = false;
  for (int k = 0; k < 3; ++k) {
    std::string range_key = std::string(kKinds[k]) + "_attention_block_skip_range";
    std::string window_key = std::string(kKinds[k]) + "_attention_timestep_skip_range";
    std::string ident_key = std::string(kKinds[k]) + "_attention_block_identifiers";
    known.insert({range_key, window_key, ident_key});
    BroadcastRule& r = c.rules[size_t(k)];
    if (j.contains(window_key)) {
      auto w = read_window(j.at(window_key), where, window_key);
      r.lo = w[0];
      r.hi = w[1];
    }
    if (j.contains(range_key) && !j.at(range_key).is_null()) {
      r.range = read_range(j.at(range_key), where, range_key);
      any_range = true;
    }
    // Block identifiers are name patterns in diffusers; pab classifies sites by
    // the kind each model declares, so they are accepted and not needed.
    if (j.contains(ident_key) && !j.at(ident_key).is_array() && !j.at(ident_key).is_null())
      fail(where, ": key '", ident_key, "': expected a list of patterns");
  }
  known.insert("current_timestep_callback");
  for (auto it = j.begin(); it != j.end(); ++it)
    if (!known.count(it.key())) fail(where, ": unknown PAB key '", it.key(), "'");
  // As diffusers: a configuration without any range broadcasts spatial attention every 2nd step.
  if (!any_range) c.rule(SiteKind::spatial).range = 2;
  return c;
}

}  // namespace

PabConfig parse_pab_config(const nlohmann::json& j, const std::string& where) {
  if (!j.is_object()) fail(where, ": a PAB configuration must be an object");
  return parse_diffusers(j, where);
}

}  // namespace pab
