#include "cache/site.h"

#include <sstream>

#include "cache/cache_method.h"
#include "core/error.h"
#include "core/registry.h"

namespace pab {

namespace {
constexpr const char* kKindNames[kSiteKinds] = {"spatial",      "temporal", "cross", "mlp_spatial",
                                                "mlp_temporal", "block",    "step"};
}  // namespace

const char* site_kind_name(SiteKind k) { return kKindNames[size_t(k)]; }

bool parse_site_kind(const std::string& s, SiteKind* out) {
  for (int i = 0; i < kSiteKinds; ++i) {
    if (s == kKindNames[i]) {
      *out = SiteKind(i);
      return true;
    }
  }
  return false;
}

std::vector<SiteKind> SiteLayout::site_kinds() const {
  std::vector<SiteKind> out;
  for (const auto& [kind, blocks] : kinds) out.push_back(kind);
  return out;
}

std::vector<SiteKind> SiteLayout::layer_kinds() const {
  std::vector<SiteKind> out;
  for (const auto& [kind, blocks] : kinds)
    if (is_layer_site(kind)) out.push_back(kind);
  return out;
}

int SiteLayout::blocks(SiteKind kind) const {
  for (const auto& [k, blocks] : kinds)
    if (k == kind) return blocks;
  return 0;
}

CacheStats::Counts CacheStats::total(SiteKind k) const {
  Counts c;
  for (const auto& step : per_step) {
    c.computed += step[size_t(k)].computed;
    c.reused += step[size_t(k)].reused;
  }
  return c;
}

CacheStats::Counts CacheStats::total() const {
  Counts c;
  for (int k = 0; k < kSiteKinds; ++k) {
    Counts t = total(SiteKind(k));
    c.computed += t.computed;
    c.reused += t.reused;
  }
  return c;
}

void CacheStats::record(const StepContext& step, SiteId id, bool computed) {
  PAB_ASSERT(step.step >= 0, "negative step");
  if (per_step.size() <= size_t(step.step)) per_step.resize(size_t(step.step) + 1);
  auto& c = per_step[size_t(step.step)][size_t(id.kind)];
  (computed ? c.computed : c.reused)++;
  decisions.push_back({step.step, step.timestep, id, computed});
}

std::string CacheStats::summary(const char* reused) const {
  std::ostringstream os;
  bool first = true;
  for (int k = 0; k < kSiteKinds; ++k) {
    Counts c = total(SiteKind(k));
    if (c.computed + c.reused == 0) continue;
    os << (first ? "" : "; ") << kKindNames[k] << ": " << c.computed << " computed, " << c.reused << " " << reused;
    first = false;
  }
  return first ? "no cached sites ran" : os.str();
}

std::unique_ptr<CachePolicy> make_cache_policy(const CacheChoice& choice, const std::string& model_class,
                                               const SiteLayout& sites, std::string* note) {
  const CacheMethod& m = Registry<CacheMethod>::get().at(choice.method, "cache method");
  std::string said;
  auto policy = m.make(choice, model_class, sites, &said);
  if (note) *note = said;
  return policy;
}

}  // namespace pab
