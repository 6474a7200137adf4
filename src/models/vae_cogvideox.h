// The decoder of diffusers' AutoencoderKLCogVideoX: causal 3D convolutions
// whose time padding comes from a cache carried across frame batches, spatial
// norms conditioned on the latents, and optional tiled decoding, all with the
// reference's arithmetic (frame batches of 2 latent frames, tile blending).
// Registered as a VaeEntry (a causal video VAE) under "AutoencoderKLCogVideoX".
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
struct CogVideoXVaeConfig {
  int latent_channels = 16;
  int out_channels = 3;
  std::vector<int> block_out_channels = {128, 256, 256, 512};
  int layers_per_block = 3;  // each up block has layers_per_block + 1 resnets
  int norm_num_groups = 32;
  int temporal_compress_level = 2;  // log2(temporal_compression_ratio): up blocks that double time
  int sample_height = 480;          // sets the default tile size
  int sample_width = 720;
  double scaling_factor = 1.15258426;
  bool use_post_quant_conv = false;

  // Spatial upsampling factor of the decoder: 2^(blocks - 1).
  int spatial_factor() const { return 1 << (int(block_out_channels.size()) - 1); }
  // Frames decode produces for `latent_frames` (see CogVideoXVae::decoded_frames).
  int64_t decoded_frames(int64_t latent_frames) const;
  // What decode holds on `device` besides the weights for `latent_frames`
  // latent frames of height x width pixels, tiled as diffusers' defaults tile
  // or not, in `dtype` (overflow fails).
  uint64_t decode_bytes(int64_t latent_frames, int64_t height, int64_t width, bool tiled, DType dtype,
                        Device device) const;
};

// Tiled decoding as diffusers' enable_tiling(...) configures it; zero values
// take diffusers' defaults (half the config's sample size, overlaps 1/6 and 1/5).
struct CogVideoXDecodeOptions {
  bool tiled = false;
  int tile_sample_min_height = 0;
  int tile_sample_min_width = 0;
  double tile_overlap_factor_height = 0;
  double tile_overlap_factor_width = 0;
};

class CogVideoXVae final : public VideoVae {
 public:
  // Reads `dir`/config.json and the decoder weights beside it; unsupported
  // config values are errors naming the file and key.
  static std::unique_ptr<CogVideoXVae> load(const std::string& dir, const LoadOptions& opts = {});
  // As above, from a parsed config and any weight source (e.g. generated weights).
  static std::unique_ptr<CogVideoXVae> load(const JsonConfig& config, const WeightSource& weights,
                                            const LoadOptions& opts);
  // The decoder-relevant values of a vae/config.json; fails naming the file and key.
  static CogVideoXVaeConfig config_from_json(const JsonConfig& config);
  ~CogVideoXVae();

  const CogVideoXVaeConfig& config() const { return config_; }
  // The pipelines multiply latents by 1 / scaling_factor before decode.
  double scaling_factor() const { return config_.scaling_factor; }

  // AutoencoderKLCogVideoX.decode(z).sample, no scaling applied:
  // z [B, latent_channels, F, h, w] -> [B, out_channels, F', h * s, w * s] with
  // s = spatial_factor() and F' as decoded_frames(F) (tiling may change the
  // spatial size exactly as diffusers does when tiles do not align).
  Tensor decode(const Tensor& z, const CogVideoXDecodeOptions& opts = {}) const;

  // CogVideoXPipeline.decode_latents: latents [B, F, C, h, w] (the transformer's
  // layout) -> permute, multiply by 1 / scaling_factor, decode.
  Tensor decode_latents(const Tensor& latents, const CogVideoXDecodeOptions& opts = {}) const;
  // As decode_latents from [B, C, F, h, w], tiled with diffusers' default
  // tiles where `o.tiled` (o.chunk_frames does not apply: frame batches are fixed).
  Tensor decode_video(const Tensor& latents, const VaeDecodeOptions& o) const override;

  // Frames decode produces for `latent_frames` (frame batches of 2; the first
  // batch of an odd count has 3 frames and keeps its first frame unstretched).
  int64_t decoded_frames(int64_t latent_frames) const;

  struct Decoder;  // the weights (defined in the .cpp)

 private:
  CogVideoXVae() = default;
  Tensor decode_untiled(const Tensor& z) const;
  Tensor decode_tiled(const Tensor& z, const CogVideoXDecodeOptions& opts) const;
  // z [B, C, F, h, w] times 1 / scaling_factor, decoded.
  Tensor decode_scaled(Tensor z, const CogVideoXDecodeOptions& opts) const;

  CogVideoXVaeConfig config_;
  LoadOptions opts_;
  std::unique_ptr<const Decoder> decoder_;
};

}  // namespace pab
