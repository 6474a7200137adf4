// Cache methods by name. A method is one CachePolicy (cache/site.h) in its own
// file that registers how to build it from the user's choice:
//   PAB_REGISTER(CacheMethod, "pab", {make_pab_policy});
// Nothing else knows the method: the generation API carries a CacheChoice,
// the loop sees a CachePolicy.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "cache/site.h"

namespace pab {

// What the user asked for.
struct CacheChoice {
  std::string method = "pab";         // a registered method
  std::optional<std::string> preset;  // the method's own words: "default", "off" or its short form
  std::optional<std::string> file;    // a settings file in a format the method reads
};

struct CacheMethod {
  // The policy the choice makes for a model of class `model_class` with
  // `sites`, its settings checked against those sites (one-line error); null
  // when the choice turns caching off. A one-line note for the user (e.g.
  // that the model has no published settings) goes to `note`.
  std::function<std::unique_ptr<CachePolicy>(const CacheChoice& choice, const std::string& model_class,
                                             const SiteLayout& sites, std::string* note)>
      make;
};

// The registered method's policy for `choice` (see CacheMethod::make); an
// unknown method lists the registered ones.
std::unique_ptr<CachePolicy> make_cache_policy(const CacheChoice& choice, const std::string& model_class,
                                               const SiteLayout& sites, std::string* note = nullptr);

}  // namespace pab
