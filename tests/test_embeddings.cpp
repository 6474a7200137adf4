// The host-side embedding tables (models/embeddings.h) against
//  - tables diffusers computed (tests/data/embeddings, made by
//    dev/fixtures/make_embedding_references.py, arguments in its metadata),
//  - the rotary tables the CogVideoX transformer fixtures were run with,
//  - naive transcriptions of diffusers' Python at random sizes, written here
//    expression by expression (meshgrid, concatenations, repeats) in the
//    dtypes diffusers uses.
// Every table holds sines and cosines, so errors are absolute.
#include <cmath>
#include <nlohmann/json.hpp>
#include <random>

#include "io/config.h"
#include "io/safetensors.h"
#include "models/embeddings.h"
#include "support/testing.h"

namespace pab {
namespace {

using Table = std::vector<double>;  // row-major

// One f32 rounding of values up to 1 is 6e-8; allow a few, plus the last-bit
// differences of torch's vectorised float sin/cos/exp/pow (Sleef, within 1 ulp).
constexpr double kTableTol = 1e-6;

double max_abs_diff(const std::vector<float>& a, const Table& b) {
  EXPECT_EQ(a.size(), b.size());
  double d = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    double e = std::fabs(double(a[i]) - b[i]);
    d = std::max(d, std::isnan(e) ? INFINITY : e);
  }
  return d;
}

Table as_table(const Tensor& t) {
  std::vector<float> v = t.to_vector();
  return Table(v.begin(), v.end());
}

// ---------------------------------------------------------------- naive transcriptions of diffusers

std::vector<float> arange_f32(int n) {
  std::vector<float> v(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) v[size_t(i)] = float(i);
  return v;
}

// get_timestep_embedding
Table naive_timestep(const std::vector<double>& t, int dim, bool flip, double shift, double scale, double period) {
  const int half = dim / 2;
  std::vector<float> exponent = arange_f32(half);
  for (float& e : exponent) e = float(-std::log(period)) * e;
  for (float& e : exponent) e = e / float(half - shift);
  std::vector<float> emb(exponent.size());
  for (size_t i = 0; i < emb.size(); ++i) emb[i] = float(std::exp(double(exponent[i])));
  Table out;
  for (double tn : t) {
    std::vector<float> args(emb.size());
    for (size_t i = 0; i < emb.size(); ++i) args[i] = float(scale) * (float(tn) * emb[i]);
    Table sin_cos;
    for (float a : args) sin_cos.push_back(float(std::sin(double(a))));
    for (float a : args) sin_cos.push_back(float(std::cos(double(a))));
    if (flip) std::rotate(sin_cos.begin(), sin_cos.begin() + half, sin_cos.end());
    if (dim % 2) sin_cos.push_back(0.0);
    out.insert(out.end(), sin_cos.begin(), sin_cos.end());
  }
  return out;
}

// get_1d_sincos_pos_embed_from_grid (float64)
Table naive_sincos_1d(int dim, const std::vector<float>& pos) {
  std::vector<double> omega(size_t(dim / 2));
  for (size_t i = 0; i < omega.size(); ++i) omega[i] = 1.0 / std::pow(10000.0, double(i) / (dim / 2.0));
  Table out;
  for (float p : pos) {
    for (double o : omega) out.push_back(std::sin(double(p) * o));
    for (double o : omega) out.push_back(std::cos(double(p) * o));
  }
  return out;
}

// get_2d_sincos_pos_embed_from_grid on meshgrid(grid_w, grid_h, indexing="xy"): [H*W, dim]
Table naive_sincos_2d_from_axes(int dim, const std::vector<float>& grid_h, const std::vector<float>& grid_w) {
  std::vector<float> g0, g1;  // meshgrid "xy": [H, W] arrays, g0 varies along w
  for (float h : grid_h)
    for (float w : grid_w) {
      g0.push_back(w);
      g1.push_back(h);
    }
  Table emb_h = naive_sincos_1d(dim / 2, g0), emb_w = naive_sincos_1d(dim / 2, g1);
  Table out;
  for (size_t r = 0; r < g0.size(); ++r) {
    out.insert(out.end(), emb_h.begin() + ptrdiff_t(r * size_t(dim / 2)),
               emb_h.begin() + ptrdiff_t((r + 1) * size_t(dim / 2)));
    out.insert(out.end(), emb_w.begin() + ptrdiff_t(r * size_t(dim / 2)),
               emb_w.begin() + ptrdiff_t((r + 1) * size_t(dim / 2)));
  }
  return out;
}

// get_2d_sincos_pos_embed(embed_dim, (grid_h, grid_w), base_size, interpolation_scale)
Table naive_sincos_2d(int dim, int gh, int gw, double base, double interp) {
  std::vector<float> grid_h = arange_f32(gh), grid_w = arange_f32(gw);
  for (float& v : grid_h) v = v / float(double(gh) / base) / float(interp);
  for (float& v : grid_w) v = v / float(double(gw) / base) / float(interp);
  return naive_sincos_2d_from_axes(dim, grid_h, grid_w);
}

// get_3d_sincos_pos_embed(embed_dim, (W, H), T, s_interp, t_interp) flattened to [T*H*W, D]
Table naive_sincos_3d(int dim, int gh, int gw, int frames, double s_interp, double t_interp) {
  std::vector<float> grid_h = arange_f32(gh), grid_w = arange_f32(gw), grid_t = arange_f32(frames);
  for (float& v : grid_h) v = v / float(s_interp);
  for (float& v : grid_w) v = v / float(s_interp);
  for (float& v : grid_t) v = v / float(t_interp);
  const int dim_s = 3 * dim / 4, dim_t = dim / 4;
  Table spatial = naive_sincos_2d_from_axes(dim_s, grid_h, grid_w), temporal = naive_sincos_1d(dim_t, grid_t);
  Table out;
  for (int f = 0; f < frames; ++f)
    for (int p = 0; p < gh * gw; ++p) {
      out.insert(out.end(), temporal.begin() + f * dim_t, temporal.begin() + (f + 1) * dim_t);
      out.insert(out.end(), spatial.begin() + p * dim_s, spatial.begin() + (p + 1) * dim_s);
    }
  return out;
}

// torch.linspace(start, end, steps, dtype=float32)'s CPU formula
std::vector<float> naive_linspace(double start, double end, int n) {
  if (n == 1) return {float(start)};
  const float s = float(start), e = float(end), step = (e - s) / float(n - 1);
  std::vector<float> v;
  for (int i = 0; i < n; ++i) v.push_back(i < n / 2 ? s + step * float(i) : e - step * float(n - i - 1));
  return v;
}

// get_1d_rotary_pos_embed(dim, pos, theta, use_real=True, repeat_interleave_real=True), float32 freqs: cos, sin
std::pair<Table, Table> naive_rope_1d(int dim, const std::vector<float>& pos, double theta) {
  std::vector<float> freqs;
  for (int i = 0; i < dim; i += 2)
    freqs.push_back(1.0f / float(std::pow(double(float(theta)), double(float(i) / float(dim)))));
  Table cos, sin;
  for (float p : pos)
    for (float f : freqs) {
      const float a = p * f;
      for (int rep = 0; rep < 2; ++rep) {
        cos.push_back(float(std::cos(double(a))));
        sin.push_back(float(std::sin(double(a))));
      }
    }
  return {cos, sin};
}

// get_3d_rotary_pos_embed(head, crops, (gh, gw), frames, grid_type, max_size) after
// CogVideoXPipeline._prepare_rotary_positional_embeddings: cos, sin [T*H*W, D]
std::pair<Table, Table> naive_rope_3d(int head, int gh, int gw, int frames, int base_h, int base_w, bool slice) {
  std::vector<float> grid_h, grid_w, grid_t;
  if (!slice) {
    // get_resize_crop_region_for_grid((gh, gw), tgt_width=base_w, tgt_height=base_h)
    const double r = double(gh) / gw;
    double resize_h, resize_w;
    if (r > double(base_h) / base_w) {
      resize_h = base_h;
      resize_w = std::nearbyint(double(base_h) / gh * gw);
    } else {
      resize_w = base_w;
      resize_h = std::nearbyint(double(base_w) / gw * gh);
    }
    const double top = std::nearbyint((base_h - resize_h) / 2.0), left = std::nearbyint((base_w - resize_w) / 2.0);
    grid_h = naive_linspace(top, (top + resize_h) * (gh - 1) / gh, gh);
    grid_w = naive_linspace(left, (left + resize_w) * (gw - 1) / gw, gw);
    grid_t = naive_linspace(0, double(frames) * (frames - 1) / frames, frames);
  } else {
    grid_h = arange_f32(base_h);  // max size = base size, sliced to the grid below
    grid_w = arange_f32(base_w);
    grid_t = arange_f32(frames);
  }
  const int dim_t = head / 4, dim_h = head / 8 * 3, dim_w = head / 8 * 3;
  auto [t_cos, t_sin] = naive_rope_1d(dim_t, grid_t, 10000);
  auto [h_cos, h_sin] = naive_rope_1d(dim_h, grid_h, 10000);
  auto [w_cos, w_sin] = naive_rope_1d(dim_w, grid_w, 10000);
  Table cos, sin;
  for (int f = 0; f < frames; ++f)
    for (int h = 0; h < gh; ++h)
      for (int w = 0; w < gw; ++w) {
        auto append = [](Table& dst, const Table& src, int row, int width) {
          dst.insert(dst.end(), src.begin() + row * width, src.begin() + (row + 1) * width);
        };
        append(cos, t_cos, f, dim_t);
        append(cos, h_cos, h, dim_h);
        append(cos, w_cos, w, dim_w);
        append(sin, t_sin, f, dim_t);
        append(sin, h_sin, h, dim_h);
        append(sin, w_sin, w, dim_w);
      }
  return {cos, sin};
}

// ---------------------------------------------------------------- against diffusers' own tables

RopeLayout layout_named(const std::string& s) {
  if (s == "interleaved") return RopeLayout::interleaved;
  if (s == "halves") return RopeLayout::halves;
  return RopeLayout::complex;
}

TEST(Embeddings, MatchDiffusersTables) {
  auto file = SafetensorsFile::open(testing::data_path("embeddings/reference.safetensors"));
  int checked = 0;
  for (const auto& [name, entry] : file->entries()) {
    SCOPED_TRACE(name);
    const nlohmann::json a = nlohmann::json::parse(file->metadata().at(name));
    const std::string fn = a.at("fn");
    Table expected = as_table(file->load(entry, DType::f32));
    std::vector<float> got;
    if (fn == "timestep_embedding") {
      got = timestep_embedding(a.at("t").get<std::vector<double>>(), a.at("dim"), a.at("flip_sin_to_cos"),
                               a.at("downscale_freq_shift"), a.at("scale"), a.at("max_period"));
    } else if (fn == "sincos_1d") {
      std::vector<float> pos = arange_f32(a.at("n"));
      for (float& p : pos) p = p / float(a.at("divisor").get<double>());
      Table t = sincos_1d(a.at("dim"), pos);
      got.assign(t.begin(), t.end());
    } else if (fn == "sincos_pos_embed_2d") {
      got = sincos_pos_embed_2d(a.at("embed_dim"), a.at("grid_h"), a.at("grid_w"), a.at("base_size"),
                                a.at("interpolation_scale"))
                .to_vector();
    } else if (fn == "sincos_pos_embed_3d") {
      got = sincos_pos_embed_3d(a.at("embed_dim"), a.at("grid_h"), a.at("grid_w"), a.at("frames"),
                                a.at("spatial_interp"), a.at("temporal_interp"))
                .to_vector();
    } else if (fn == "rotary_pos_embed_1d") {
      RopeTables t = rotary_pos_embed_1d(a.at("dim"), a.at("positions").get<std::vector<float>>(), a.at("theta"),
                                         layout_named(a.at("layout")), a.at("freqs_f64"), a.at("linear_factor"),
                                         a.at("ntk_factor"));
      got = (name.ends_with("_cos") ? t.cos : t.sin).to_vector();
    } else if (fn == "rotary_pos_embed_3d") {
      RopeTables t =
          rotary_pos_embed_3d(a.at("head_dim"), a.at("grid_h"), a.at("grid_w"), a.at("frames"), a.at("base_h"),
                              a.at("base_w"), a.at("grid_type"), a.at("max_h"), a.at("max_w"));
      got = (name.ends_with("_cos") ? t.cos : t.sin).to_vector();
    } else {
      FAIL() << "unknown function " << fn;
    }
    const double err = max_abs_diff(got, expected);
    // timestep arguments reach t * freq ~ 1e3, where one f32 ulp of the frequency
    // (torch's vectorised exp is not always correctly rounded) moves sin/cos by up to 1e3 * 6e-8
    const double tol = fn == "timestep_embedding" ? 1e-4 : kTableTol;
    EXPECT_LE(err, tol) << fn;
    std::printf("  %-12s %-22s max abs error %.2e\n", name.c_str(), fn.c_str(), err);
    ++checked;
  }
  EXPECT_EQ(checked, 37);
}

// ---------------------------------------------------------------- against the transformer fixtures

struct FixtureRope {
  Tensor cos, sin;
  JsonConfig config;
  Shape latents;  // [B, F, C, H, W]
};

FixtureRope load_fixture(const std::string& name) {
  const std::string dir = testing::data_path("fixtures/transformer/" + name);
  auto inputs = SafetensorsFile::open(dir + "/inputs.safetensors");
  JsonConfig case_json = JsonConfig::load(dir + "/case.json");
  std::vector<int64_t> latents = case_json.get<std::vector<int64_t>>("latents_shape");
  return {inputs->load(*inputs->find("rope_cos"), DType::f32), inputs->load(*inputs->find("rope_sin"), DType::f32),
          JsonConfig::load(dir + "/transformer/config.json"), Shape(latents.begin(), latents.end())};
}

// CogVideoXPipeline._prepare_rotary_positional_embeddings, for latents [B, F, C, H, W]
RopeTables pipeline_rope(const JsonConfig& cfg, const Shape& latents) {
  const int p = cfg.get<int>("patch_size");
  const int grid_h = int(latents[3]) / p, grid_w = int(latents[4]) / p;
  const int base_h = cfg.get<int>("sample_height") / p, base_w = cfg.get<int>("sample_width") / p;
  const int head_dim = cfg.get<int>("attention_head_dim");
  if (auto p_t = cfg.get_optional<int>("patch_size_t")) {
    const int frames = (int(latents[1]) + *p_t - 1) / *p_t;  // latent frames are padded to a multiple of p_t
    return rotary_pos_embed_3d(head_dim, grid_h, grid_w, frames, base_h, base_w, "slice", base_h, base_w);
  }
  return rotary_pos_embed_3d(head_dim, grid_h, grid_w, int(latents[1]), base_h, base_w, "linspace");
}

TEST(Embeddings, MatchCogVideoXFixtureRope) {
  for (const std::string name : {"cogvideox_5b_style", "cogvideox_1_5_style"}) {
    SCOPED_TRACE(name);
    FixtureRope f = load_fixture(name);
    RopeTables ours = pipeline_rope(f.config, f.latents);
    EXPECT_EQ(ours.cos.shape(), f.cos.shape());
    const double err_cos = max_abs_diff(ours.cos.to_vector(), as_table(f.cos));
    const double err_sin = max_abs_diff(ours.sin.to_vector(), as_table(f.sin));
    EXPECT_LE(err_cos, kTableTol);
    EXPECT_LE(err_sin, kTableTol);
    std::printf("  %s: rope cos %.2e, sin %.2e\n", name.c_str(), err_cos, err_sin);
  }
  // The comparison notices a wrong base grid (the sample size not divided by the patch size).
  FixtureRope f = load_fixture("cogvideox_5b_style");
  RopeTables wrong_base = rotary_pos_embed_3d(16, 6, 8, 3, 12, 16, "linspace");
  EXPECT_GT(max_abs_diff(wrong_base.cos.to_vector(), as_table(f.cos)), 100 * kTableTol);
}

// ---------------------------------------------------------------- against naive transcriptions, random sizes

TEST(Embeddings, TimestepMatchesNaive) {
  std::mt19937 rng(1);
  for (int i = 0; i < 6; ++i) {
    const int dim = std::uniform_int_distribution<int>(2, 400)(rng);
    const bool flip = i % 2;
    const double shift = i % 3 == 0 ? 1.0 : 0.0, scale = i == 4 ? 1000.0 : 1.0, period = i == 5 ? 100.0 : 10000.0;
    std::vector<double> t = {0, 1, 999};
    for (int k = 0; k < 4; ++k) t.push_back(std::uniform_real_distribution<double>(0, 1000)(rng));
    SCOPED_TRACE(cat("dim ", dim, " flip ", flip, " shift ", shift, " scale ", scale, " period ", period));
    std::vector<float> ours = timestep_embedding(t, dim, flip, shift, scale, period);
    EXPECT_LE(max_abs_diff(ours, naive_timestep(t, dim, flip, shift, scale, period)), kTableTol);
    // sin and cos in the other order do not match
    if (dim > 3) {
      EXPECT_GT(max_abs_diff(ours, naive_timestep(t, dim, !flip, shift, scale, period)), 0.1);
    }
  }
}

TEST(Embeddings, SinCosMatchNaive) {
  std::mt19937 rng(2);
  auto pick = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  for (int i = 0; i < 4; ++i) {
    const int dim = 16 * pick(1, 8), gh = pick(1, 12), gw = pick(1, 12), frames = pick(1, 6);
    const double s_interp = std::array{1.0, 1.875, 0.5, 3.0}[size_t(i)], t_interp = i % 2 ? 1.0 : 2.0;
    SCOPED_TRACE(cat("dim ", dim, " grid ", frames, "x", gh, "x", gw, " interp ", s_interp, ", ", t_interp));
    Tensor ours3 = sincos_pos_embed_3d(dim, gh, gw, frames, s_interp, t_interp);
    EXPECT_EQ(ours3.shape(), (Shape{int64_t(frames) * gh * gw, dim}));
    EXPECT_LE(max_abs_diff(ours3.to_vector(), naive_sincos_3d(dim, gh, gw, frames, s_interp, t_interp)), kTableTol);
    if (gh != gw) {  // h and w swapped do not match (a transposed grid)
      EXPECT_GT(max_abs_diff(ours3.to_vector(), naive_sincos_3d(dim, gw, gh, frames, s_interp, t_interp)), 1e-3);
    }

    const double base = pick(1, 16), interp = std::array{1.0, 2.0, 0.5, 1.5}[size_t(i)];
    Tensor ours2 = sincos_pos_embed_2d(dim, gh, gw, base, interp);
    EXPECT_LE(max_abs_diff(ours2.to_vector(), naive_sincos_2d(dim, gh, gw, base, interp)), kTableTol);

    std::vector<float> pos = arange_f32(gh * 3);
    Table ours1 = sincos_1d(dim, pos);
    EXPECT_LE(max_abs_diff(std::vector<float>(ours1.begin(), ours1.end()), naive_sincos_1d(dim, pos)), kTableTol);
  }
}

TEST(Embeddings, Rotary3dMatchesNaive) {
  std::mt19937 rng(3);
  auto pick = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  double worst = 0;
  for (int i = 0; i < 6; ++i) {
    const int head = 16 * pick(1, 8), base_h = pick(2, 16), base_w = pick(2, 16), frames = pick(1, 13);
    const bool slice = i % 2;
    // linspace grids of any size (cropped into the base grid); slice grids within the base
    const int gh = slice ? pick(1, base_h) : pick(1, 20), gw = slice ? pick(1, base_w) : pick(1, 20);
    SCOPED_TRACE(cat("head ", head, " grid ", frames, "x", gh, "x", gw, " base ", base_h, "x", base_w,
                     slice ? " slice" : " linspace"));
    RopeTables ours = rotary_pos_embed_3d(head, gh, gw, frames, base_h, base_w, slice ? "slice" : "linspace");
    auto [cos, sin] = naive_rope_3d(head, gh, gw, frames, base_h, base_w, slice);
    // positions from torch's linspace are float values; ours use the FMA of torch's
    // build, the naive transcription plain float arithmetic: up to an ulp of positions < 32
    worst = std::max({worst, max_abs_diff(ours.cos.to_vector(), cos), max_abs_diff(ours.sin.to_vector(), sin)});
    EXPECT_LE(worst, 4e-6);
  }
  std::printf("  3D rotary vs naive: max abs error %.2e\n", worst);
}

TEST(Embeddings, LinspaceMatchesTorchFormula) {
  // torch.linspace(0, 5, 6) is exact in float32
  EXPECT_EQ(linspace_f32(0, 5, 6), (std::vector<float>{0, 1, 2, 3, 4, 5}));
  EXPECT_EQ(linspace_f32(3, 3, 1), (std::vector<float>{3}));
  EXPECT_TRUE(linspace_f32(0, 1, 0).empty());
  for (int n : {2, 7, 12, 33}) {
    std::vector<float> v = linspace_f32(1.0, 7.0 * (n - 1) / n, n);
    std::vector<float> naive = naive_linspace(1.0, 7.0 * (n - 1) / n, n);
    ASSERT_EQ(v.size(), naive.size());
    for (size_t i = 0; i < v.size(); ++i) EXPECT_NEAR(v[i], naive[i], 1e-6) << n << " " << i;
    EXPECT_EQ(v.front(), 1.0f);
    EXPECT_EQ(v.back(), float(7.0 * (n - 1) / n));  // the second half counts down from the end
  }
}

TEST(Embeddings, BadArgumentsFail) {
  EXPECT_THROW(sincos_pos_embed_3d(24, 2, 2, 1, 1, 1), Error);
  EXPECT_THROW(sincos_pos_embed_2d(30, 2, 2, 1, 1), Error);
  EXPECT_THROW(sincos_1d(7, {0.0f}), Error);
  EXPECT_THROW(rotary_pos_embed_1d(5, {0.0f}), Error);
  EXPECT_THROW(rotary_pos_embed_3d(72, 2, 2, 1, 2, 2, "linspace"), Error);
  EXPECT_THROW(rotary_pos_embed_3d(64, 7, 2, 1, 6, 8, "slice"), Error);  // grid beyond the table
  EXPECT_THROW(rotary_pos_embed_3d(64, 2, 2, 1, 6, 8, "grid"), Error);
  EXPECT_THROW(timestep_embedding({1.0}, 2, false, 1.0), Error);  // dim/2 - shift = 0
}

}  // namespace
}  // namespace pab
