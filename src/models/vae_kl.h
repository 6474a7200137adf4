// The decoder of diffusers' SD-style AutoencoderKL (2D, per image), and
// LattePipeline's frame-by-frame decoding of video latents with it.
// Registered as a VaeEntry (an image VAE) under "AutoencoderKL".
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "io/config.h"
#include "io/safetensors.h"
#include "models/vae.h"

namespace pab {

// The decoder-relevant values of vae/config.json.
struct KlVaeConfig {
  int latent_channels = 4;
  int out_channels = 3;
  std::vector<int> block_out_channels = {64};
  int layers_per_block = 1;  // each up block has layers_per_block + 1 resnets
  int norm_num_groups = 32;
  bool mid_block_add_attention = true;
  bool use_post_quant_conv = true;
  double scaling_factor = 0.18215;

  // Spatial upsampling factor of the decoder: 2^(blocks - 1).
  int spatial_factor() const { return 1 << (int(block_out_channels.size()) - 1); }
  // What decoding `images` images of height x width pixels at once holds on
  // `device` besides the weights, in `dtype` (overflow fails).
  uint64_t decode_bytes(int64_t images, int64_t height, int64_t width, DType dtype, Device device) const;
};

class KlVae final : public VideoVae {
 public:
  // Reads `dir`/config.json and the decoder weights beside it; unsupported
  // config values are errors naming the file and key.
  static std::unique_ptr<KlVae> load(const std::string& dir, const LoadOptions& opts = {});
  // As above, from a parsed config and any weight source (e.g. generated weights).
  static std::unique_ptr<KlVae> load(const JsonConfig& config, const WeightSource& weights, const LoadOptions& opts);
  // The decoder-relevant values of a vae/config.json; fails naming the file and key.
  static KlVaeConfig config_from_json(const JsonConfig& config);
  ~KlVae();

  const KlVaeConfig& config() const { return config_; }
  double scaling_factor() const { return config_.scaling_factor; }

  // AutoencoderKL.decode(z).sample without tiling, no scaling applied:
  // z [N, latent_channels, h, w] -> [N, out_channels, h * s, w * s], s = spatial_factor().
  Tensor decode(const Tensor& z) const;

  // LattePipeline.decode_latents: latents [B, C, F, h, w] -> frames
  // [B, out_channels, F, H, W]; the B * F images are multiplied by
  // 1 / scaling_factor and decoded `decode_chunk_size` at a time (each image
  // decodes independently, so the chunk size only bounds memory).
  Tensor decode_latents(const Tensor& latents, int64_t decode_chunk_size = 14) const;
  // decode_latents `o.chunk_frames` frames at a time (0: all); tiling is refused.
  Tensor decode_video(const Tensor& latents, const VaeDecodeOptions& o) const override;

  struct Decoder;  // the weights (defined in the .cpp)

 private:
  KlVae() = default;
  KlVaeConfig config_;
  LoadOptions opts_;
  std::unique_ptr<const Decoder> decoder_;
};

}  // namespace pab
