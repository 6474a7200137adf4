"""The loop workloads of docs/performance.md in diffusers + PyTorch, so that
`pab bench` can be compared with diffusers on the same GPU in the same
session (H100s differ by a few percent under their power cap).

    python3 dev/device/diffusers_loop.py cogvideox-2b|cogvideox-5b|latte-1 [--no-pab] [--steps N]

Random weights (diffusers' own initialisation), bf16, CFG batch 2, the
workload's timesteps and PAB configuration; time from the first step to the
last after one warm-up forward, synchronised each step (as `pab bench`).
Prints one JSON line. Not part of the product or the tests.
"""
import json
import sys
import time

import torch
from diffusers import (CogVideoXTransformer3DModel, LatteTransformer3DModel, PyramidAttentionBroadcastConfig)
from diffusers.models.embeddings import get_3d_rotary_pos_embed
from diffusers.pipelines.cogvideo.pipeline_cogvideox import get_resize_crop_region_for_grid


def workload(name, steps=50):
    if name.startswith("cogvideox"):
        big = name == "cogvideox-5b"
        cfg = dict(num_attention_heads=48 if big else 30, num_layers=42 if big else 30,
                   use_rotary_positional_embeddings=big)
        ts = [999 - 20 * i for i in range(steps)]  # trailing
        return dict(cls=CogVideoXTransformer3DModel, cfg=cfg, latents=(2, 13, 16, 60, 90), text=(2, 226, 4096),
                    timesteps=ts, channel_axis=2, pab=dict(spatial_attention_block_skip_range=2))
    if name == "latte-1":
        cfg = dict(num_layers=28, num_attention_heads=16, attention_head_dim=72, in_channels=4, out_channels=8,
                   cross_attention_dim=1152, caption_channels=4096, sample_size=64, patch_size=2, video_length=16,
                   norm_type="ada_norm_single", activation_fn="gelu-approximate", attention_bias=True,
                   norm_elementwise_affine=False, norm_eps=1e-6, num_embeds_ada_norm=1000)
        ts = [981 - 20 * i for i in range(steps)]  # leading, offset 1
        return dict(cls=LatteTransformer3DModel, cfg=cfg, latents=(2, 4, 16, 64, 64), text=(2, 120, 4096),
                    timesteps=ts, channel_axis=1,
                    pab=dict(spatial_attention_block_skip_range=2, temporal_attention_block_skip_range=3,
                             cross_attention_block_skip_range=6))
    raise SystemExit(f"unknown workload {name}")


def run(name, pab, steps):
    w = workload(name, steps)
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = w["cls"](**w["cfg"]).to(torch.bfloat16).eval()
    latents = torch.randn(w["latents"], device="cuda", dtype=torch.bfloat16)
    text = torch.randn(w["text"], device="cuda", dtype=torch.bfloat16)
    kwargs = {}
    if name == "cogvideox-5b":  # the pipeline's rotary tables for 60 x 90 latents, 13 frames
        crops = get_resize_crop_region_for_grid((30, 45), 45, 30)
        kwargs["image_rotary_emb"] = get_3d_rotary_pos_embed(64, crops, (30, 45), 13, device="cuda")
    cin = w["latents"][w["channel_axis"]]
    current = {"t": w["timesteps"][0]}

    def step(x, t):
        current["t"] = t
        inp = torch.cat([x, x])
        ts = torch.full((2,), t, device="cuda", dtype=torch.long)
        if name == "latte-1":
            eps = model(inp, timestep=ts, encoder_hidden_states=text, return_dict=False)[0]
        else:
            eps = model(inp, encoder_hidden_states=text, timestep=ts, return_dict=False, **kwargs)[0]
        eps = eps.narrow(w["channel_axis"], 0, cin)
        uncond, cond = eps.chunk(2)
        return x - 0.02 * (uncond + 6.0 * (cond - uncond))

    x0 = latents[:1]
    with torch.no_grad():
        step(x0, w["timesteps"][0])  # warm-up
        torch.cuda.synchronize()
        if pab:
            model.enable_cache(PyramidAttentionBroadcastConfig(current_timestep_callback=lambda: current["t"],
                                                               **w["pab"]))
        torch.cuda.reset_peak_memory_stats()
        x = x0
        t0 = time.perf_counter()
        for t in w["timesteps"]:
            x = step(x, t)
            torch.cuda.synchronize()
        total = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() / 2**30
    print(json.dumps(dict(workload=name, pab=pab, total_s=round(total, 3), peak_gib=round(peak, 2),
                          device=torch.cuda.get_device_name(), torch=torch.__version__)), flush=True)


if __name__ == "__main__":
    args = sys.argv[1:]
    steps = int(args[args.index("--steps") + 1]) if "--steps" in args else 50
    run(args[0], "--no-pab" not in args, steps)
