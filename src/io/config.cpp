#include "io/config.h"

#include "io/atomic_file.h"

namespace pab {

JsonConfig JsonConfig::load(const std::string& path) {
  std::string text = read_file(path);
  nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) fail(path, ": not valid JSON");
  if (!j.is_object()) fail(path, ": expected a JSON object at the top level");
  return JsonConfig(std::move(j), path);
}

void JsonConfig::unsupported(const std::string& key, const std::string& why) const {
  std::string value = j_.contains(key) ? j_.at(key).dump() : "(missing)";
  fail(where_, ": key '", key, "' = ", value, ": ", why);
}

const char* json_type_name(const nlohmann::json& v) {
  switch (v.type()) {
    case nlohmann::json::value_t::null: return "null";
    case nlohmann::json::value_t::boolean: return "boolean";
    case nlohmann::json::value_t::number_integer:
    case nlohmann::json::value_t::number_unsigned: return "integer";
    case nlohmann::json::value_t::number_float: return "number";
    case nlohmann::json::value_t::string: return "string";
    case nlohmann::json::value_t::array: return "array";
    case nlohmann::json::value_t::object: return "object";
    default: return "value";
  }
}

}  // namespace pab
