// The VAE as pipelines see it: each VAE class is its own file (vae_kl.cpp,
// vae_cogvideox.cpp) that registers a VaeEntry by diffusers' `_class_name`,
// so a pipeline decodes with whichever class model_index.json names.
#pragma once

#include <functional>
#include <memory>

#include "core/tensor.h"
#include "io/safetensors.h"
#include "models/transformer.h"  // LoadOptions

namespace pab {

// How a VAE treats time; a pipeline is written for one kind.
enum class VaeKind : uint8_t {
  image,         // 2D: each frame decodes on its own (AutoencoderKL)
  causal_video,  // 3D: frames decode together, each seeing those before it (AutoencoderKLCogVideoX)
  // A causal temporal VAE over chunks of frames, then a 2D VAE per frame (Open-Sora's VideoAutoencoderPipeline)
  chunked_video,
};

// "a 2D image VAE (each frame decoded on its own)", for messages.
inline const char* vae_kind_name(VaeKind k) {
  switch (k) {
    case VaeKind::image:
      return "a 2D image VAE (each frame decoded on its own)";
    case VaeKind::causal_video:
      return "a causal 3D video VAE";
    case VaeKind::chunked_video:
      return "a temporal VAE over chunks of frames followed by a 2D VAE (Open-Sora's)";
  }
  return "a VAE";
}

// How decode_video runs, as the pipeline chooses.
struct VaeDecodeOptions {
  bool tiled = false;  // spatial tiles as diffusers' enable_tiling() defaults them; VAEs that cannot tile refuse it
  int64_t chunk_frames = 0;  // image VAEs: frames decoded at once (bounds memory only); 0: all
  // The frames to decode to, for VAEs whose latent frames stand for a varying
  // number of frames (Open-Sora's pads each chunk of frames in front); 0: as many as the latents hold.
  int64_t frames = 0;
};

// A loaded decoder.
class VideoVae {
 public:
  virtual ~VideoVae() = default;
  // Latents [B, latent_channels, F, h, w] as the denoising loop leaves them:
  // multiplied by 1 / scaling_factor and decoded to [B, out_channels, F', H, W]
  // (F' as VaeFacts::decoded_frames), on the load device in the compute dtype.
  virtual Tensor decode_video(const Tensor& latents, const VaeDecodeOptions& o) const = 0;
};

// What a pipeline and the memory estimate read of a VAE from its config
// alone, before any weight is loaded.
class VaeFacts {
 public:
  virtual ~VaeFacts() = default;
  virtual VaeKind kind() const = 0;
  virtual int latent_channels() const = 0;
  virtual int spatial_factor() const = 0;   // pixels per latent, each side
  virtual int temporal_factor() const = 0;  // frames per latent frame (1 for an image VAE)
  // Frames decode_video makes of `latent_frames` latent frames (the most, where that varies).
  virtual int64_t decoded_frames(int64_t latent_frames) const = 0;
  // Latent frames of a video of `frames` frames: as many for an image VAE,
  // (frames - 1) / temporal_factor + 1 for a causal one that keeps the first frame alone.
  virtual int64_t latent_frames(int64_t frames) const {
    return kind() == VaeKind::image ? frames : (frames - 1) / temporal_factor() + 1;
  }
  // What decode_video holds on `device` besides the weights, its output
  // included, for one video of `latent_frames` latent frames of height x
  // width pixels decoded with `o` in `dtype` (overflow fails).
  virtual uint64_t decode_bytes(int64_t latent_frames, int64_t height, int64_t width, const VaeDecodeOptions& o,
                                DType dtype, Device device) const = 0;
  // The bytes in `dtype` of the checkpoint tensors decoding loads: diffusers'
  // VAEs keep their encoder under encoder.* and quant_conv.*, which decoding
  // does not load; a VAE named otherwise overrides this.
  virtual uint64_t weight_bytes(const WeightSource& weights, DType dtype) const {
    return weights.bytes_as(dtype, {"encoder.", "quant_conv."});
  }
};

// A VAE class as it registers itself, in its own file, by the `_class_name`
// of its config.json (the class model_index.json names):
//   PAB_REGISTER(VaeEntry, "AutoencoderKL", {kl_vae_facts, load_kl_vae});
struct VaeEntry {
  // Reads the config; unsupported values fail naming the file and key.
  std::function<std::unique_ptr<const VaeFacts>(const JsonConfig&)> facts;
  // Builds the decoder from its config and weights.
  std::function<std::unique_ptr<VideoVae>(const JsonConfig&, const WeightSource&, const LoadOptions&)> load;
};

}  // namespace pab
