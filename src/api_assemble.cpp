// The public API's assemble (pab assemble).
#include "api_internal.h"
#include "core/registry.h"
#include "pipeline/assemble.h"

namespace pab {

Status assemble(const AssembleRequest& r, std::string* report) {
  return guarded([&] {
    AssembleInput in;
    in.recipe = r.pipeline;
    in.output = r.output;
    for (auto [role, dir] : {std::pair{"transformer", &r.transformer},
                             {"vae", &r.vae},
                             {"text_encoder", &r.text_encoder},
                             {"tokenizer", &r.tokenizer}})
      if (!dir->empty()) in.folders[role] = *dir;
    std::string written = assemble_pipeline(in);
    if (report) *report = std::move(written);
  });
}

std::vector<std::string> assembly_recipes() {
  std::vector<std::string> out;
  for (const auto& [name, recipe] : Registry<AssemblyRecipe>::get().entries())
    out.push_back(name + ": " + recipe.summary);
  return out;
}

}  // namespace pab
