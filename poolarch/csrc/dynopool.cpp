// Fused CPU kernel for 2-d DynOPool (poolarch.layers.dynopool), forward and backward.
//
// Output cell (i, j) aggregates (max or mean) the 4 lattice points (2i+a, 2j+b), a, b in {0, 1}, of
// the bilinear align_corners=False resize of x to (2*H_out, 2*W_out). The resize is separable, so
// per-row and per-column taps/weights are computed once per call. The backward pass returns the
// input gradient and the gradient with respect to the two continuous output sizes (which reaches
// alpha through the straight-through size surrogate).
//
// Memory layouts: an (N, C, H, W) tensor is viewed as (P, H, W, Q) with (P, Q) = (N*C, 1) when
// contiguous and (N, C) when channels_last; every element goes through the same arithmetic in both
// layouts, so results are bit-identical. Built with -ffp-contract=off so no FMA changes that.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <tuple>
#include <type_traits>
#include <vector>

namespace poolarch_dynopool {
namespace {

constexpr int64_t kMax = 0;
constexpr int64_t kAvg = 1;

// Source taps of one axis for lattice points k = 0..lattice_len-1 (PyTorch's linear
// align_corners=False convention: u = (k + 1/2) * in/lattice - 1/2 clamped to >= 0).
template <typename scalar_t>
struct AxisTaps {
  std::vector<int64_t> i0, i1;
  std::vector<scalar_t> w0, w1;
  std::vector<double> du_ds;  // d u_k / d (continuous output size); 0 where u was clamped
};

template <typename scalar_t>
AxisTaps<scalar_t> axis_taps(int64_t in_len, int64_t lattice_len, double size_value) {
  AxisTaps<scalar_t> t;
  t.i0.resize(lattice_len);
  t.i1.resize(lattice_len);
  t.w0.resize(lattice_len);
  t.w1.resize(lattice_len);
  t.du_ds.resize(lattice_len);
  const scalar_t scale = static_cast<scalar_t>(in_len) / static_cast<scalar_t>(lattice_len);
  for (int64_t k = 0; k < lattice_len; ++k) {
    scalar_t u = scale * (static_cast<scalar_t>(k) + static_cast<scalar_t>(0.5)) - static_cast<scalar_t>(0.5);
    if (u < 0) u = 0;
    const int64_t i0 = std::min(static_cast<int64_t>(u), in_len - 1);
    scalar_t lambda = u - static_cast<scalar_t>(i0);
    lambda = std::min(std::max(lambda, static_cast<scalar_t>(0)), static_cast<scalar_t>(1));
    t.i0[k] = i0;
    t.i1[k] = std::min(i0 + 1, in_len - 1);
    t.w0[k] = static_cast<scalar_t>(1) - lambda;
    t.w1[k] = lambda;
    const double kh = static_cast<double>(k) + 0.5;
    const double u_exact = kh * static_cast<double>(in_len) / static_cast<double>(lattice_len) - 0.5;
    t.du_ds[k] = u_exact > 0 ? -kh * static_cast<double>(in_len) / (2.0 * size_value * size_value) : 0.0;
  }
  return t;
}

// Shape of the (P, H, W, Q) view and whether the tensor is channels_last.
struct Layout {
  int64_t P, Q;
  bool channels_last;
};

Layout layout_of(const at::Tensor& x) {
  if (x.is_contiguous()) return {x.size(0) * x.size(1), 1, false};
  return {x.size(0), x.size(1), true};
}

at::MemoryFormat format_of(const Layout& l) {
  return l.channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
}

at::Tensor as_layout(const at::Tensor& x) {
  if (x.is_contiguous() || x.is_contiguous(at::MemoryFormat::ChannelsLast)) return x;
  return x.contiguous();
}

// Vertical blend of lattice row k: row[w*Q + q] = w0 * x[i0, w, q] + w1 * x[i1, w, q].
template <typename scalar_t>
inline void blend_row(const scalar_t* plane, const AxisTaps<scalar_t>& th, int64_t k, int64_t WQ,
                      scalar_t* row) {
  const scalar_t* r0 = plane + th.i0[k] * WQ;
  const scalar_t* r1 = plane + th.i1[k] * WQ;
  const scalar_t a = th.w0[k], b = th.w1[k];
  for (int64_t e = 0; e < WQ; ++e) row[e] = a * r0[e] + b * r1[e];
}

// True when resizing this axis is the identity (lattice == input: r = 1/2 on an even size); the
// kernel then reads the input directly, which is exact even for non-finite neighbours.
template <typename scalar_t>
bool is_identity(const AxisTaps<scalar_t>& t, int64_t in_len) {
  if (static_cast<int64_t>(t.i0.size()) != in_len) return false;
  for (int64_t k = 0; k < in_len; ++k)
    if (t.i0[k] != k || t.w1[k] != 0 || t.w0[k] != 1) return false;
  return true;
}

// Branch-free select (bit masks, so scalar remainder loops do not mispredict): s ? a : b.
template <typename scalar_t>
inline scalar_t select(bool s, scalar_t a, scalar_t b) {
  using bits_t = std::conditional_t<sizeof(scalar_t) == 4, uint32_t, uint64_t>;
  const bits_t m = bits_t(0) - static_cast<bits_t>(s);
  return std::bit_cast<scalar_t>((std::bit_cast<bits_t>(a) & m) | (std::bit_cast<bits_t>(b) & ~m));
}

inline int8_t select_code(bool s, int8_t a, int8_t b) {
  const int8_t m = static_cast<int8_t>(-static_cast<int8_t>(s));
  return static_cast<int8_t>((a & m) | (b & ~m));
}

// Aggregate the 4 lattice values of a cell. max: same tie/NaN rule as max_pool2d (a later point
// wins if strictly greater or NaN), code = 2a + b of the winner; avg: row-major sum / 4.
template <typename scalar_t, int64_t kMode>
inline void aggregate(scalar_t v00, scalar_t v01, scalar_t v10, scalar_t v11, scalar_t& out, int8_t& code) {
  if (kMode == kMax) {
    scalar_t best = v00;
    int8_t c = 0;
    bool t = (v01 > best) | (v01 != v01);
    best = select(t, v01, best);
    c = select_code(t, int8_t(1), c);
    t = (v10 > best) | (v10 != v10);
    best = select(t, v10, best);
    c = select_code(t, int8_t(2), c);
    t = (v11 > best) | (v11 != v11);
    best = select(t, v11, best);
    c = select_code(t, int8_t(3), c);
    out = best;
    code = c;
  } else {
    out = (((v00 + v01) + v10) + v11) / static_cast<scalar_t>(4);
  }
}

// Horizontal resample of a (vertically blended) row R (W*Q) to lattice columns L (Lw*Q):
// L[l*Q + q] = w0[l] * R[i0[l]*Q + q] + w1[l] * R[i1[l]*Q + q].
template <typename scalar_t, bool kPlanar>
inline void resample_columns(const scalar_t* __restrict R, const AxisTaps<scalar_t>& tw, int64_t Q_dyn,
                             scalar_t* __restrict L) {
  const int64_t Q = kPlanar ? 1 : Q_dyn, Lw = static_cast<int64_t>(tw.i0.size());
  const int64_t* i0 = tw.i0.data();
  const int64_t* i1 = tw.i1.data();
  const scalar_t* w0 = tw.w0.data();
  const scalar_t* w1 = tw.w1.data();
  if constexpr (kPlanar) {
#pragma omp simd
    for (int64_t l = 0; l < Lw; ++l) L[l] = w0[l] * R[i0[l]] + w1[l] * R[i1[l]];
  } else {
    for (int64_t l = 0; l < Lw; ++l) {
      const scalar_t a = w0[l], b = w1[l];
      const scalar_t* A = R + i0[l] * Q;
      const scalar_t* B = R + i1[l] * Q;
      scalar_t* out = L + l * Q;
      for (int64_t q = 0; q < Q; ++q) out[q] = a * A[q] + b * B[q];
    }
  }
}

// One output row from the two lattice rows La (k = 2i) and Lb (k = 2i+1), both (2*Wo)*Q long.
template <typename scalar_t, int64_t kMode, bool kPlanar>
inline void aggregate_row(const scalar_t* __restrict La, const scalar_t* __restrict Lb, int64_t Wo, int64_t Q_dyn,
                          scalar_t* __restrict orow, int8_t* __restrict crow) {
  int8_t unused = 0;
  if constexpr (kPlanar) {
#pragma omp simd
    for (int64_t j = 0; j < Wo; ++j)
      aggregate<scalar_t, kMode>(La[2 * j], La[2 * j + 1], Lb[2 * j], Lb[2 * j + 1], orow[j],
                                 kMode == kMax ? crow[j] : unused);
  } else {
    const int64_t Q = Q_dyn;
    for (int64_t j = 0; j < Wo; ++j) {
      const scalar_t *A0 = La + (2 * j) * Q, *A1 = La + (2 * j + 1) * Q;
      const scalar_t *C0 = Lb + (2 * j) * Q, *C1 = Lb + (2 * j + 1) * Q;
      scalar_t* o = orow + j * Q;
      int8_t* c = kMode == kMax ? crow + j * Q : &unused;
#pragma omp simd
      for (int64_t q = 0; q < Q; ++q)
        aggregate<scalar_t, kMode>(A0[q], A1[q], C0[q], C1[q], o[q], kMode == kMax ? c[q] : unused);
    }
  }
}

template <typename scalar_t, int64_t kMode, bool kIdH, bool kIdW, bool kPlanar>
void forward_loop(const at::Tensor& x, at::Tensor& out, at::Tensor& codes, const AxisTaps<scalar_t>& th,
                  const AxisTaps<scalar_t>& tw) {
  const Layout lay = layout_of(x);
  const int64_t H = x.size(2), W = x.size(3), Ho = out.size(2), Wo = out.size(3);
  const int64_t P = lay.P, Q = lay.Q, WQ = W * Q, LQ = 2 * Wo * Q;
  const scalar_t* xd = x.const_data_ptr<scalar_t>();
  scalar_t* od = out.mutable_data_ptr<scalar_t>();
  int8_t* cd = kMode == kMax ? codes.mutable_data_ptr<int8_t>() : nullptr;
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(1, 3 * LQ + 2 * WQ));
  at::parallel_for(0, P * Ho, grain, [&](int64_t begin, int64_t end) {
    std::vector<scalar_t> row_a(kIdH ? 0 : WQ), row_b(kIdH ? 0 : WQ);
    // Planar rows are short: pad them to whole vectors (aggregated into scratch, then copied) so
    // the aggregation never runs a scalar remainder loop.
    constexpr bool kPadded = kPlanar && !kIdW;
    const int64_t Wo_pad = kPadded ? (Wo + 15) / 16 * 16 : Wo;
    std::vector<scalar_t> lat_a(kIdW ? 0 : 2 * Wo_pad * Q, 0), lat_b(kIdW ? 0 : 2 * Wo_pad * Q, 0);
    std::vector<scalar_t> out_pad(kPadded ? Wo_pad : 0);
    std::vector<int8_t> code_pad(kPadded ? Wo_pad : 0);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t p = task / Ho, i = task % Ho;
      const scalar_t* plane = xd + p * H * WQ;
      const scalar_t *Ra, *Rb;
      if (kIdH) {
        Ra = plane + (2 * i) * WQ;
        Rb = plane + (2 * i + 1) * WQ;
      } else {
        blend_row(plane, th, 2 * i, WQ, row_a.data());
        blend_row(plane, th, 2 * i + 1, WQ, row_b.data());
        Ra = row_a.data();
        Rb = row_b.data();
      }
      if (!kIdW) {
        resample_columns<scalar_t, kPlanar>(Ra, tw, Q, lat_a.data());
        resample_columns<scalar_t, kPlanar>(Rb, tw, Q, lat_b.data());
        Ra = lat_a.data();
        Rb = lat_b.data();
      }
      const int64_t o = (p * Ho + i) * Wo * Q;
      if (kPadded) {
        aggregate_row<scalar_t, kMode, kPlanar>(Ra, Rb, Wo_pad, Q, out_pad.data(), code_pad.data());
        std::memcpy(od + o, out_pad.data(), sizeof(scalar_t) * Wo);
        if (cd) std::memcpy(cd + o, code_pad.data(), Wo);
        continue;
      }
      aggregate_row<scalar_t, kMode, kPlanar>(Ra, Rb, Wo, Q, od + o, cd ? cd + o : nullptr);
    }
  });
}

template <typename scalar_t, int64_t kMode>
void forward_impl(const at::Tensor& x, at::Tensor& out, at::Tensor& codes) {
  const int64_t H = x.size(2), W = x.size(3), Ho = out.size(2), Wo = out.size(3);
  const auto th = axis_taps<scalar_t>(H, 2 * Ho, static_cast<double>(Ho));
  const auto tw = axis_taps<scalar_t>(W, 2 * Wo, static_cast<double>(Wo));
  const bool id_h = is_identity(th, H), id_w = is_identity(tw, W), planar = layout_of(x).Q == 1;
#define POOLARCH_FWD(IH, IW, PL) forward_loop<scalar_t, kMode, IH, IW, PL>(x, out, codes, th, tw)
  if (planar) {
    if (id_h && id_w) POOLARCH_FWD(true, true, true);
    else if (id_w) POOLARCH_FWD(false, true, true);
    else if (id_h) POOLARCH_FWD(true, false, true);
    else POOLARCH_FWD(false, false, true);
  } else {
    if (id_h && id_w) POOLARCH_FWD(true, true, false);
    else if (id_w) POOLARCH_FWD(false, true, false);
    else if (id_h) POOLARCH_FWD(true, false, false);
    else POOLARCH_FWD(false, false, false);
  }
#undef POOLARCH_FWD
}

// Size gradients = the sums of the per-chunk partials (h, w) written by the parallel tasks, added in
// a fixed order so the result does not depend on the thread count's scheduling.
inline void sum_partials(const std::vector<double>& partial, double* grad_sizes) {
  double gh = 0.0, gw = 0.0;
  for (size_t t = 0; t + 1 < partial.size(); t += 2) {
    gh += partial[t];
    gw += partial[t + 1];
  }
  grad_sizes[0] = gh;
  grad_sizes[1] = gw;
}

// Backward when both axes are the identity (r = 1/2 on even sizes): every input element belongs to
// exactly one cell, so the input gradient of lattice row k is written (not accumulated) as
// G[e] = (point e won the max, or avg) ? g : 0, and the size-gradient terms are
// sum_e G[e] * (x[next row] - x) * du/ds_h and sum_e G[e] * (x[next column] - x) * du/ds_w
// (the tap weights are exactly 1 and 0). Tasks are output rows.

// Expanded gradient of lattice row 2i+a (length W*Q) from the output row (length Wo*Q).
template <typename scalar_t, int64_t kMode, bool kPlanar>
inline void expand_grad_row(const scalar_t* __restrict go, const int8_t* __restrict co, int64_t Wo, int64_t Q_dyn,
                            int64_t a, scalar_t* __restrict G) {
  const int8_t p0 = static_cast<int8_t>(2 * a), p1 = static_cast<int8_t>(2 * a + 1);
  const scalar_t zero = 0, quarter = static_cast<scalar_t>(4);
  auto cell = [&](int64_t j, int64_t q, int64_t Q) {
    const scalar_t g = go[j * Q + q];
    if (kMode == kMax) {
      const int8_t c = co[j * Q + q];
      G[(2 * j) * Q + q] = select(c == p0, g, zero);
      G[(2 * j + 1) * Q + q] = select(c == p1, g, zero);
    } else {
      G[(2 * j) * Q + q] = g / quarter;
      G[(2 * j + 1) * Q + q] = g / quarter;
    }
  };
  if constexpr (kPlanar) {
#pragma omp simd
    for (int64_t j = 0; j < Wo; ++j) cell(j, 0, 1);
  } else {
    for (int64_t j = 0; j < Wo; ++j) {
#pragma omp simd
      for (int64_t q = 0; q < Q_dyn; ++q) cell(j, q, Q_dyn);
    }
  }
}

// acc_h[e] += G[e] * (xn[e] - xk[e]) * fh;  acc_w[e] += G[e] * (xk[e + Q] - xk[e]) (last column: 0).
template <typename scalar_t>
inline void accumulate_size_terms(const scalar_t* __restrict G, const scalar_t* __restrict xk,
                                  const scalar_t* __restrict xn, int64_t WQ, int64_t Q, scalar_t fh,
                                  scalar_t* __restrict acc_h, scalar_t* __restrict acc_w) {
  for (int64_t e = 0; e < WQ; ++e) acc_h[e] += (G[e] * (xn[e] - xk[e])) * fh;
  for (int64_t e = 0; e < WQ - Q; ++e) acc_w[e] += G[e] * (xk[e + Q] - xk[e]);
}

template <typename scalar_t, int64_t kMode, bool kInputGrad, bool kSizeGrad, bool kPlanar>
void backward_identity(const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& codes,
                       at::Tensor& grad_x, const AxisTaps<scalar_t>& th, const AxisTaps<scalar_t>& tw,
                       double* grad_sizes) {
  const Layout lay = layout_of(x);
  const int64_t H = x.size(2), W = x.size(3), Ho = grad_out.size(2), Wo = grad_out.size(3);
  const int64_t P = lay.P, Q = lay.Q, WQ = W * Q;
  const scalar_t* xd = x.const_data_ptr<scalar_t>();
  const scalar_t* god = grad_out.const_data_ptr<scalar_t>();
  const int8_t* cd = kMode == kMax ? codes.const_data_ptr<int8_t>() : nullptr;
  scalar_t* gxd = kInputGrad ? grad_x.mutable_data_ptr<scalar_t>() : nullptr;
  const int64_t tasks = P * Ho;
  // d u / d s_w per element of a row, applied when the (scalar_t) row sums are flushed to double.
  std::vector<double> fw(WQ);
  for (int64_t e = 0; e < WQ; ++e) fw[e] = tw.du_ds[e / Q];
  constexpr int64_t kFlushEvery = 8;  // output rows summed in scalar_t before adding to double
  std::vector<double> partial(kSizeGrad ? 2 * tasks : 0, 0.0);  // slot of each chunk's first task
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(1, 2 * WQ));
  at::parallel_for(0, tasks, grain, [&](int64_t begin, int64_t end) {
    std::vector<scalar_t> buffer(kInputGrad ? 0 : WQ);
    std::vector<scalar_t> acc_h(kSizeGrad ? WQ : 0, 0), acc_w(kSizeGrad ? WQ : 0, 0);
    std::vector<double> dacc_h(kSizeGrad ? WQ : 0, 0.0), dacc_w(kSizeGrad ? WQ : 0, 0.0);
    auto flush = [&]() {
      for (int64_t e = 0; e < WQ; ++e) {
        dacc_h[e] += static_cast<double>(acc_h[e]);
        dacc_w[e] += static_cast<double>(acc_w[e]) * fw[e];
        acc_h[e] = 0;
        acc_w[e] = 0;
      }
    };
    for (int64_t task = begin; task < end; ++task) {
      const int64_t p = task / Ho, i = task % Ho;
      const scalar_t* xp = xd + p * H * WQ;
      const scalar_t* go = god + (p * Ho + i) * Wo * Q;
      const int8_t* co = cd ? cd + (p * Ho + i) * Wo * Q : nullptr;
      for (int64_t a = 0; a < 2; ++a) {
        const int64_t k = 2 * i + a;
        scalar_t* G = kInputGrad ? gxd + p * H * WQ + k * WQ : buffer.data();
        expand_grad_row<scalar_t, kMode, kPlanar>(go, co, Wo, Q, a, G);
        if (kSizeGrad)
          accumulate_size_terms<scalar_t>(G, xp + k * WQ, xp + th.i1[k] * WQ, WQ, Q,
                                          static_cast<scalar_t>(th.du_ds[k]), acc_h.data(), acc_w.data());
      }
      if (kSizeGrad && (task - begin + 1) % kFlushEvery == 0) flush();
    }
    if (kSizeGrad) {
      flush();
      double sh = 0.0, sw = 0.0;
      for (int64_t e = 0; e < WQ; ++e) {
        sh += dacc_h[e];
        sw += dacc_w[e];
      }
      partial[2 * begin] = sh;
      partial[2 * begin + 1] = sw;
    }
  });
  sum_partials(partial, grad_sizes);
}

// General backward, the transpose of the separable forward. Per plane p (all Q channels of it):
// for every lattice row k, GL = gradient of the lattice row (expand_grad_row); the input gradient
// scatters GL to the column taps (GR, input width) and then to rows i0[k], i1[k]. The size terms:
// d value / d u_k at (k, l) = horizontal resample of D = x[i1[k]] - x[i0[k]] at l, and
// d value / d u_l = R[i1[l]] - R[i0[l]] with R the vertical blend of row k.
template <typename scalar_t, int64_t kMode, bool kInputGrad, bool kSizeGrad, bool kPlanar>
void backward_general(const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& codes,
                      at::Tensor& grad_x, const AxisTaps<scalar_t>& th, const AxisTaps<scalar_t>& tw,
                      double* grad_sizes) {
  const Layout lay = layout_of(x);
  const int64_t H = x.size(2), W = x.size(3), Ho = grad_out.size(2), Wo = grad_out.size(3);
  const int64_t P = lay.P, Q = kPlanar ? 1 : lay.Q, WQ = W * Q, Lw = 2 * Wo, LQ = Lw * Q;
  const scalar_t* xd = x.const_data_ptr<scalar_t>();
  const scalar_t* god = grad_out.const_data_ptr<scalar_t>();
  const int8_t* cd = kMode == kMax ? codes.const_data_ptr<int8_t>() : nullptr;
  scalar_t* gxd = kInputGrad ? grad_x.mutable_data_ptr<scalar_t>() : nullptr;
  std::vector<double> fw(LQ);
  for (int64_t e = 0; e < LQ; ++e) fw[e] = tw.du_ds[e / Q];
  const int64_t* ci0 = tw.i0.data();
  const int64_t* ci1 = tw.i1.data();
  const scalar_t* cw0 = tw.w0.data();
  const scalar_t* cw1 = tw.w1.data();
  constexpr int64_t kFlushEvery = 16;  // lattice rows summed in scalar_t before adding to double
  std::vector<double> partial(kSizeGrad ? 2 * P : 0, 0.0);
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(1, 2 * Ho * (3 * LQ + 4 * WQ)));
  at::parallel_for(0, P, grain, [&](int64_t begin, int64_t end) {
    std::vector<scalar_t> GL(LQ), GR(kInputGrad ? WQ : 0), D(kSizeGrad ? WQ : 0), R(kSizeGrad ? WQ : 0);
    std::vector<scalar_t> acc_h(kSizeGrad ? LQ : 0), acc_w(kSizeGrad ? LQ : 0);
    std::vector<double> dacc_h(kSizeGrad ? LQ : 0), dacc_w(kSizeGrad ? LQ : 0);
    for (int64_t p = begin; p < end; ++p) {
      const scalar_t* xp = xd + p * H * WQ;
      scalar_t* gp = kInputGrad ? gxd + p * H * WQ : nullptr;
      if (kInputGrad) std::memset(gp, 0, sizeof(scalar_t) * H * WQ);
      if (kSizeGrad) {
        std::fill(acc_h.begin(), acc_h.end(), scalar_t(0));
        std::fill(acc_w.begin(), acc_w.end(), scalar_t(0));
        std::fill(dacc_h.begin(), dacc_h.end(), 0.0);
        std::fill(dacc_w.begin(), dacc_w.end(), 0.0);
      }
      int64_t rows = 0;
      for (int64_t i = 0; i < Ho; ++i) {
        const scalar_t* go = god + (p * Ho + i) * Wo * Q;
        const int8_t* co = cd ? cd + (p * Ho + i) * Wo * Q : nullptr;
        for (int64_t a = 0; a < 2; ++a) {
          const int64_t k = 2 * i + a;
          const scalar_t wh0 = th.w0[k], wh1 = th.w1[k];
          const scalar_t* x0 = xp + th.i0[k] * WQ;
          const scalar_t* x1 = xp + th.i1[k] * WQ;
          expand_grad_row<scalar_t, kMode, kPlanar>(go, co, Wo, Q, a, GL.data());
          if (kInputGrad) {
            scalar_t* gr = GR.data();
            const scalar_t* gl = GL.data();
            std::fill(GR.begin(), GR.end(), scalar_t(0));
            for (int64_t l = 0; l < Lw; ++l) {
              const scalar_t a0 = cw0[l], a1 = cw1[l];
              scalar_t* A = gr + ci0[l] * Q;
              scalar_t* B = gr + ci1[l] * Q;
              const scalar_t* src = gl + l * Q;
              for (int64_t q = 0; q < Q; ++q) A[q] += a0 * src[q];
              for (int64_t q = 0; q < Q; ++q) B[q] += a1 * src[q];
            }
            scalar_t* g0 = gp + th.i0[k] * WQ;
            for (int64_t e = 0; e < WQ; ++e) g0[e] += wh0 * gr[e];
            scalar_t* g1 = gp + th.i1[k] * WQ;
            for (int64_t e = 0; e < WQ; ++e) g1[e] += wh1 * gr[e];
          }
          if (kSizeGrad) {
            scalar_t* d = D.data();
            scalar_t* r = R.data();
            for (int64_t e = 0; e < WQ; ++e) d[e] = x1[e] - x0[e];
            for (int64_t e = 0; e < WQ; ++e) r[e] = wh0 * x0[e] + wh1 * x1[e];
            const scalar_t fh = static_cast<scalar_t>(th.du_ds[k]);
            const scalar_t* gl = GL.data();
            scalar_t* ah = acc_h.data();
            scalar_t* aw = acc_w.data();
            if constexpr (kPlanar) {
#pragma omp simd
              for (int64_t l = 0; l < Lw; ++l) {
                ah[l] += (gl[l] * (cw0[l] * d[ci0[l]] + cw1[l] * d[ci1[l]])) * fh;
                aw[l] += gl[l] * (r[ci1[l]] - r[ci0[l]]);
              }
            } else {
              for (int64_t l = 0; l < Lw; ++l) {
                const scalar_t a0 = cw0[l], a1 = cw1[l];
                const scalar_t *dA = d + ci0[l] * Q, *dB = d + ci1[l] * Q;
                const scalar_t *rA = r + ci0[l] * Q, *rB = r + ci1[l] * Q;
                const scalar_t* g = gl + l * Q;
                for (int64_t q = 0; q < Q; ++q) {
                  ah[l * Q + q] += (g[q] * (a0 * dA[q] + a1 * dB[q])) * fh;
                  aw[l * Q + q] += g[q] * (rB[q] - rA[q]);
                }
              }
            }
            if (++rows % kFlushEvery == 0) {
              for (int64_t e = 0; e < LQ; ++e) {
                dacc_h[e] += static_cast<double>(acc_h[e]);
                dacc_w[e] += static_cast<double>(acc_w[e]) * fw[e];
                acc_h[e] = 0;
                acc_w[e] = 0;
              }
            }
          }
        }
      }
      if (kSizeGrad) {
        double sh = 0.0, sw = 0.0;
        for (int64_t e = 0; e < LQ; ++e) {
          sh += dacc_h[e] + static_cast<double>(acc_h[e]);
          sw += dacc_w[e] + static_cast<double>(acc_w[e]) * fw[e];
        }
        partial[2 * p] = sh;
        partial[2 * p + 1] = sw;
      }
    }
  });
  sum_partials(partial, grad_sizes);
}

template <typename scalar_t, bool kInputGrad, bool kSizeGrad>
void backward_dispatch(const at::Tensor& g, const at::Tensor& x, const at::Tensor& codes, at::Tensor& grad_x,
                       double* grad_sizes, int64_t mode) {
  const int64_t H = x.size(2), W = x.size(3), Ho = g.size(2), Wo = g.size(3);
  const auto th = axis_taps<scalar_t>(H, 2 * Ho, static_cast<double>(Ho));
  const auto tw = axis_taps<scalar_t>(W, 2 * Wo, static_cast<double>(Wo));
  if (is_identity(th, H) && is_identity(tw, W)) {
    const bool planar = layout_of(x).Q == 1;
#define POOLARCH_BWD(M, PL) backward_identity<scalar_t, M, kInputGrad, kSizeGrad, PL>(g, x, codes, grad_x, th, tw, grad_sizes)
    if (mode == kMax) {
      if (planar) POOLARCH_BWD(kMax, true); else POOLARCH_BWD(kMax, false);
    } else {
      if (planar) POOLARCH_BWD(kAvg, true); else POOLARCH_BWD(kAvg, false);
    }
#undef POOLARCH_BWD
    return;
  }
  const bool planar = layout_of(x).Q == 1;
#define POOLARCH_BWD(M, PL) backward_general<scalar_t, M, kInputGrad, kSizeGrad, PL>(g, x, codes, grad_x, th, tw, grad_sizes)
  if (mode == kMax) {
    if (planar) POOLARCH_BWD(kMax, true); else POOLARCH_BWD(kMax, false);
  } else {
    if (planar) POOLARCH_BWD(kAvg, true); else POOLARCH_BWD(kAvg, false);
  }
#undef POOLARCH_BWD
}

void check_args(const at::Tensor& x, int64_t out_h, int64_t out_w, int64_t mode) {
  TORCH_CHECK(x.device().is_cpu(), "poolarch dynopool kernel: input must be on the CPU");
  TORCH_CHECK(x.dim() == 4, "poolarch dynopool kernel: input must be 4-d (N, C, H, W), got ", x.dim(), "-d");
  TORCH_CHECK(x.size(2) > 0 && x.size(3) > 0, "poolarch dynopool kernel: empty spatial size");
  TORCH_CHECK(out_h > 0 && out_w > 0, "poolarch dynopool kernel: output size must be positive");
  TORCH_CHECK(mode == kMax || mode == kAvg, "poolarch dynopool kernel: mode must be 0 (max) or 1 (avg)");
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble,
              "poolarch dynopool kernel: dtype must be float32 or float64");
}

std::tuple<at::Tensor, at::Tensor> dynopool2d_forward(const at::Tensor& input, int64_t out_h, int64_t out_w,
                                                      int64_t mode) {
  check_args(input, out_h, out_w, mode);
  const at::Tensor x = as_layout(input);
  const Layout lay = layout_of(x);
  const auto opts = x.options().memory_format(format_of(lay));
  at::Tensor out = at::empty({x.size(0), x.size(1), out_h, out_w}, opts);
  at::Tensor codes = mode == kMax ? at::empty({x.size(0), x.size(1), out_h, out_w}, opts.dtype(at::kChar))
                                  : at::empty({0}, x.options().dtype(at::kChar));
  if (out.numel() == 0) return {out, codes};
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "poolarch_dynopool2d_forward", [&] {
    if (mode == kMax) forward_impl<scalar_t, kMax>(x, out, codes);
    else forward_impl<scalar_t, kAvg>(x, out, codes);
  });
  return {out, codes};
}

std::tuple<at::Tensor, at::Tensor> dynopool2d_backward(const at::Tensor& grad_output, const at::Tensor& input,
                                                       const at::Tensor& codes, int64_t mode, bool input_grad,
                                                       bool size_grad) {
  check_args(input, grad_output.size(2), grad_output.size(3), mode);
  const at::Tensor x = as_layout(input);
  const Layout lay = layout_of(x);
  const at::MemoryFormat fmt = format_of(lay);
  const at::Tensor g = grad_output.to(x.scalar_type()).contiguous(fmt);
  const at::Tensor c = mode == kMax ? codes.contiguous(fmt) : codes;
  TORCH_CHECK(g.size(0) == x.size(0) && g.size(1) == x.size(1), "poolarch dynopool kernel: shape mismatch");
  at::Tensor grad_x = input_grad ? at::empty(x.sizes(), x.options().memory_format(fmt)) : at::Tensor();
  at::Tensor grad_sizes = at::zeros({2}, x.options().dtype(at::kDouble));
  double* gs = grad_sizes.mutable_data_ptr<double>();
  if (x.numel() == 0) {
    if (input_grad) grad_x.zero_();
    return {grad_x, grad_sizes};
  }
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "poolarch_dynopool2d_backward", [&] {
    if (input_grad && size_grad) backward_dispatch<scalar_t, true, true>(g, x, c, grad_x, gs, mode);
    else if (input_grad) backward_dispatch<scalar_t, true, false>(g, x, c, grad_x, gs, mode);
    else if (size_grad) backward_dispatch<scalar_t, false, true>(g, x, c, grad_x, gs, mode);
  });
  return {grad_x, grad_sizes};
}

}  // namespace
}  // namespace poolarch_dynopool

TORCH_LIBRARY(poolarch_dynopool, m) {
  m.def("forward(Tensor x, int out_h, int out_w, int mode) -> (Tensor, Tensor)");
  m.def("backward(Tensor grad_out, Tensor x, Tensor codes, int mode, bool input_grad, bool size_grad) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(poolarch_dynopool, CPU, m) {
  m.impl("forward", &poolarch_dynopool::dynopool2d_forward);
  m.impl("backward", &poolarch_dynopool::dynopool2d_backward);
}
