// Reading PAB configurations. Two dialects describe the same broadcast
// schedule (docs/pab-config.md has the mapping):
//  - diffusers: PyramidAttentionBroadcastConfig field names
//    (spatial_attention_block_skip_range, ..._timestep_skip_range, ...);
//    read with the diffusers counting rule;
//  - VideoSys (the original PAB code): spatial_broadcast / spatial_threshold /
//    spatial_range (and temporal_, cross_), the older spatial_skip /
//    spatial_gap / spatial_block, and MLP broadcast (mlp_broadcast or
//    mlp_skip with mlp_{spatial,temporal}_{broadcast,skip}_config); read with
//    the videosys counting rule, as the original computes it.
// Sources: a JSON object (case.json), a YAML or JSON file (--pab-config), the
// command line's short form (--pab spatial=2@100-800,...) and the settings
// published with the original method per model (--pab default).
// Unknown keys, a mix of dialects and contradictory values are errors.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "cache/pab.h"

namespace pab {

enum class PabDialect : uint8_t { diffusers, videosys };

// Which dialect the keys of `j` use; fails naming a key of each when mixed,
// and on an empty object. `where` names the origin in errors.
PabDialect detect_pab_dialect(const nlohmann::ordered_json& j, const std::string& where);

// Parses an object of PAB settings in either dialect. MLP broadcast entries
// keep the object's order (the first entry whose range holds a timestep
// decides, as in the original).
PabConfig parse_pab_config(const nlohmann::ordered_json& j, const std::string& where);
// As above; a nlohmann::json object iterates its keys sorted, so MLP entries
// come in the order of their timestep strings.
PabConfig parse_pab_config(const nlohmann::json& j, const std::string& where);

// Reads a PAB configuration file: JSON when the name ends in .json, YAML
// otherwise (YAML 1.1 booleans such as True are accepted, as PyYAML reads them).
PabConfig load_pab_config_file(const std::string& path);

// The command line's short form: comma-separated `kind=range[@low-high]` with
// kind spatial, temporal or cross; the window defaults to diffusers' (100, 800).
// E.g. "spatial=2@100-800,temporal=3@100-800,cross=6@100-900". Diffusers counting.
PabConfig parse_pab_short_form(const std::string& text);

// The attention broadcast published with the original method for a model
// class (diffusers `_class_name`, or `architectures[0]` for STDiT3), with the
// videosys counting rule; fails for classes without published settings.
PabConfig default_pab_config(const std::string& model_class);
// The published settings name blocks of the full-size model (Open-Sora's MLP
// broadcast: blocks 0-4); a smaller model of the class keeps those it has,
// as the original simply never meets the others.
PabConfig fit_published_blocks(PabConfig c, const SiteLayout& model);

// Writing a configuration back, e.g. the proposal of `pab calibrate`; the
// parsers above read each output back to the same rules.
// The short form of the attention rules ("off" when none is on, which --pab
// accepts too); fails for block lists and MLP broadcast, which it cannot say.
std::string format_pab_short_form(const PabConfig& c);
// A YAML file in `dialect` (read back, it counts by that dialect's rule); fails
// naming what the dialect cannot say: block lists and MLP broadcast in the
// diffusers dialect, spatial blocks that are not one span or blocks of other
// kinds in the VideoSys one, and an empty configuration in the diffusers one
// (which reads a file without ranges as spatial broadcast every 2nd call).
std::string format_pab_yaml(const PabConfig& c, PabDialect dialect);

// The command line's choice: `preset` is "default", "off" or the short form
// (--pab), `file` a configuration file (--pab-config); at most one is given,
// and one given empty is an error. Neither given: the model's default; for
// a model without published settings that is off, said in `note`.
PabConfig resolve_pab_choice(const std::optional<std::string>& preset, const std::optional<std::string>& file,
                             const std::string& model_class, std::string* note = nullptr);
// Whether default_pab_config knows the class.
bool has_published_pab_config(const std::string& model_class);

}  // namespace pab
