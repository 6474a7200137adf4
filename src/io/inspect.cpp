#include "io/inspect.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <map>
#include <sstream>
#include <vector>

#include "io/model_folder.h"
#include "io/safetensors.h"

namespace pab {

namespace fs = std::filesystem;

namespace {

// Config keys worth showing, in display order; each is shown when present.
constexpr const char* kKeyConfig[] = {
    // transformers and DiTs
    "num_layers", "depth", "num_attention_heads", "num_heads", "attention_head_dim", "hidden_size", "d_model", "d_kv",
    "d_ff", "in_channels", "out_channels", "latent_channels", "patch_size", "patch_size_t", "sample_size",
    "sample_height", "sample_width", "sample_frames", "video_length", "text_embed_dim", "caption_channels",
    "cross_attention_dim", "max_text_seq_length", "use_rotary_positional_embeddings", "vocab_size",
    // VAEs
    "block_out_channels", "layers_per_block", "temporal_compression_ratio", "scaling_factor",
    // schedulers
    "num_train_timesteps", "prediction_type", "timestep_spacing", "beta_schedule", "beta_start", "beta_end",
    "rescale_betas_zero_snr", "snr_shift_scale",
    // tokenizers
    "model_max_length"};

std::string list_files(const std::string& dir) {
  std::vector<std::string> names;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec))
    if (e.is_regular_file(ec)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  std::string out;
  for (const auto& n : names) out += (out.empty() ? "" : ", ") + n;
  return out.empty() ? "(none)" : out;
}

std::string key_values(const JsonConfig& cfg) {
  std::string out;
  for (const char* key : kKeyConfig)
    if (cfg.has(key)) out += cat(out.empty() ? "" : " ", key, "=", json_brief(cfg.json().at(key), 40));
  return out;
}

// The library that wrote a config, when it says so.
std::string config_library(const JsonConfig& cfg) {
  if (cfg.json().contains("_diffusers_version")) return "diffusers";
  if (cfg.json().contains("transformers_version")) return "transformers";
  return "";
}

struct Totals {
  uint64_t parameters = 0;
  size_t files = 0;
};

void describe_weights(const std::string& dir, std::ostream& os, Totals* totals) {
  Checkpoint ck = Checkpoint::open_dir(dir);
  uint64_t params = 0;
  std::map<std::string, size_t> dtypes;
  for (const std::string& name : ck.names()) {
    const TensorEntry& e = ck.entry(name);
    params += uint64_t(shape_numel(e.shape));
    dtypes[dtype_name(e.dtype)]++;
  }
  std::string where = fs::path(ck.where()).filename().string();
  os << "  weights: ";
  if (ck.where().ends_with(".json"))
    os << ck.files().size() << " shard" << (ck.files().size() == 1 ? "" : "s") << " via " << where;
  else
    os << where;
  os << ", " << ck.size() << " tensors, " << human_count(params) << " parameters, dtypes";
  bool first = true;
  for (const auto& [dt, n] : dtypes) {
    os << (first ? " " : ", ") << dt << " x " << n;
    first = false;
  }
  os << "\n";
  totals->parameters += params;
  totals->files += ck.files().size();
}

void describe(const Component& c, std::ostream& os, Totals* totals) {
  ComponentKind kind = component_kind(c.dir);
  std::string cls = c.class_name, library = c.library, config_line;
  if (kind == ComponentKind::model || kind == ComponentKind::scheduler) {
    JsonConfig cfg = JsonConfig::load(component_config_path(c.dir));
    std::string declared = config_class_name(cfg);
    if (!cls.empty() && declared != cls) cls = cat(declared, " (model_index.json says ", cls, ")");
    if (cls.empty()) cls = declared;
    if (library.empty()) library = config_library(cfg);
    config_line = key_values(cfg);
  } else if (kind == ComponentKind::tokenizer) {
    fs::path tc = fs::path(c.dir) / "tokenizer_config.json";
    std::error_code ec;
    if (fs::is_regular_file(tc, ec)) {
      JsonConfig cfg = JsonConfig::load(tc.string());
      if (cls.empty()) cls = cfg.get_or<std::string>("tokenizer_class", "");
      config_line = key_values(cfg);
    }
    if (cls.empty() && fs::is_regular_file(fs::path(c.dir) / "spiece.model", ec)) cls = "SentencePiece model";
  }
  os << c.name << ": " << (cls.empty() ? "unknown class" : cls);
  if (!library.empty()) os << " (" << library << ")";
  os << " [" << component_kind_name(kind) << "]\n";
  if (!config_line.empty()) os << "  config: " << config_line << "\n";
  if (kind == ComponentKind::model) describe_weights(c.dir, os, totals);
  if (kind == ComponentKind::tokenizer || kind == ComponentKind::other) os << "  files: " << list_files(c.dir) << "\n";
}

}  // namespace

std::string human_count(uint64_t n) {
  if (n < 1000) return std::to_string(n);
  const char* units[] = {"K", "M", "B", "T"};
  double v = double(n);
  int u = -1;
  while (v >= 999.5 && u < 3) {  // 999.5 rounds up to the next unit
    v /= 1000;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.*f%s", v < 9.995 ? 2 : v < 99.95 ? 1 : 0, v, units[u]);
  return buf;
}

std::string inspect_report(const std::string& dir) {
  ModelFolder m = open_model_folder(dir);
  std::ostringstream os;
  if (m.is_pipeline()) {
    os << "pipeline " << m.pipeline_class;
    if (!m.diffusers_version.empty()) os << " (diffusers " << m.diffusers_version << ")";
    os << " in " << dir << ": " << m.components.size() << " components\n";
  } else {
    os << "component folder " << dir << "\n";
  }
  Totals totals;
  for (const Component& c : m.components) describe(c, os, &totals);
  if (m.is_pipeline())
    os << "total: " << human_count(totals.parameters) << " parameters (" << totals.parameters << ") in " << totals.files
       << " weight file" << (totals.files == 1 ? "" : "s") << "\n";
  return os.str();
}

}  // namespace pab
