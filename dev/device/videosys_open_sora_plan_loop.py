"""The open-sora-plan-1.1 and -1.2 loop workloads in the original PAB code (VideoSys 4cce477 +
PyTorch), so that `pab bench --workload open-sora-plan-1.x` can be compared with them on the same
GPU in the same session.

    python3 dev/device/videosys_open_sora_plan_loop.py VIDEOSYS_DIR --version v110|v120 [--steps N] [--no-pab]

VideoSys's own transformers at the published architectures (random weights, bf16), driven as
OpenSoraPlanPipeline.generate drives them, with the all-ones latent mask it passes and guidance 7.5:
  v110  LatteT2V of LanguageBind/Open-Sora-Plan-v1.1.0/65x512x512 (28 layers of 16 heads of 72): 65
        frames of 512x512 (17 latent frames of 64x64), the CFG pair [negative, prompt] of a
        20-token prompt (generate cuts both to the prompt's tokens, no mask), PNDMScheduler's steps
        (150: 159 evaluations); PAB: OpenSoraPlanV110PABConfig's defaults, MLP broadcast included.
  v120  OpenSoraT2V of LanguageBind/Open-Sora-Plan-v1.2.0/29x480p (32 layers of 24 heads of 96):
        29 frames of 480x640 (8 latent frames of 60x80), the pair of 512 mT5 tokens with their
        masks, EulerAncestralDiscreteScheduler's steps (100); PAB: OpenSoraPlanV120PABConfig's. Time from the
first step to the last after one warm-up forward (without PAB, so its counters start fresh),
synchronised each step (as `pab bench`); peak memory of the loop. Prints one JSON line. Not part
of the product or the tests.
"""
import argparse
import json
import os
import sys
import time
import types

import diffusers.models  # noqa: F401  (before the stubs: diffusers probes for imageio)
import torch
from diffusers.schedulers import EulerAncestralDiscreteScheduler, PNDMScheduler

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("videosys")
p.add_argument("--version", choices=["v110", "v120"], required=True)
p.add_argument("--steps", type=int, default=None, help="default: 150 (v110), 100 (v120)")
p.add_argument("--no-pab", action="store_true")
args = p.parse_args()
v110 = args.version == "v110"
steps = args.steps or (150 if v110 else 100)

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures"))
from videosys_import import use_videosys  # noqa: E402

use_videosys(args.videosys)

from videosys.core.pab import pab_mgr  # noqa: E402
from videosys.models.transformers.open_sora_plan_v110_transformer_3d import LatteT2V  # noqa: E402
from videosys.models.transformers.open_sora_plan_v120_transformer_3d import OpenSoraT2V  # noqa: E402

dtype, device = torch.bfloat16, "cuda"
torch.manual_seed(0)
common = dict(in_channels=4, out_channels=8, attention_bias=True, patch_size=2, patch_size_t=1,
              activation_fn="gelu-approximate", num_embeds_ada_norm=1000, norm_type="ada_norm_single",
              norm_elementwise_affine=False, norm_eps=1e-6, caption_channels=4096, attention_mode="math")
if v110:
    model = LatteT2V(num_attention_heads=16, attention_head_dim=72, num_layers=28, cross_attention_dim=1152,
                     sample_size=[64, 64], video_length=17, **common)
    latent_shape, text_len = (1, 4, 17, 64, 64), 20
else:
    model = OpenSoraT2V(num_attention_heads=24, attention_head_dim=96, num_layers=32, cross_attention_dim=2304,
                        sample_size=[60, 80], sample_size_t=8, use_rope=True, **common)
    latent_shape, text_len = (1, 4, 8, 60, 80), 512
model = model.to(device, dtype).eval()
for m in model.modules():
    if hasattr(m, "parallel_manager"):
        m.parallel_manager = types.SimpleNamespace(sp_size=1, cp_size=1, dp_size=1)

scheduler = PNDMScheduler() if v110 else EulerAncestralDiscreteScheduler()
scheduler.set_timesteps(steps, device=device)
timesteps = scheduler.timesteps
z = torch.randn(*latent_shape, device=device, dtype=dtype) * scheduler.init_noise_sigma
text = torch.randn(2, 1, text_len, 4096, device=device, dtype=dtype)  # [negative, prompt], b 1 l d
text_mask = None  # v1.1: both cut to the prompt's tokens, no mask
if not v110:
    text_mask = torch.zeros(2, 1, text_len, device=device, dtype=torch.int64)
    text_mask[0, :, :1] = 1  # the empty negative prompt: </s>
    text_mask[1, :, :40] = 1
added = {"resolution": None, "aspect_ratio": None}


def forward(latents, t):
    x = scheduler.scale_model_input(torch.cat([latents] * 2), t)
    out = model(x, all_timesteps=timesteps, encoder_hidden_states=text, timestep=t[None].expand(2),
                added_cond_kwargs=added, enable_temporal_attentions=True, attention_mask=torch.ones_like(x)[:, 0],
                encoder_attention_mask=text_mask, return_dict=False)[0]
    uncond, cond = out.chunk(2)
    return (uncond + 7.5 * (cond - uncond)).chunk(2, dim=1)[0]


def published_pab():
    """OpenSoraPlanV1x0PABConfig()'s values (their module imports the media stack, which the GPU machine lacks)."""
    if v110:
        mlp = {t: {"block": [0, 1, 2, 3, 4, 5, 6], "skip_count": 2} for t in range(738, 425, -24)}
        return pab_mgr.PABConfig(spatial_broadcast=True, spatial_threshold=[100, 850], spatial_range=2,
                                 temporal_broadcast=True, temporal_threshold=[100, 850], temporal_range=4,
                                 cross_broadcast=True, cross_threshold=[100, 850], cross_range=6, mlp_broadcast=True,
                                 mlp_spatial_broadcast_config=mlp, mlp_temporal_broadcast_config=dict(mlp))
    return pab_mgr.PABConfig(spatial_broadcast=True, spatial_threshold=[100, 850], spatial_range=2,
                             cross_broadcast=True, cross_threshold=[100, 850], cross_range=6)


seconds = []
with torch.no_grad():
    forward(z, timesteps[0])  # warm-up, PAB off: no counter moves
    torch.cuda.synchronize()
    if not args.no_pab:
        pab_mgr.set_pab_manager(published_pab())
        pab_mgr.update_steps(steps)
    torch.cuda.reset_peak_memory_stats()
    latents = z.clone()
    t0 = time.perf_counter()
    for t in timesteps:
        ts = time.perf_counter()
        latents = scheduler.step(forward(latents, t), t, latents).prev_sample
        torch.cuda.synchronize()
        seconds.append(time.perf_counter() - ts)
    total = time.perf_counter() - t0
print(json.dumps({"workload": "open-sora-plan-1." + args.version[2], "implementation": "VideoSys 4cce477 + PyTorch " + torch.__version__,
                  "pab": not args.no_pab, "steps": steps, "total_s": total, "per_step_s": seconds,
                  "peak_gib": torch.cuda.max_memory_allocated() / 2**30, "gpu": torch.cuda.get_device_name()}))
