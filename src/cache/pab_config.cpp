#include "cache/pab_config.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <filesystem>
#include <set>
#include <sstream>

#include "io/atomic_file.h"
#include "io/config.h"

namespace pab {

namespace {

using ojson = nlohmann::ordered_json;

constexpr const char* kKinds[3] = {"spatial", "temporal", "cross"};
constexpr int kMaxRange = 1000000;
constexpr int kMaxBlock = 100000;

std::string str(const char* a, const char* b) {
  return std::string(a) + b;
}

// ---------------------------------------------------------------- values

bool is_integral(const ojson& v) {
  if (v.is_number_integer()) return true;
  return v.is_number_float() && std::isfinite(v.get<double>()) && v.get<double>() == std::floor(v.get<double>());
}

int64_t read_int(const ojson& v, const std::string& where, const std::string& key, const char* expected) {
  if (!is_integral(v) || std::fabs(v.get<double>()) > 1e15)
    fail(where, ": key '", key, "': expected ", expected, ", got ", v.dump());
  return v.is_number_integer() ? v.get<int64_t>() : int64_t(v.get<double>());
}

int read_range(const ojson& v, const std::string& where, const std::string& key) {
  int64_t r = read_int(v, where, key, "an integer >= 1");
  if (r < 1 || r > kMaxRange) fail(where, ": key '", key, "': range must be >= 1, got ", r);
  return int(r);
}

bool read_bool(const ojson& v, const std::string& where, const std::string& key) {
  if (!v.is_boolean()) fail(where, ": key '", key, "': expected true or false, got ", v.dump());
  return v.get<bool>();
}

std::array<double, 2> read_window(const ojson& v, const std::string& where, const std::string& key) {
  if (v.is_number())
    fail(where, ": key '", key, "': a single threshold (early OpenDiT) is not supported; give [low, high], got ",
         v.dump());
  if (!v.is_array() || v.size() != 2 || !v[0].is_number() || !v[1].is_number())
    fail(where, ": key '", key, "': expected [low, high], got ", v.dump());
  std::array<double, 2> w = {v[0].get<double>(), v[1].get<double>()};
  if (!(w[0] < w[1])) fail(where, ": key '", key, "': timestep window (", w[0], ", ", w[1], ") is empty or inverted");
  return w;
}

std::vector<int> read_blocks(const ojson& v, const std::string& where, const std::string& key) {
  if (!v.is_array() || v.empty())
    fail(where, ": key '", key, "': expected a non-empty list of block indices, got ", v.dump());
  std::vector<int> out;
  for (const ojson& e : v) {
    int64_t b = read_int(e, where, key, "a list of block indices >= 0");
    if (b < 0 || b > kMaxBlock) fail(where, ": key '", key, "': block index ", b, " out of range");
    out.push_back(int(b));
  }
  return out;
}

// VideoSys' spatial_block: [first, last], both included.
std::vector<int> read_block_span(const ojson& v, const std::string& where, const std::string& key) {
  if (!v.is_array() || v.size() != 2) fail(where, ": key '", key, "': expected [first, last] block, got ", v.dump());
  int64_t a = read_int(v[0], where, key, "[first, last] block indices"),
          b = read_int(v[1], where, key, "[first, last] block indices");
  if (a < 0 || b < a || b > kMaxBlock)
    fail(where, ": key '", key, "': block span [", a, ", ", b, "] is empty or out of range");
  std::vector<int> out;
  for (int64_t i = a; i <= b; ++i) out.push_back(int(i));
  return out;
}

// A VideoSys MLP table: {timestep: {block: [...], skip_count: n}, ...}.
std::vector<MlpBroadcast> read_mlp_table(const ojson& v, const std::string& where, const std::string& key) {
  if (!v.is_object() || v.empty())
    fail(where, ": key '", key, "': expected a map from timestep to {block: [...], skip_count: n}, got ", v.dump());
  std::vector<MlpBroadcast> out;
  for (auto it = v.begin(); it != v.end(); ++it) {
    const std::string& t = it.key();
    std::string at = key + "." + t;
    MlpBroadcast e;
    auto [end, ec] = std::from_chars(t.data(), t.data() + t.size(), e.timestep);
    if (ec != std::errc() || end != t.data() + t.size() || e.timestep < 0)
      fail(where, ": key '", key, "': '", t, "' is not an integer timestep");
    const ojson& entry = it.value();
    if (!entry.is_object()) fail(where, ": key '", at, "': expected {block: [...], skip_count: n}, got ", entry.dump());
    for (auto f = entry.begin(); f != entry.end(); ++f)
      if (f.key() != "block" && f.key() != "skip_count") fail(where, ": key '", at, "': unknown field '", f.key(), "'");
    if (!entry.contains("block") || !entry.contains("skip_count"))
      fail(where, ": key '", at, "': needs both 'block' and 'skip_count'");
    e.blocks = read_blocks(entry.at("block"), where, at + ".block");
    int64_t n = read_int(entry.at("skip_count"), where, at + ".skip_count", "an integer >= 1");
    if (n < 1 || n > kMaxRange) fail(where, ": key '", at, ".skip_count': must be >= 1, got ", n);
    e.skip_count = int(n);
    for (const MlpBroadcast& prev : out)
      if (prev.timestep == e.timestep) fail(where, ": key '", key, "': timestep ", e.timestep, " is listed twice");
    out.push_back(std::move(e));
  }
  return out;
}

const ojson* find(const ojson& j, const std::string& key) {
  auto it = j.find(key);
  return it == j.end() || it->is_null() ? nullptr : &*it;
}

// The value under `name` or its older spelling `old_name`; giving both is an error.
struct Named {
  const ojson* value = nullptr;
  std::string key;
};
Named either(const ojson& j, const std::string& name, const std::string& old_name, const std::string& where) {
  const ojson* a = find(j, name);
  const ojson* b = find(j, old_name);
  if (a && b) fail(where, ": keys '", name, "' and '", old_name, "' name the same setting; give one");
  if (a) return {a, name};
  if (b) return {b, old_name};
  return {};
}

// ---------------------------------------------------------------- dialects

const std::set<std::string>& diffusers_keys() {
  static const std::set<std::string> keys = [] {
    std::set<std::string> s = {"current_timestep_callback"};
    for (const char* k : kKinds)
      for (const char* suffix :
           {"_attention_block_skip_range", "_attention_timestep_skip_range", "_attention_block_identifiers"})
        s.insert(str(k, suffix));
    return s;
  }();
  return keys;
}

const std::set<std::string>& videosys_keys() {
  static const std::set<std::string> keys = [] {
    std::set<std::string> s = {"spatial_block",
                               "mlp_broadcast",
                               "mlp_skip",
                               "mlp_spatial_broadcast_config",
                               "mlp_temporal_broadcast_config",
                               "mlp_spatial_skip_config",
                               "mlp_temporal_skip_config",
                               "diffusion_skip",
                               "diffusion_skip_timestep",
                               "diffusion_timestep_respacing"};
    for (const char* k : kKinds)
      for (const char* suffix : {"_broadcast", "_threshold", "_range", "_skip", "_gap"}) s.insert(str(k, suffix));
    return s;
  }();
  return keys;
}

PabConfig parse_diffusers(const ojson& j, const std::string& where) {
  PabConfig c;
  c.counting = Counting::diffusers;
  bool any_range = false;
  for (int k = 0; k < 3; ++k) {
    const std::string range_key = str(kKinds[k], "_attention_block_skip_range");
    const std::string window_key = str(kKinds[k], "_attention_timestep_skip_range");
    const std::string ident_key = str(kKinds[k], "_attention_block_identifiers");
    BroadcastRule& r = c.rules[size_t(k)];
    if (const ojson* w = find(j, window_key)) {
      auto lh = read_window(*w, where, window_key);
      r.lo = lh[0];
      r.hi = lh[1];
    }
    if (const ojson* v = find(j, range_key)) {
      r.range = read_range(*v, where, range_key);
      any_range = true;
    }
    // Block identifiers are name patterns in diffusers; pab classifies sites by
    // the kind each model declares, so they are accepted and not needed.
    if (const ojson* v = find(j, ident_key); v && !v->is_array())
      fail(where, ": key '", ident_key, "': expected a list of patterns");
  }
  // As diffusers: a configuration without any range broadcasts spatial attention every 2nd step.
  if (!any_range) c.rule(SiteKind::spatial).range = 2;
  return c;
}

PabConfig parse_videosys(const ojson& j, const std::string& where) {
  PabConfig c;
  c.counting = Counting::videosys;
  for (int k = 0; k < 3; ++k) {
    const std::string kind = kKinds[k];
    Named on = either(j, kind + "_broadcast", kind + "_skip", where);
    Named range = either(j, kind + "_range", kind + "_gap", where);
    Named threshold{find(j, kind + "_threshold"), kind + "_threshold"};
    Named blocks{k == 0 ? find(j, "spatial_block") : nullptr, "spatial_block"};
    // A range without an explicit switch turns the kind on.
    const bool enabled = on.value ? read_bool(*on.value, where, on.key) : range.value != nullptr;
    if (!enabled) {
      for (const Named* n : {&range, &threshold, &blocks}) {
        if (!n->value) continue;
        if (on.value) fail(where, ": key '", on.key, "' is false but '", n->key, "' is set; remove one");
        fail(where, ": key '", n->key, "' is set but no ", kind, "_range is given");
      }
      continue;
    }
    if (!range.value) fail(where, ": key '", on.key, "' is true but ", kind, "_range is missing");
    if (!threshold.value) fail(where, ": ", kind, " broadcast needs ", kind, "_threshold: [low, high]");
    BroadcastRule& r = c.rules[size_t(k)];
    r.range = read_range(*range.value, where, range.key);
    auto lh = read_window(*threshold.value, where, threshold.key);
    r.lo = lh[0];
    r.hi = lh[1];
    if (blocks.value) r.blocks = read_block_span(*blocks.value, where, blocks.key);
  }

  Named mlp_on = either(j, "mlp_broadcast", "mlp_skip", where);
  Named mlp_tables[2] = {either(j, "mlp_spatial_broadcast_config", "mlp_spatial_skip_config", where),
                         either(j, "mlp_temporal_broadcast_config", "mlp_temporal_skip_config", where)};
  const bool any_table = mlp_tables[0].value || mlp_tables[1].value;
  const bool mlp = mlp_on.value ? read_bool(*mlp_on.value, where, mlp_on.key) : any_table;
  if (mlp && !any_table)
    fail(where, ": key '", mlp_on.key,
         "' is true but neither mlp_spatial_broadcast_config nor "
         "mlp_temporal_broadcast_config is given");
  if (!mlp && any_table)
    fail(where, ": key '", mlp_on.key, "' is false but '", (mlp_tables[0].value ? mlp_tables[0] : mlp_tables[1]).key,
         "' is set; remove one");
  if (mlp_tables[0].value) c.mlp_spatial = read_mlp_table(*mlp_tables[0].value, where, mlp_tables[0].key);
  if (mlp_tables[1].value) c.mlp_temporal = read_mlp_table(*mlp_tables[1].value, where, mlp_tables[1].key);

  // Timestep respacing shared the original's configuration but is not a broadcast.
  if (const ojson* v = find(j, "diffusion_skip"); v && read_bool(*v, where, "diffusion_skip"))
    fail(where, ": key 'diffusion_skip': timestep respacing is not part of PAB and is not supported");
  return c;
}

// ---------------------------------------------------------------- YAML

bool plain_is(const std::string& s, std::initializer_list<const char*> words) {
  for (const char* w : words)
    if (s == w) return true;
  return false;
}

// A plain YAML scalar as PyYAML (YAML 1.1) reads it: null, bool, int, float or string.
ojson yaml_scalar(const YAML::Node& n) {
  const std::string& s = n.Scalar();
  if (n.Tag() == "!") return s;  // quoted
  if (plain_is(s, {"", "~", "null", "Null", "NULL"})) return nullptr;
  if (plain_is(s, {"true", "True", "TRUE", "yes", "Yes", "YES", "on", "On", "ON"})) return true;
  if (plain_is(s, {"false", "False", "FALSE", "no", "No", "NO", "off", "Off", "OFF"})) return false;
  int64_t i = 0;
  const char* b = s.data() + (s[0] == '+' ? 1 : 0);
  if (auto [end, ec] = std::from_chars(b, s.data() + s.size(), i); ec == std::errc() && end == s.data() + s.size())
    return i;
  double d = 0;
  if (auto [end, ec] = std::from_chars(b, s.data() + s.size(), d); ec == std::errc() && end == s.data() + s.size())
    return d;
  return s;
}

ojson yaml_to_json(const YAML::Node& n) {
  switch (n.Type()) {
    case YAML::NodeType::Null:
    case YAML::NodeType::Undefined:
      return nullptr;
    case YAML::NodeType::Scalar:
      return yaml_scalar(n);
    case YAML::NodeType::Sequence: {
      ojson a = ojson::array();
      for (const YAML::Node& e : n) a.push_back(yaml_to_json(e));
      return a;
    }
    case YAML::NodeType::Map: {
      ojson o = ojson::object();
      for (const auto& kv : n) {
        std::string key = kv.first.IsScalar() ? kv.first.Scalar() : YAML::Dump(kv.first);
        if (o.contains(key)) fail("duplicate key '", key, "'");
        o[key] = yaml_to_json(kv.second);
      }
      return o;
    }
  }
  return nullptr;
}

// "100-800" -> {100, 800}
bool parse_window_text(const std::string& s, double* lo, double* hi) {
  size_t dash = s.find('-', 1);
  if (dash == std::string::npos) return false;
  auto num = [](const std::string& t, double* out) {
    auto [end, ec] = std::from_chars(t.data(), t.data() + t.size(), *out);
    return !t.empty() && ec == std::errc() && end == t.data() + t.size();
  };
  return num(s.substr(0, dash), lo) && num(s.substr(dash + 1), hi);
}

std::string trim(const std::string& s) {
  size_t a = s.find_first_not_of(" \t"), b = s.find_last_not_of(" \t");
  return a == std::string::npos ? "" : s.substr(a, b - a + 1);
}

}  // namespace

PabDialect detect_pab_dialect(const ojson& j, const std::string& where) {
  if (!j.is_object()) fail(where, ": a PAB configuration must be a map of settings");
  if (j.empty()) fail(where, ": no PAB settings (use --pab off to disable PAB)");
  std::string diffusers_key, videosys_key;
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& k = it.key();
    if (diffusers_keys().count(k)) {
      if (diffusers_key.empty()) diffusers_key = k;
    } else if (videosys_keys().count(k)) {
      if (videosys_key.empty()) videosys_key = k;
    } else {
      fail(
          where, ": unknown PAB key '", k,
          "' (expected diffusers PyramidAttentionBroadcastConfig or VideoSys PABConfig names, see docs/pab-config.md)");
    }
  }
  if (!diffusers_key.empty() && !videosys_key.empty())
    fail(where, ": mixes the diffusers key '", diffusers_key, "' with the VideoSys key '", videosys_key,
         "'; use one dialect");
  return diffusers_key.empty() ? PabDialect::videosys : PabDialect::diffusers;
}

PabConfig parse_pab_config(const ojson& j, const std::string& where) {
  return detect_pab_dialect(j, where) == PabDialect::diffusers ? parse_diffusers(j, where) : parse_videosys(j, where);
}

PabConfig parse_pab_config(const nlohmann::json& j, const std::string& where) {
  return parse_pab_config(ojson::parse(j.dump()), where);
}

PabConfig load_pab_config_file(const std::string& path) {
  std::string text = read_file(path);
  ojson j;
  if (std::filesystem::path(path).extension() == ".json") {
    j = parse_ordered_json(path, text);
  } else {
    YAML::Node root;
    try {
      root = YAML::Load(text);
    } catch (const YAML::Exception& e) {
      fail(path, ": not valid YAML: ", e.what());
    }
    try {
      j = yaml_to_json(root);
    } catch (const Error& e) {
      fail(path, ": ", e.what());
    }
  }
  return parse_pab_config(j, path);
}

PabConfig parse_pab_short_form(const std::string& text) {
  const std::string where = "--pab '" + text + "'";
  auto bad = [&](const std::string& item) {
    fail(where, ": '", item,
         "' is not kind=range[@low-high] (kinds: spatial, temporal, cross; e.g. spatial=2@100-800)");
  };
  PabConfig c;
  c.counting = Counting::diffusers;
  std::set<std::string> seen;
  size_t start = 0;
  while (start <= text.size()) {
    size_t comma = text.find(',', start);
    std::string item = trim(text.substr(start, comma == std::string::npos ? std::string::npos : comma - start));
    start = comma == std::string::npos ? text.size() + 1 : comma + 1;
    size_t eq = item.find('=');
    if (eq == std::string::npos) bad(item);
    std::string kind = trim(item.substr(0, eq)), rest = trim(item.substr(eq + 1));
    SiteKind k;
    if (!parse_site_kind(kind, &k) || int(k) >= 3) bad(item);
    if (!seen.insert(kind).second) fail(where, ": ", kind, " is given twice");
    BroadcastRule& r = c.rule(k);
    size_t at = rest.find('@');
    std::string range_text = trim(rest.substr(0, at));
    int64_t range = 0;
    auto [end, ec] = std::from_chars(range_text.data(), range_text.data() + range_text.size(), range);
    if (range_text.empty() || ec != std::errc() || end != range_text.data() + range_text.size()) bad(item);
    if (range < 1 || range > kMaxRange) fail(where, ": ", kind, " range must be >= 1, got ", range);
    r.range = int(range);
    if (at != std::string::npos) {
      if (!parse_window_text(trim(rest.substr(at + 1)), &r.lo, &r.hi)) bad(item);
      if (!(r.lo < r.hi)) fail(where, ": ", kind, " timestep window (", r.lo, ", ", r.hi, ") is empty or inverted");
    }
  }
  return c;
}

PabConfig default_pab_config(const std::string& model_class) {
  struct Published {
    const char* model_class;
    std::array<BroadcastRule, 3> rules;  // spatial, temporal, cross
  };
  // VideoSys 4cce477, videosys/pipelines/*: the defaults of CogVideoXPABConfig,
  // LattePABConfig, OpenSoraPABConfig, OpenSoraPlanV110PABConfig and
  // OpenSoraPlanV120PABConfig, and the MLP broadcast of the two that turn it
  // on: OpenSoraPABConfig's blocks 0-4 at int timesteps 676, 788 and 864,
  // OpenSoraPlanV110PABConfig's blocks 0-6 at 738, 714, ..., 426 (every 24:
  // every 4th step of its 150-step PNDM schedule), each reused for the next
  // 2 steps; timesteps the schedule does not hold never trigger it, as in the
  // original.
  static const Published kPublished[] = {
      {"CogVideoXTransformer3DModel", {{{2, 100, 850, {}}, {}, {}}}},
      {"LatteTransformer3DModel", {{{2, 100, 800, {}}, {3, 100, 800, {}}, {6, 100, 800, {}}}}},
      {"STDiT3", {{{2, 450, 930, {}}, {4, 450, 930, {}}, {6, 450, 930, {}}}}},
      {"LatteT2V", {{{2, 100, 850, {}}, {4, 100, 850, {}}, {6, 100, 850, {}}}}},
      {"OpenSoraT2V", {{{2, 100, 850, {}}, {}, {6, 100, 850, {}}}}},
  };
  std::string known;
  for (const Published& p : kPublished) {
    if (model_class == p.model_class) {
      PabConfig c;
      c.counting = Counting::videosys;
      c.rules = p.rules;
      if (model_class == std::string("STDiT3"))
        for (int t : {676, 788, 864}) {
          c.mlp_spatial.push_back({t, 2, {0, 1, 2, 3, 4}});
          c.mlp_temporal.push_back({t, 2, {0, 1, 2, 3, 4}});
        }
      if (model_class == std::string("LatteT2V"))
        for (int t = 738; t >= 426; t -= 24) {
          c.mlp_spatial.push_back({t, 2, {0, 1, 2, 3, 4, 5, 6}});
          c.mlp_temporal.push_back({t, 2, {0, 1, 2, 3, 4, 5, 6}});
        }
      return c;
    }
    known += (known.empty() ? "" : ", ") + std::string(p.model_class);
  }
  fail("--pab default: no published PAB settings for '", model_class, "' (known: ", known, ")");
}

PabConfig fit_published_blocks(PabConfig c, const SiteLayout& model) {
  for (auto [kind, table] :
       {std::pair{SiteKind::mlp_spatial, &c.mlp_spatial}, {SiteKind::mlp_temporal, &c.mlp_temporal}}) {
    const int n = model.blocks(kind);
    for (MlpBroadcast& m : *table) std::erase_if(m.blocks, [&](int b) { return b >= n; });
    std::erase_if(*table, [](const MlpBroadcast& m) { return m.blocks.empty(); });
  }
  return c;
}

bool has_published_pab_config(const std::string& model_class) {
  try {
    default_pab_config(model_class);
    return true;
  } catch (const Error&) {
    return false;
  }
}

PabConfig resolve_pab_choice(const std::optional<std::string>& preset, const std::optional<std::string>& file,
                             const std::string& model_class, std::string* note) {
  if (preset && file) fail("give --pab or --pab-config, not both");
  if (file) {
    if (file->empty()) fail("--pab-config '': expected the path of a YAML or JSON file");
    return load_pab_config_file(*file);
  }
  if (!preset || *preset == "default") {
    if (has_published_pab_config(model_class)) return default_pab_config(model_class);
    if (note)
      *note = cat("no published PAB settings for ", model_class,
                  ", so PAB is off (--pab or --pab-config turns it on with your settings)");
    return PabConfig{};
  }
  if (trim(*preset).empty())
    fail("--pab '", *preset, "': expected default, off, or kind=range[@low-high],... (e.g. spatial=2@100-800)");
  if (*preset == "off" || *preset == "none") return PabConfig{};
  return parse_pab_short_form(*preset);
}

}  // namespace pab

namespace pab {

namespace {

// Shortest text that reads back to the same double, never in exponent form
// (the short form's "low-high" would mistake an exponent's sign for the dash).
std::string number_text(double v) {
  char buf[64];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v, std::chars_format::fixed);
  PAB_ASSERT(ec == std::errc(), "number does not fit: ", v);
  return std::string(buf, end);
}

void check_no_blocks(const PabConfig& c, const char* what) {
  for (int k = 0; k < 3; ++k)
    if (c.rules[size_t(k)].enabled() && !c.rules[size_t(k)].blocks.empty())
      fail("PAB ", kKinds[k], ": a block list cannot be written in ", what);
  if (!c.mlp_spatial.empty() || !c.mlp_temporal.empty()) fail("PAB MLP broadcast cannot be written in ", what);
}

std::string ints_text(const std::vector<int>& v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + std::to_string(v[i]);
  return s + "]";
}

}  // namespace

std::string format_pab_short_form(const PabConfig& c) {
  check_no_blocks(c, "the short form");
  std::string out;
  for (int k = 0; k < 3; ++k) {
    const BroadcastRule& r = c.rules[size_t(k)];
    if (!r.enabled()) continue;
    out += cat(out.empty() ? "" : ",", kKinds[k], "=", r.range, "@", number_text(r.lo), "-", number_text(r.hi));
  }
  return out.empty() ? "off" : out;
}

std::string format_pab_yaml(const PabConfig& c, PabDialect dialect) {
  std::ostringstream os;
  if (dialect == PabDialect::diffusers) {
    check_no_blocks(c, "the diffusers dialect");
    os << "# PAB settings, diffusers PyramidAttentionBroadcastConfig names (diffusers counting)\n";
    bool any = false;
    for (int k = 0; k < 3; ++k) {
      const BroadcastRule& r = c.rules[size_t(k)];
      if (!r.enabled()) continue;
      any = true;
      os << kKinds[k] << "_attention_block_skip_range: " << r.range << "\n"
         << kKinds[k] << "_attention_timestep_skip_range: [" << number_text(r.lo) << ", " << number_text(r.hi) << "]\n";
    }
    if (!any) fail("a configuration without broadcast cannot be written in the diffusers dialect (use --pab off)");
    return os.str();
  }
  os << "# PAB settings, VideoSys PABConfig names (VideoSys counting)\n";
  for (int k = 0; k < 3; ++k) {
    const BroadcastRule& r = c.rules[size_t(k)];
    os << kKinds[k] << "_broadcast: " << (r.enabled() ? "true" : "false") << "\n";
    if (!r.enabled()) continue;
    os << kKinds[k] << "_threshold: [" << number_text(r.lo) << ", " << number_text(r.hi) << "]\n"
       << kKinds[k] << "_range: " << r.range << "\n";
    if (r.blocks.empty()) continue;
    std::vector<int> sorted = r.blocks;
    std::sort(sorted.begin(), sorted.end());
    const bool span = sorted.back() - sorted.front() + 1 == int(sorted.size()) &&
                      std::adjacent_find(sorted.begin(), sorted.end()) == sorted.end();
    if (k != 0 || !span)
      fail("PAB ", kKinds[k], ": blocks ", ints_text(r.blocks),
           " cannot be written in the VideoSys dialect (only spatial_block: [first, last])");
    os << "spatial_block: [" << sorted.front() << ", " << sorted.back() << "]\n";
  }
  const bool mlp = !c.mlp_spatial.empty() || !c.mlp_temporal.empty();
  os << "mlp_broadcast: " << (mlp ? "true" : "false") << "\n";
  auto table = [&](const char* key, const std::vector<MlpBroadcast>& entries) {
    if (entries.empty()) return;
    os << key << ":\n";
    for (const MlpBroadcast& e : entries)
      os << "  " << e.timestep << ": {block: " << ints_text(e.blocks) << ", skip_count: " << e.skip_count << "}\n";
  };
  table("mlp_spatial_broadcast_config", c.mlp_spatial);
  table("mlp_temporal_broadcast_config", c.mlp_temporal);
  return os.str();
}

}  // namespace pab
