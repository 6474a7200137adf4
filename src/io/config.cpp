#include "io/config.h"

#include <algorithm>
#include <set>

#include "io/atomic_file.h"

namespace pab {

JsonConfig JsonConfig::load(const std::string& path) {
  nlohmann::json j = parse_json(path, read_file(path));
  if (!j.is_object()) fail(path, ": expected a JSON object at the top level, got ", json_type_name(j));
  return JsonConfig(std::move(j), path);
}

void JsonConfig::require_positive(std::initializer_list<std::pair<const char*, int>> values) const {
  for (const auto& [key, v] : values) {
    if (v < 1) unsupported(key, "must be >= 1");
    if (v > kMaxConfigSize)
      unsupported(key, cat("must be at most ", kMaxConfigSize, " (a larger size is a broken config)"));
  }
}

int64_t JsonConfig::get_size(const std::string& key, int64_t fallback) const {
  const int64_t v = get_or<int64_t>(key, fallback);
  if (v < 1) unsupported(key, "must be >= 1");
  if (v > kMaxConfigSize) unsupported(key, cat("must be at most ", kMaxConfigSize, " (a larger size is a broken config)"));
  return v;
}

void JsonConfig::unsupported(const std::string& key, const std::string& why) const {
  std::string value = j_.contains(key) ? json_brief(j_.at(key)) : "(missing)";
  fail(where_, ": key '", key, "' = ", value, ": ", why);
}

const char* json_type_name(const nlohmann::json& v) {
  switch (v.type()) {
    case nlohmann::json::value_t::null:
      return "null";
    case nlohmann::json::value_t::boolean:
      return "boolean";
    case nlohmann::json::value_t::number_integer:
    case nlohmann::json::value_t::number_unsigned:
      return "integer";
    case nlohmann::json::value_t::number_float:
      return "number";
    case nlohmann::json::value_t::string:
      return "string";
    case nlohmann::json::value_t::array:
      return "array";
    case nlohmann::json::value_t::object:
      return "object";
    default:
      return "value";
  }
}

namespace {

// Keeps messages on one printable line whatever bytes the input held.
std::string printable(std::string_view s) {
  std::string out;
  for (char c : s) out.push_back(c >= 0x20 && c < 0x7f ? c : '?');
  return out;
}

// Appends a brief form of v to out, stopping once out exceeds `limit` characters.
// The depth bound keeps the recursion shallow for deeply nested input.
void brief(const nlohmann::json& v, size_t limit, int depth, std::string* out) {
  if (out->size() > limit) return;
  if (v.is_array() || v.is_object()) {
    bool obj = v.is_object();
    if (v.empty()) {
      *out += obj ? "{}" : "[]";
      return;
    }
    if (depth >= 3) {
      *out += obj ? "{...}" : "[...]";
      return;
    }
    *out += obj ? '{' : '[';
    bool first = true;
    for (auto it = v.begin(); it != v.end() && out->size() <= limit; ++it) {
      if (!first) *out += ", ";
      first = false;
      if (obj) {
        out->push_back('"');
        out->append(printable(it.key()));
        out->append("\": ");
      }
      brief(it.value(), limit, depth + 1, out);
    }
    *out += obj ? '}' : ']';
    return;
  }
  // Scalars: dump() escapes control characters; replacing invalid UTF-8 avoids its exception.
  *out += printable(v.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
}

}  // namespace

std::string json_brief(const nlohmann::json& v, size_t max_chars) {
  std::string out;
  brief(v, max_chars, 0, &out);
  if (out.size() > max_chars) out = out.substr(0, max_chars) + "...";
  return out;
}

namespace {

// Parses `text` as Json (nlohmann::json or ordered_json) with `callback`,
// failing with the line and column of a syntax error.
template <class Json>
Json parse_with_position(const std::string& where, std::string_view text,
                         typename Json::parser_callback_t callback = nullptr) {
  try {
    return Json::parse(text.begin(), text.end(), callback);
  } catch (const nlohmann::json::parse_error& e) {
    size_t pos = std::min<size_t>(e.byte > 0 ? e.byte - 1 : 0, text.size());  // e.byte counts from 1
    size_t line = 1, column = 1;
    for (size_t i = 0; i < pos; ++i) {
      if (text[i] == '\n') {
        ++line;
        column = 1;
      } else {
        ++column;
      }
    }
    // nlohmann's message reads "...: syntax error while parsing X - why; last read: '<bytes>'";
    // the bytes may be anything, so only the part before them is kept.
    std::string what = e.what();
    size_t from = what.find("syntax error");
    size_t to = what.find("; last read");
    std::string why =
        from == std::string::npos ? "parse error" : what.substr(from, to == std::string::npos ? to : to - from);
    fail(where, ": not valid JSON (line ", line, ", column ", column, ": ", printable(why), ")");
  } catch (const nlohmann::json::exception& e) {  // e.g. a number too large for a double
    fail(where, ": not valid JSON (", printable(e.what()), ")");
  }
}

}  // namespace

nlohmann::json parse_json(const std::string& where, std::string_view text, bool unique_keys) {
  std::set<std::string> keys;
  nlohmann::json::parser_callback_t check_keys = [&](int depth, nlohmann::json::parse_event_t event,
                                                     nlohmann::json& parsed) {
    if (depth == 1 && event == nlohmann::json::parse_event_t::key && !keys.insert(parsed.get<std::string>()).second)
      fail(where, ": key ", json_brief(parsed, 80), " appears twice");
    return true;
  };
  return parse_with_position<nlohmann::json>(where, text, unique_keys ? check_keys : nullptr);
}

nlohmann::ordered_json parse_ordered_json(const std::string& where, std::string_view text) {
  return parse_with_position<nlohmann::ordered_json>(where, text);
}

}  // namespace pab
