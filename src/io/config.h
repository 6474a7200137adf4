// Typed access to JSON configuration files (config.json, model_index.json,
// scheduler_config.json). Every error names the file and the key.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
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

 private:
  template <class T>
  T convert(const std::string& key, const nlohmann::json& v) const;
  nlohmann::json j_;
  std::string where_;
};

const char* json_type_name(const nlohmann::json& v);

template <class T>
T JsonConfig::convert(const std::string& key, const nlohmann::json& v) const {
  auto mismatch = [&](const char* expected) {
    fail(where_, ": key '", key, "': expected ", expected, ", got ", json_type_name(v), " ", v.dump());
  };
  if constexpr (std::is_same_v<T, bool>) {
    if (!v.is_boolean()) mismatch("a boolean");
    return v.get<bool>();
  } else if constexpr (std::is_integral_v<T>) {
    if (v.is_number_float() && v.get<double>() == double(int64_t(v.get<double>()))) return T(v.get<double>());
    if (!v.is_number_integer()) mismatch("an integer");
    return v.get<T>();
  } else if constexpr (std::is_floating_point_v<T>) {
    if (!v.is_number()) mismatch("a number");
    return v.get<T>();
  } else if constexpr (std::is_same_v<T, std::string>) {
    if (!v.is_string()) mismatch("a string");
    return v.get<std::string>();
  } else if constexpr (std::is_same_v<T, std::vector<int>> || std::is_same_v<T, std::vector<int64_t>>) {
    if (!v.is_array()) mismatch("an array of integers");
    T out;
    for (const auto& e : v) {
      if (!e.is_number_integer()) mismatch("an array of integers");
      out.push_back(e.get<typename T::value_type>());
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
