// The decoder of Open-Sora-Plan's CausalVAEModel, the VAE of its v1.1.0 and
// v1.2.0 releases, as VideoSys (4cce477) runs it: causal 3D convolutions
// (the first frame repeated in front of the video), resnets, one attention
// block over each frame in the middle, up levels that double space (nearest
// or trilinear) and time (trilinear, the first frame kept alone), and the
// pipeline's tiled decoding over time chunks and spatial tiles.
//
// Both releases name their class "CausalVAEModel", with different code; one
// registration serves both and tells them apart from the config alone:
//   - v1.2 when config.json has the key `use_quant_layer` (an argument only
//     v1.2's class takes; save_config writes every argument, so v1.2 configs
//     always have it) or a decoder level uses Spatial2xTime2x3DUpsample (a
//     block only v1.2 defines);
//   - v1.1 otherwise.
// The version decides which block names a config may use (v1.1:
// TimeUpsample2x and TimeUpsampleRes2x in decoder_temporal_upsample; v1.2:
// Spatial2xTime2x3DUpsample in decoder_spatial_upsample, no temporal
// upsampler) and whether use_quant_layer may drop post_quant_conv (v1.2
// only); a config naming a block of the other version fails naming the key.
// Where both versions define a block (CausalConv3d, ResnetBlock3D,
// SpatialUpsample2x, AttnBlock3DFix) their decoding is the same.
// Registered as a VaeEntry (a causal video VAE) under "CausalVAEModel".
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "io/config.h"
#include "io/safetensors.h"
#include "models/vae.h"

namespace pab {

enum class CausalVaeVersion : uint8_t { v110, v120 };

// What an up level does after its resnets (each at most once, space first).
enum class CausalSpatialUp : uint8_t {
  none,
  nearest,      // SpatialUpsample2x: nearest 2x, then a 1x3x3 convolution
  trilinear_t,  // Spatial2xTime2x3DUpsample (v1.2): trilinear 2x in space and time, first frame in space only; 3x3x3
                // conv
};
enum class CausalTimeUp : uint8_t {
  none,
  linear,      // TimeUpsample2x (v1.1): linear 2x in time, the first frame kept alone
  linear_res,  // TimeUpsampleRes2x (v1.1): that, mixed with a 3x3x3 convolution of it by sigmoid(mix_factor)
};

// The decoder-relevant values of vae/config.json.
struct CausalVaeConfig {
  CausalVaeVersion version = CausalVaeVersion::v110;
  int hidden_size = 128;
  std::vector<int> hidden_size_mult = {1, 2, 4, 4};  // level i has hidden_size * mult[i] channels
  int z_channels = 4;
  int embed_dim = 4;
  int num_res_blocks = 2;                   // each up level has num_res_blocks + 1 resnets
  bool use_quant_layer = true;              // post_quant_conv (embed_dim -> z_channels) before the decoder
  std::vector<CausalSpatialUp> spatial_up;  // per level, indexed as hidden_size_mult
  std::vector<CausalTimeUp> time_up;

  // Channels of the latents decode() takes.
  int latent_channels() const { return use_quant_layer ? embed_dim : z_channels; }
  int spatial_factor() const;   // 2 per spatial upsampler
  int temporal_factor() const;  // 2 per temporal upsampler
  // Frames decode makes of `latent_frames`: (F - 1) * temporal_factor + 1,
  // tiled or not (time chunks overlap by one latent frame, whose frames the
  // later chunk drops).
  int64_t decoded_frames(int64_t latent_frames) const;
  // What decode holds on `device` besides the weights for `latent_frames`
  // latent frames of height x width pixels, tiled with the pipeline's tiles
  // or not, in `dtype` (overflow fails).
  uint64_t decode_bytes(int64_t latent_frames, int64_t height, int64_t width, bool tiled, DType dtype,
                        Device device) const;
};

// CausalVAEModel's tiling attributes. The defaults are what VideoSys'
// OpenSoraPlanPipeline sets after enable_tiling() (which it does by default),
// for v1.1 and v1.2 alike; tile_sample_min_size_t is the encoder's and unused.
struct CausalVaeTiling {
  int64_t tile_sample_min_size = 512;  // pixels: blend extent and crop of each tile
  int64_t tile_latent_min_size = 64;   // latents per spatial tile, each side
  int64_t tile_latent_min_size_t = 8;  // latent frames per time chunk (chunks overlap by one)
  double tile_overlap_factor = 0.25;
};

struct CausalVaeDecodeOptions {
  bool tiled = false;  // tiles when the latents exceed a tile in any of width, height or time
  CausalVaeTiling tiles;
};

class CausalVae final : public VideoVae {
 public:
  // VideoSys' CausalVAEModelWrapper.decode divides latents by this before
  // decoding (a constant of the wrapper, not of the config).
  static constexpr double kLatentScale = 0.18215;

  // Reads `dir`/config.json and the decoder weights beside it; unsupported
  // config values are errors naming the file and key.
  static std::unique_ptr<CausalVae> load(const std::string& dir, const LoadOptions& opts = {});
  // As above, from a parsed config and any weight source.
  static std::unique_ptr<CausalVae> load(const JsonConfig& config, const WeightSource& weights,
                                         const LoadOptions& opts);
  // The decoder-relevant values of a vae/config.json; fails naming the file and key.
  static CausalVaeConfig config_from_json(const JsonConfig& config);
  ~CausalVae();

  const CausalVaeConfig& config() const { return config_; }

  // CausalVAEModel.decode(z), no scaling: z [B, latent_channels, F, h, w] ->
  // [B, 3, decoded_frames(F), h * s, w * s] with s = spatial_factor() (tiling
  // may change the spatial size where tiles and crops do not align, as the
  // original's does).
  Tensor decode(const Tensor& z, const CausalVaeDecodeOptions& opts = {}) const;
  // What OpenSoraPlanPipeline gets from its VAE: latents [B, C, F, h, w]
  // divided by kLatentScale and decoded, tiled with the pipeline's tiles
  // where `o.tiled`; [B, 3, F', H, W] (the pipeline's wrapper also moves
  // time before channels; this does not). o.chunk_frames does not apply.
  Tensor decode_video(const Tensor& latents, const VaeDecodeOptions& o) const override;

  struct Decoder;  // the weights (defined in the .cpp)

 private:
  CausalVae() = default;
  Tensor decode_untiled(const Tensor& z) const;
  Tensor decode_tiled(const Tensor& z, const CausalVaeTiling& t) const;
  Tensor decode_tiled_2d(const Tensor& z, const CausalVaeTiling& t) const;

  CausalVaeConfig config_;
  LoadOptions opts_;
  std::unique_ptr<const Decoder> decoder_;
};

}  // namespace pab
