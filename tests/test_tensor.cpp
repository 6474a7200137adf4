#include <cmath>

#include "backend/ops.h"
#include "support/testing.h"

namespace pab {
namespace {

TEST(Tensor, ReshapeAndNarrowAreViews) {
  Tensor t = Tensor::from_vector({0, 1, 2, 3, 4, 5}, {3, 2});
  Tensor r = t.reshape({2, -1});
  EXPECT_EQ(r.shape(), (Shape{2, 3}));
  Tensor n = t.narrow0(1, 2);
  EXPECT_EQ(n.shape(), (Shape{2, 2}));
  EXPECT_EQ(n.f32()[0], 2.0f);
  n.f32()[0] = 9.0f;
  EXPECT_EQ(t.f32()[2], 9.0f);
  EXPECT_THROW(t.reshape({4, 2}), Error);
  EXPECT_THROW(t.narrow0(2, 2), Error);
}

TEST(Tensor, CastRoundTrips) {
  Tensor t = Tensor::from_vector({1.0f, -2.5f, 65504.0f, 1e-6f}, {4});
  Tensor h = t.to(DType::f16).to(DType::f32);
  Tensor b = t.to(DType::bf16).to(DType::f32);
  EXPECT_EQ(h.to_vector()[2], 65504.0f);
  EXPECT_EQ(h.to_vector()[3], 17.0f * std::ldexp(1.0f, -24));  // nearest f16 subnormal, as numpy rounds
  EXPECT_EQ(b.to_vector()[1], -2.5f);
}

}  // namespace
}  // namespace pab
