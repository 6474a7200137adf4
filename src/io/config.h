// Typed access to JSON configuration files (config.json, model_index.json,
// scheduler_config.json). Every error names the file and the key.
#pragma once

#include <cmath>
#include <initializer_list>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/error.h"

namespace pab {

class JsonConfig {
 public:
  // Parses `path`; fails naming it if it is missing or not a JSON object.
  static JsonConfig load(const std::string& path);
  JsonConfig(nlohmann::json j, std::string where) : j_(std::move(j)), where_(std::move(where)) {}

  const std::string& where() const { return where_; }
  const nlohmann::json& json() const { return j_; }
  bool has(const std::string& key) const { return j_.contains(key) && !j_.at(key).is_null(); }

  // Required values: missing, null or mistyped is an error.
  template <class T>
  T get(const std::string& key) const {
    if (!j_.contains(key)) fail(where_, ": missing required key '", key, "'");
    return convert<T>(key, j_.at(key));
  }
  // Optional values: missing or null gives the default (diffusers' default).
  template <class T>
  T get_or(const std::string& key, const T& fallback) const {
    if (!has(key)) return fallback;
    return convert<T>(key, j_.at(key));
  }
  template <class T>
  std::optional<T> get_optional(const std::string& key) const {
    if (!has(key)) return std::nullopt;
    return convert<T>(key, j_.at(key));
  }
  // Fails with "<file>: key '<key>' = <value>: <why>".
  [[noreturn]] void unsupported(const std::string& key, const std::string& why) const;
  // Sizes in a config (widths, counts, sample sizes): fails with
  // unsupported(key, ...) for the first value outside [1, kMaxConfigSize].
  static constexpr int kMaxConfigSize = 1 << 24;
  void require_positive(std::initializer_list<std::pair<const char*, int>> values) const;
  // The size or count `key` (`fallback` when missing), checked as require_positive checks.
  int64_t get_size(const std::string& key, int64_t fallback) const;

 private:
  template <class T>
  T convert(const std::string& key, const nlohmann::json& v) const;
  nlohmann::json j_;
  std::string where_;
};

const char* json_type_name(const nlohmann::json& v);

// Parses JSON text; fails with "<where>: not valid JSON (line L, column C: why)".
// With `unique_keys`, a key given twice in the top-level object fails too
// (JSON readers disagree on which of the two they keep).
nlohmann::json parse_json(const std::string& where, std::string_view text, bool unique_keys = false);
// As parse_json, keeping objects' keys in their order.
nlohmann::ordered_json parse_ordered_json(const std::string& where, std::string_view text);

// A value written on one line and cut to about `max_chars` (for messages).
std::string json_brief(const nlohmann::json& v, size_t max_chars = 60);

namespace detail {
// An integer value of type I: 4 and 4.0 are accepted, anything else, or out of I's range, is not.
template <class I>
bool json_int(const nlohmann::json& v, I* out) {
  if (v.is_number_unsigned()) {
    uint64_t u = v.get<uint64_t>();
    if (!std::in_range<I>(u)) return false;
    *out = I(u);
    return true;
  }
  if (v.is_number_integer()) {
    int64_t i = v.get<int64_t>();
    if (!std::in_range<I>(i)) return false;
    *out = I(i);
    return true;
  }
  if (v.is_number_float()) {
    double d = v.get<double>();
    // The bounds are powers of two (exact in double); NaN fails both comparisons.
    if (!(d >= -0x1p63 && d < 0x1p63) || d != double(int64_t(d)) || !std::in_range<I>(int64_t(d))) return false;
    *out = I(int64_t(d));
    return true;
  }
  return false;
}
}  // namespace detail

template <class T>
T JsonConfig::convert(const std::string& key, const nlohmann::json& v) const {
  auto mismatch = [&](const char* expected) {
    fail(where_, ": key '", key, "': expected ", expected, ", got ", json_type_name(v), " ", json_brief(v));
  };
  if constexpr (std::is_same_v<T, bool>) {
    if (!v.is_boolean()) mismatch("a boolean");
    return v.get<bool>();
  } else if constexpr (std::is_integral_v<T>) {
    T out{};
    if (!detail::json_int(v, &out)) mismatch("an integer in range");
    return out;
  } else if constexpr (std::is_floating_point_v<T>) {
    if (!v.is_number()) mismatch("a number");
    double d = v.get<double>();
    if (std::isfinite(d) && std::fabs(d) > double(std::numeric_limits<T>::max())) mismatch("a number in range");
    return T(d);
  } else if constexpr (std::is_same_v<T, std::string>) {
    if (!v.is_string()) mismatch("a string");
    return v.get<std::string>();
  } else if constexpr (std::is_same_v<T, std::vector<int>> || std::is_same_v<T, std::vector<int64_t>>) {
    if (!v.is_array()) mismatch("an array of integers");
    T out;
    for (const auto& e : v) {
      typename T::value_type x{};
      if (!detail::json_int(e, &x)) mismatch("an array of integers");
      out.push_back(x);
    }
    return out;
  } else if constexpr (std::is_same_v<T, std::vector<double>>) {
    if (!v.is_array()) mismatch("an array of numbers");
    T out;
    for (const auto& e : v) {
      if (!e.is_number()) mismatch("an array of numbers");
      out.push_back(e.get<double>());
    }
    return out;
  } else if constexpr (std::is_same_v<T, std::vector<std::string>>) {
    if (!v.is_array()) mismatch("an array of strings");
    T out;
    for (const auto& e : v) {
      if (!e.is_string()) mismatch("an array of strings");
      out.push_back(e.get<std::string>());
    }
    return out;
  } else {
    static_assert(sizeof(T) == 0, "unsupported config value type");
  }
}

}  // namespace pab
