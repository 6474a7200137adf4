// Sequence parallelism: the tensor collectives, and every transformer
// (CogVideoX, Latte, Open-Sora, Open-Sora-Plan) split over 2 to 4 ranks
// (threads here, processes through `pab replay --gpus`) matching the
// diffusers and VideoSys fixtures as the single-rank run does, with PAB's
// broadcast steps skipping the exchanges.
#include <filesystem>
#include <mutex>

#include "backend/ops.h"
#include "cache/pab.h"
#include "core/registry.h"
#include "io/config.h"
#include "io/safetensors.h"
#include "models/random_weights.h"
#include "models/transformer.h"
#include "pipeline/replay.h"
#include "support/io_testing.h"
#include "support/testing.h"
#include "support/thread_group.h"

namespace pab {
namespace {

using testing::close_rel;
using testing::data_path;
using testing::random_tensor;
using testing::ThreadGroup;

TEST(Shard, PadsToAMultipleOfTheRanks) {
  Shard a = shard_of(10, 4, 3);
  EXPECT_EQ(a.padded, 12);
  EXPECT_EQ(a.local, 3);
  EXPECT_EQ(a.begin, 9);
  EXPECT_EQ(a.valid, 1);
  Shard b = shard_of(3, 4, 3);  // more ranks than items: the last holds only padding
  EXPECT_EQ(b.local, 1);
  EXPECT_EQ(b.valid, 0);
  Shard c = shard_of(8, 2, 1);
  EXPECT_EQ(c.begin, 4);
  EXPECT_EQ(c.valid, 4);
  EXPECT_THROW(shard_of(8, 2, 2), Error);
}

TEST(Shard, TakeShardPadsWithZeros) {
  Tensor x = random_tensor({2, 5, 3}, 1);
  Tensor last = take_shard(x, 1, shard_of(5, 3, 2));  // rows 4..5, one real
  ASSERT_EQ(last.shape(), (Shape{2, 2, 3}));
  EXPECT_TRUE(close_rel(ops::slice(last, 1, 0, 1), ops::slice(x, 1, 4, 5), 0));
  EXPECT_EQ(testing::compare(ops::slice(last, 1, 1, 2), Tensor::zeros({2, 1, 3})).max_abs, 0);
}

// all_to_all(x_r, scatter, gather) on rank r must equal the concatenation over
// source ranks s of part r (along scatter) of x_s, along gather.
TEST(Collectives, AllToAllAndAllGatherMatchSlicing) {
  for (int ranks : {2, 3}) {
    for (auto [scatter, gather] : std::vector<std::pair<int, int>>{{2, 1}, {1, 2}, {0, 3}, {3, 0}}) {
      ThreadGroup group(ranks);
      std::vector<Tensor> inputs;
      for (int r = 0; r < ranks; ++r) inputs.push_back(random_tensor({3 * ranks, ranks, 2 * ranks, 2 * ranks}, uint32_t(10 + r)));
      std::vector<Tensor> exchanged(static_cast<size_t>(ranks)), gathered(static_cast<size_t>(ranks));
      group.run([&](Communicator& c) {
        exchanged[size_t(c.rank())] = all_to_all(c, inputs[size_t(c.rank())], scatter, gather);
        gathered[size_t(c.rank())] = all_gather(c, inputs[size_t(c.rank())], gather);
      });
      for (int r = 0; r < ranks; ++r) {
        std::vector<Tensor> parts;
        for (int s = 0; s < ranks; ++s) {
          int64_t m = inputs[size_t(s)].dim(scatter) / ranks;
          parts.push_back(ops::slice(inputs[size_t(s)], scatter, r * m, (r + 1) * m));
        }
        SCOPED_TRACE(::testing::Message() << ranks << " ranks, scatter " << scatter << ", gather " << gather);
        EXPECT_TRUE(close_rel(exchanged[size_t(r)], ops::concat(parts, gather), 0));
        EXPECT_TRUE(close_rel(gathered[size_t(r)], ops::concat(inputs, gather), 0));
      }
    }
  }
  ThreadGroup group(2);
  EXPECT_THROW(group.run([](Communicator& c) { all_to_all(c, Tensor::zeros({3, 2}), 0, 1); }), Error);
}

// fp32 against the diffusers fixtures, as the single-rank parity tests: the
// split changes only which rank computes what (and the attention's key
// order), measured ~1e-6.
constexpr double kTol = 1e-5;

struct Split {
  std::string fixture;
  int ranks;
  // The attention that needs the whole sequence and so exchanges: CogVideoX's
  // joint and Open-Sora-Plan 1.2's full 3D attention sit at the spatial site;
  // Latte, Open-Sora and Open-Sora-Plan 1.1 exchange in temporal attention.
  SiteKind exchanging;
};

class SequenceParallel : public ::testing::TestWithParam<Split> {};

TEST_P(SequenceParallel, EveryStepMatchesTheReferenceAndPabSkipsExchanges) {
  const std::string dir = data_path("fixtures/" + GetParam().fixture);
  const int ranks = GetParam().ranks;
  ReplayCase c = load_replay_case(dir);
  Checkpoint ref = Checkpoint::open_file(dir + "/reference.safetensors");

  ThreadGroup group(ranks);
  std::vector<std::map<std::string, Tensor>> outs(static_cast<size_t>(ranks));
  std::vector<CacheStats> stats(static_cast<size_t>(ranks));
  group.run([&](Communicator& comm) {
    LoadOptions opts;
    opts.comm = &comm;
    std::string summary;
    outs[size_t(comm.rank())] = replay_case(c, opts, &summary, &stats[size_t(comm.rank())]);
  });
  for (int r = 0; r < ranks; ++r) {
    SCOPED_TRACE(::testing::Message() << "rank " << r);
    EXPECT_EQ(testing::expect_reference(outs[size_t(r)], dir + "/reference.safetensors", kTol).compared,
              int(2 * c.timesteps.size() + 2));
  }
  // The test can fail: the split run without PAB does not match the PAB reference.
  EXPECT_FALSE(close_rel(outs[0].at("latents_final_nopab"), ref.load("latents_final_pab"), kTol));

  // Exchanges: two per computed attention that needs the whole sequence in
  // the run without PAB and in the run with it, and one gather per step of each run.
  const int steps = int(c.timesteps.size());
  const CacheStats::Counts pab = stats[0].total(GetParam().exchanging);
  ASSERT_GT(pab.reused, 0) << "the case's PAB settings broadcast nothing";
  const int every_step = pab.computed + pab.reused;
  const CommStats& cs = group.comm(0).stats();
  EXPECT_EQ(cs.all_to_all, 2 * (every_step + pab.computed));
  EXPECT_EQ(cs.all_gather, 2 * steps);
}

INSTANTIATE_TEST_SUITE_P(Splits, SequenceParallel,
                         ::testing::Values(Split{"transformer/cogvideox_2b_style", 2, SiteKind::spatial},
                                           Split{"transformer/cogvideox_2b_style_small_input", 3, SiteKind::spatial},
                                           Split{"transformer/cogvideox_5b_style", 4, SiteKind::spatial},
                                           Split{"transformer/cogvideox_1_5_style", 2, SiteKind::spatial},
                                           Split{"transformer/latte", 2, SiteKind::temporal},
                                           Split{"transformer/latte", 3, SiteKind::temporal},
                                           Split{"videosys/open_sora", 2, SiteKind::temporal},
                                           Split{"videosys/open_sora_mlp", 3, SiteKind::temporal},
                                           // 4 frames: 3 ranks pad the frames to 6
                                           Split{"videosys/open_sora_plan_v110", 2, SiteKind::temporal},
                                           Split{"videosys/open_sora_plan_v110", 3, SiteKind::temporal},
                                           // 2 heads, 64 tokens: 3 ranks pad the heads to 3 and the tokens to 66
                                           Split{"videosys/open_sora_plan_v120", 2, SiteKind::spatial},
                                           Split{"videosys/open_sora_plan_v120", 3, SiteKind::spatial}),
                         [](const auto& info) {
                           std::string name = info.param.fixture.substr(info.param.fixture.find('/') + 1);
                           return name + "_" + std::to_string(info.param.ranks);
                         });

// Every registered model splits; a model added without a split (this
// file's own, registered here only) says so when loaded for several ranks
// and loads for one.
class SingleRankModel final : public DiffusionTransformer {
 public:
  std::string class_name() const override { return "SingleRankTestModel"; }
  LatentLayout layout() const override { return LatentLayout::bcfhw; }
  int in_channels() const override { return 4; }
  int out_channels() const override { return 4; }
  SiteLayout site_layout() const override { return {{{SiteKind::step, 1}}}; }
  Tensor forward_pass(const TransformerInputs& in, const Sites*) override { return in.latents; }
};

PAB_REGISTER(TransformerFamily, "SingleRankTestModel",
             {[](const JsonConfig&, const WeightSource&, const LoadOptions&) -> std::unique_ptr<DiffusionTransformer> {
                return std::make_unique<SingleRankModel>();
              },
              [](const JsonConfig&) { return SingleRankModel().site_layout(); },
              [](const JsonConfig&, const ForwardShape&) { return ForwardFootprint{}; }});

TEST(SequenceParallel, ModelWithoutASplitIsAClearError) {
  const JsonConfig config(nlohmann::json{{"_class_name", "SingleRankTestModel"}}, "test config");
  const RandomWeights weights(1);
  EXPECT_NE(load_transformer(config, weights, LoadOptions{}), nullptr);
  ThreadGroup group(2);
  try {
    group.run([&](Communicator& comm) {
      LoadOptions opts;
      opts.comm = &comm;
      load_transformer(config, weights, opts);
    });
    FAIL() << "loaded";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "SingleRankTestModel does not run sequence-parallel yet (--gpus 2); it runs on one GPU");
  }
}

// The multi-process path: `pab replay --gpus N` starts N - 1 more ranks
// (host shared memory) and writes the reference's outputs; with
// --cfg-parallel the guidance branches run on separate halves of the ranks.
struct Launch {
  std::string fixture, flags;
};

class ReplayCommand : public ::testing::TestWithParam<Launch> {};

TEST_P(ReplayCommand, MatchesTheReference) {
  const std::string dir = data_path("fixtures/" + GetParam().fixture);
  testing::TempDir tmp;
  const std::string out = tmp / "sp_replay.safetensors";
  std::string log;
  ASSERT_EQ(testing::run_command(testing::pab_binary() + " replay " + dir + " -o " + out + " " + GetParam().flags, &log),
            0)
      << log;
  Checkpoint got = Checkpoint::open_file(out), ref = Checkpoint::open_file(dir + "/reference.safetensors");
  for (const std::string& name : ref.names()) EXPECT_TRUE(close_rel(got.load(name), ref.load(name), kTol)) << name;
  EXPECT_EQ(log.find("rank "), std::string::npos) << log;  // the other ranks stopped cleanly
}

INSTANTIATE_TEST_SUITE_P(Launches, ReplayCommand,
                         ::testing::Values(Launch{"transformer/cogvideox_5b_style", "--gpus 2"},
                                           Launch{"transformer/cogvideox_5b_style", "--gpus 2 --cfg-parallel"},
                                           Launch{"transformer/latte", "--gpus 4 --cfg-parallel"},
                                           Launch{"videosys/open_sora_plan_v110", "--gpus 3"},
                                           Launch{"videosys/open_sora_plan_v120", "--gpus 3"}),
                         [](const auto& info) {
                           return info.param.fixture.substr(info.param.fixture.find('/') + 1) +
                                  (info.param.flags.find("cfg") != std::string::npos ? "_cfg" : "") + "_" +
                                  std::to_string(info.param.flags[7] - '0');
                         });

// A bad argument fails on every rank: one clear error, said once, no output,
// no hang.
TEST(ReplayCommandBadInput, FailsCleanlyOnEveryRank) {
  const std::string dir = data_path("fixtures/transformer/latte");
  testing::TempDir tmp;
  const std::string out = tmp / "sp_replay.safetensors";
  std::string log;
  EXPECT_NE(testing::run_command(testing::pab_binary() + " replay " + dir + " -o " + out +
                                     " --gpus 2 --pab spatial=0@100-800",
                                 &log),
            0);
  EXPECT_NE(log.find("spatial range must be >= 1"), std::string::npos) << log;
  EXPECT_EQ(log.find("rank 1"), std::string::npos) << log;  // rank 1 stopped with the same error: said once
  EXPECT_FALSE(std::filesystem::exists(out));
  EXPECT_NE(testing::run_command(testing::pab_binary() + " replay " + dir + " -o " + out + " --gpus 3 --cfg-parallel",
                                 &log),
            0);
  EXPECT_NE(log.find("--cfg-parallel needs an even --gpus"), std::string::npos) << log;
}

// A rank outlives rank 0 when its last exchange is with peers only: it
// finishes cleanly. A rank waiting on a peer that died stops (no hang), and
// rank 0 names both. Rank 0 stopping on an error does not wait for ranks
// that never notice.
TEST(WorldStop, RankOutlivingRankZeroFinishes) {
  std::string log;
  EXPECT_EQ(testing::run_command(std::string(PAB_WORLD_PROBE) + " late-peer", &log), 0) << log;
  EXPECT_EQ(log.find("rank "), std::string::npos) << log;
}

TEST(WorldStop, RankWaitingOnADeadPeerStops) {
  std::string log;
  EXPECT_EQ(testing::run_command(std::string(PAB_WORLD_PROBE) + " dead-peer", &log), 0) << log;
  EXPECT_NE(log.find("rank 2 stopped with exit status 3"), std::string::npos) << log;
  EXPECT_NE(log.find("rank 3 stopped with exit status 1"), std::string::npos) << log;
  EXPECT_NE(log.find("sequence parallel: rank 2 stopped"), std::string::npos) << log;
  // The ranks' logs, kept for the user and named in the warnings, go with the test.
  for (size_t at = log.find("(/"); at != std::string::npos; at = log.find("(/", at + 1))
    std::filesystem::remove(log.substr(at + 1, log.find(')', at) - at - 1));
}

TEST(WorldStop, RankZeroFailingStopsRanksThatDoNotNotice) {
  std::string log;
  EXPECT_EQ(testing::run_command("timeout 60 " + std::string(PAB_WORLD_PROBE) + " stuck-peer", &log), 1) << log;
  EXPECT_NE(log.find("world_probe: error: rank 0 gave up"), std::string::npos) << log;
  EXPECT_EQ(log.find("rank 1"), std::string::npos) << log;  // killed by rank 0: not reported
}

}  // namespace
}  // namespace pab
