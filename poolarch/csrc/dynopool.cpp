// Fused CPU kernel for 2-d DynOPool (poolarch.layers.dynopool), forward and backward.
//
// Output cell (i, j) aggregates (max or mean) the 4 lattice points (2i+a, 2j+b), a, b in {0, 1}, of
// the bilinear align_corners=False resize of x to (2*H_out, 2*W_out). The resize is separable, so
// per-row and per-column taps/weights are computed once per call. The backward pass returns the
// input gradient and the gradient with respect to the two continuous output sizes (which reaches
// alpha through the straight-through size surrogate).
//
// dtypes: float32, float64, bfloat16, float16. Arithmetic runs in at::opmath_type (float for the
// 16-bit types, which are read/written at the row boundaries only); size gradients sum in double.
//
// Lattice coordinates are exact: point k of an axis (input length L, output size S) sits at
// u_k = n_k / (4S) with the integer n_k = (2k+1) L - 2S, so taps, weights and kinks are decided in
// integer arithmetic. Scale gradient at kinks (u_k exactly on a pixel centre, including the border
// points u = 0 and u = L-1): the MEAN of the two one-sided slopes, (x[m+1] - x[m-1]) / 2 with border
// indices clamped -- the gradient averaged over an infinitesimal jitter of the scale
// (see /work/wt/_notes/kink_convention.md and the dynopool module docstring).
//
// Memory layouts: an (N, C, H, W) tensor is viewed as (P, H, W, Q) with (P, Q) = (N*C, 1) when
// contiguous and (N, C) when channels_last; every element goes through the same arithmetic in both
// layouts, so results are bit-identical. Built with -ffp-contract=off so no FMA changes that.
// Where the column axis is resampled, NCHW planes are processed in blocks of 64 transposed to
// (H, W, 64) scratch and go through the channels_last loops (forward_blocked, backward_blocked).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/div.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/mul.h>
#include <ATen/ops/neg.h>
#include <ATen/ops/where.h>
#include <ATen/ops/zeros.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Exception.h>
#include <c10/util/Half.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/library.h>

#include <algorithm>
#if defined(__AVX__)
#include <immintrin.h>
#endif
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <tuple>
#include <utility>
#include <type_traits>
#include <vector>

namespace poolarch_dynopool {
namespace {

constexpr int64_t kMax = 0;
constexpr int64_t kAvg = 1;

// ------------------------------------------------------------------------------------------------
// Axis tables
// ------------------------------------------------------------------------------------------------
// One axis: input length L, output size S, lattice length 2S. Lattice point k reads
// w0[k] * x[i0[k]] + w1[k] * x[i1[k]]; its slope d value / d u_k is c_k * (x[s1[k]] - x[s0[k]]) and
// f[k] = c_k * d u_k / d s (c_k = 1, 1/2 at a kink, 0 where u_k is clamped). The transposed
// interpolation lists (input index -> lattice points and weights, CSR, zero weights skipped) serve the
// input gradient.
template <typename acc_t>
struct Axis {
  int64_t in_len = 0, lat_len = 0;
  bool identity = false;  // lattice == input (L == 2S): every point sits on its own pixel
  std::vector<int64_t> i0, i1, s0, s1;
  std::vector<acc_t> w0, w1;
  std::vector<double> f;
  std::vector<int64_t> it_off, it_idx;
  std::vector<acc_t> it_w;  // interpolation weights
  // The interpolation and the slope rows (weights +-f[k] at s1[k] / s0[k]) transposed together: per
  // input index, in increasing lattice order, (k, interpolation weight or 0, slope weight or 0).
  std::vector<int64_t> mt_off, mt_idx;
  std::vector<acc_t> mt_wa, mt_wd;
};

template <typename acc_t>
void transpose_lists(int64_t in_len, const std::vector<std::tuple<int64_t, int64_t, acc_t>>& entries,
                     std::vector<int64_t>& off, std::vector<int64_t>& idx, std::vector<acc_t>& w) {
  off.assign(in_len + 1, 0);
  for (const auto& e : entries) ++off[std::get<0>(e) + 1];
  for (int64_t j = 0; j < in_len; ++j) off[j + 1] += off[j];
  idx.resize(entries.size());
  w.resize(entries.size());
  std::vector<int64_t> pos(off.begin(), off.end() - 1);
  for (const auto& e : entries) {  // entries are in increasing lattice order: stable
    const int64_t p = pos[std::get<0>(e)]++;
    idx[p] = std::get<1>(e);
    w[p] = std::get<2>(e);
  }
}

template <typename acc_t>
Axis<acc_t> make_axis(int64_t L, int64_t S, double size_value) {
  Axis<acc_t> t;
  const int64_t n_lat = 2 * S, D = 4 * S;
  t.in_len = L;
  t.lat_len = n_lat;
  t.identity = (L == n_lat);
  t.i0.resize(n_lat); t.i1.resize(n_lat); t.s0.resize(n_lat); t.s1.resize(n_lat);
  t.w0.resize(n_lat); t.w1.resize(n_lat); t.f.resize(n_lat);
  std::vector<std::tuple<int64_t, int64_t, acc_t>> interp, slope;
  for (int64_t k = 0; k < n_lat; ++k) {
    const int64_t n = (2 * k + 1) * L - 2 * S;  // u_k = n / D
    int64_t i0 = 0;
    double lambda = 0.0;
    if (n > 0) {
      i0 = n / D;
      lambda = static_cast<double>(n % D) / static_cast<double>(D);
      if (i0 >= L - 1) {
        i0 = L - 1;
        lambda = 0.0;
      }
    }
    t.i0[k] = i0;
    t.i1[k] = std::min(i0 + 1, L - 1);
    t.w1[k] = static_cast<acc_t>(lambda);
    t.w0[k] = static_cast<acc_t>(1) - t.w1[k];
    double c = 0.0;
    int64_t a = 0, b = 0;
    if (n >= 0 && n % D == 0) {  // kink: u_k == m exactly
      const int64_t m = n / D;
      a = std::max<int64_t>(m - 1, 0);
      b = std::min<int64_t>(m + 1, L - 1);
      c = 0.5;
    } else if (n > 0 && n / D + 1 <= L - 1) {
      a = n / D;
      b = a + 1;
      c = 1.0;
    }
    t.s0[k] = a;
    t.s1[k] = b;
    const double kh = static_cast<double>(k) + 0.5;
    t.f[k] = (n >= 0 && a != b) ? c * (-kh * static_cast<double>(L) / (2.0 * size_value * size_value)) : 0.0;
    if (t.w0[k] != 0) interp.emplace_back(t.i0[k], k, t.w0[k]);
    if (t.w1[k] != 0) interp.emplace_back(t.i1[k], k, t.w1[k]);
    if (t.f[k] != 0) {  // then s0 != s1
      slope.emplace_back(t.s0[k], k, -static_cast<acc_t>(t.f[k]));
      slope.emplace_back(t.s1[k], k, static_cast<acc_t>(t.f[k]));
    }
  }
  transpose_lists<acc_t>(L, interp, t.it_off, t.it_idx, t.it_w);
  std::vector<int64_t> dt_off, dt_idx;
  std::vector<acc_t> dt_w;
  transpose_lists<acc_t>(L, slope, dt_off, dt_idx, dt_w);
  t.mt_off.assign(1, 0);
  for (int64_t r = 0; r < L; ++r) {  // merge the two sorted lists of input index r
    int64_t a = t.it_off[r], b = dt_off[r];
    while (a < t.it_off[r + 1] || b < dt_off[r + 1]) {
      const int64_t ka = a < t.it_off[r + 1] ? t.it_idx[a] : INT64_MAX;
      const int64_t kb = b < dt_off[r + 1] ? dt_idx[b] : INT64_MAX;
      const int64_t k = std::min(ka, kb);
      t.mt_idx.push_back(k);
      t.mt_wa.push_back(ka == k ? t.it_w[a++] : acc_t(0));
      t.mt_wd.push_back(kb == k ? dt_w[b++] : acc_t(0));
    }
    t.mt_off.push_back(static_cast<int64_t>(t.mt_idx.size()));
  }
  return t;
}

// ------------------------------------------------------------------------------------------------
// Layout and dtype helpers
// ------------------------------------------------------------------------------------------------
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

// 16-bit <-> float conversions written as bit operations so the row loops vectorise.
inline float load_value(c10::BFloat16 v) { return std::bit_cast<float>(static_cast<uint32_t>(v.x) << 16); }
inline float load_value(c10::Half v) { return static_cast<float>(v); }
inline float load_value(float v) { return v; }
inline double load_value(double v) { return v; }
inline int8_t load_value(int8_t v) { return v; }

template <typename scalar_t, typename acc_t>
inline scalar_t store_value(acc_t v) {
  if constexpr (std::is_same_v<scalar_t, acc_t>) {
    return v;
  } else if constexpr (std::is_same_v<scalar_t, c10::BFloat16>) {
    // round to nearest even; NaN stays a (quiet) NaN
    const uint32_t u = std::bit_cast<uint32_t>(v);
    const uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
    const uint32_t nan = (u >> 16) | 0x40u;
    c10::BFloat16 out;
    out.x = static_cast<uint16_t>(v != v ? nan : rounded);
    return out;
  } else {
    return static_cast<scalar_t>(v);
  }
}

template <typename scalar_t, typename acc_t>
inline void load_row(const scalar_t* __restrict src, int64_t n, acc_t* __restrict dst) {
#pragma omp simd
  for (int64_t e = 0; e < n; ++e) dst[e] = load_value(src[e]);
}

template <typename scalar_t, typename acc_t>
inline void store_row(const acc_t* __restrict src, int64_t n, scalar_t* __restrict dst) {
  if constexpr (std::is_same_v<scalar_t, acc_t>) {
    std::memcpy(dst, src, sizeof(acc_t) * n);
  } else {
#pragma omp simd
    for (int64_t e = 0; e < n; ++e) dst[e] = store_value<scalar_t, acc_t>(src[e]);
  }
}

// Branch-free select (bit masks, so scalar remainder loops do not mispredict): s ? a : b.
template <typename acc_t>
inline acc_t select(bool s, acc_t a, acc_t b) {
  using bits_t = std::conditional_t<sizeof(acc_t) == 4, uint32_t, uint64_t>;
  const bits_t m = bits_t(0) - static_cast<bits_t>(s);
  return std::bit_cast<acc_t>((std::bit_cast<bits_t>(a) & m) | (std::bit_cast<bits_t>(b) & ~m));
}

template <typename code_t>
inline code_t select_code(bool s, code_t a, code_t b) {
  const code_t m = static_cast<code_t>(-static_cast<code_t>(s));
  return static_cast<code_t>((a & m) | (b & ~m));
}

// A winner code as wide as acc_t, for the vector loops that mix codes with acc_t arithmetic: the
// channels_last aggregation (narrowed to the int8 codes a row at a time) and the general backward's
// winner tests (widened once per plane). With int8 codes those loops ran 32 lanes wide, packing and
// spilling registers: measured forward 0.87x at r = 1.2 channels_last, backward 0.83-0.99x.
template <typename acc_t>
using wide_code_t = std::conditional_t<sizeof(acc_t) == 4, int32_t, int64_t>;

// ------------------------------------------------------------------------------------------------
// Forward
// ------------------------------------------------------------------------------------------------
// Vertical blend of lattice row k: row[w*Q + q] = w0 * x[i0, w, q] + w1 * x[i1, w, q].
template <typename scalar_t, typename acc_t>
inline void blend_row(const scalar_t* plane, const Axis<acc_t>& th, int64_t k, int64_t WQ, acc_t* __restrict row) {
  const scalar_t* __restrict r0 = plane + th.i0[k] * WQ;
  const scalar_t* __restrict r1 = plane + th.i1[k] * WQ;
  const acc_t a = th.w0[k], b = th.w1[k];
#pragma omp simd
  for (int64_t e = 0; e < WQ; ++e) row[e] = a * load_value(r0[e]) + b * load_value(r1[e]);
}

// Aggregate the 4 lattice values of a cell. max: same tie/NaN rule as max_pool2d (a later point
// wins if strictly greater or NaN), code = 2a + b of the winner; avg: row-major sum / 4.
template <typename acc_t, int64_t kMode, typename code_t = int8_t>
inline void aggregate(acc_t v00, acc_t v01, acc_t v10, acc_t v11, acc_t& out, code_t& code) {
  if (kMode == kMax) {
    acc_t best = v00;
    code_t c = 0;
    bool t = (v01 > best) | (v01 != v01);
    best = select(t, v01, best);
    c = select_code(t, code_t(1), c);
    t = (v10 > best) | (v10 != v10);
    best = select(t, v10, best);
    c = select_code(t, code_t(2), c);
    t = (v11 > best) | (v11 != v11);
    best = select(t, v11, best);
    c = select_code(t, code_t(3), c);
    out = best;
    code = c;
  } else {
    out = (((v00 + v01) + v10) + v11) / static_cast<acc_t>(4);
  }
}

// Horizontal resample of a (vertically blended) row R (W*Q) to lattice columns L (Lw*Q).
template <typename acc_t, bool kPlanar>
inline void resample_columns(const acc_t* __restrict R, const Axis<acc_t>& tw, int64_t Q_dyn, acc_t* __restrict L) {
  const int64_t Q = kPlanar ? 1 : Q_dyn, Lw = tw.lat_len;
  const int64_t* i0 = tw.i0.data();
  const int64_t* i1 = tw.i1.data();
  const acc_t* w0 = tw.w0.data();
  const acc_t* w1 = tw.w1.data();
  if constexpr (kPlanar) {
#pragma omp simd
    for (int64_t l = 0; l < Lw; ++l) L[l] = w0[l] * R[i0[l]] + w1[l] * R[i1[l]];
  } else {
    for (int64_t l = 0; l < Lw; ++l) {
      const acc_t a = w0[l], b = w1[l];
      const acc_t* __restrict A = R + i0[l] * Q;
      const acc_t* __restrict B = R + i1[l] * Q;
      acc_t* __restrict out = L + l * Q;
#pragma omp simd
      for (int64_t q = 0; q < Q; ++q) out[q] = a * A[q] + b * B[q];
    }
  }
}

// One output row from the two lattice rows La (k = 2i) and Lb (k = 2i+1), both (2*Wo)*Q long.
template <typename acc_t, int64_t kMode, bool kPlanar>
inline void aggregate_row(const acc_t* __restrict La, const acc_t* __restrict Lb, int64_t Wo, int64_t Q_dyn,
                          acc_t* __restrict orow, int8_t* __restrict crow, wide_code_t<acc_t>* __restrict wide) {
  int8_t unused = 0;
  if constexpr (kPlanar) {
#pragma omp simd
    for (int64_t j = 0; j < Wo; ++j)
      aggregate<acc_t, kMode>(La[2 * j], La[2 * j + 1], Lb[2 * j], Lb[2 * j + 1], orow[j],
                              kMode == kMax ? crow[j] : unused);
  } else {
    using code_t = wide_code_t<acc_t>;  // see resample_aggregate_row
    code_t unused_wide = 0;
    const int64_t Q = Q_dyn;
    for (int64_t j = 0; j < Wo; ++j) {
      const acc_t *A0 = La + (2 * j) * Q, *A1 = La + (2 * j + 1) * Q;
      const acc_t *C0 = Lb + (2 * j) * Q, *C1 = Lb + (2 * j + 1) * Q;
      acc_t* o = orow + j * Q;
      code_t* c = kMode == kMax ? wide + j * Q : &unused_wide;
#pragma omp simd
      for (int64_t q = 0; q < Q; ++q)
        aggregate<acc_t, kMode, code_t>(A0[q], A1[q], C0[q], C1[q], o[q], kMode == kMax ? c[q] : unused_wide);
    }
    if constexpr (kMode == kMax) store_row<int8_t, code_t>(wide, Wo * Q, crow);
  }
}

// channels_last: horizontal resample and aggregation of one output row in one pass (same arithmetic
// as resample_columns + aggregate_row), written straight to the output; max: the codes go through
// `wide` (Wo * Q), then to crow.
template <typename scalar_t, typename acc_t, int64_t kMode>
inline void resample_aggregate_row(const acc_t* __restrict Ra, const acc_t* __restrict Rb, const Axis<acc_t>& tw,
                                   int64_t Wo, int64_t Q, scalar_t* __restrict orow, int8_t* __restrict crow,
                                   wide_code_t<acc_t>* __restrict wide) {
  using code_t = wide_code_t<acc_t>;
  code_t unused = 0;
  for (int64_t j = 0; j < Wo; ++j) {
    const int64_t l0 = 2 * j, l1 = 2 * j + 1;
    const acc_t a0 = tw.w0[l0], b0 = tw.w1[l0], a1 = tw.w0[l1], b1 = tw.w1[l1];
    const int64_t A0 = tw.i0[l0] * Q, B0 = tw.i1[l0] * Q, A1 = tw.i0[l1] * Q, B1 = tw.i1[l1] * Q;
    scalar_t* o = orow + j * Q;
    code_t* c = kMode == kMax ? wide + j * Q : &unused;
#pragma omp simd
    for (int64_t q = 0; q < Q; ++q) {
      const acc_t v00 = a0 * Ra[A0 + q] + b0 * Ra[B0 + q];
      const acc_t v01 = a1 * Ra[A1 + q] + b1 * Ra[B1 + q];
      const acc_t v10 = a0 * Rb[A0 + q] + b0 * Rb[B0 + q];
      const acc_t v11 = a1 * Rb[A1 + q] + b1 * Rb[B1 + q];
      acc_t v;
      aggregate<acc_t, kMode, code_t>(v00, v01, v10, v11, v, kMode == kMax ? c[q] : unused);
      o[q] = store_value<scalar_t, acc_t>(v);
    }
  }
  if constexpr (kMode == kMax) store_row<int8_t, code_t>(wide, Wo * Q, crow);
}

template <typename scalar_t, typename acc_t, int64_t kMode, bool kIdH, bool kIdW, bool kPlanar>
void forward_loop(const at::Tensor& x, at::Tensor& out, at::Tensor& codes, const Axis<acc_t>& th,
                  const Axis<acc_t>& tw) {
  constexpr bool kNative = std::is_same_v<scalar_t, acc_t>;
  const Layout lay = layout_of(x);
  const int64_t H = x.size(2), W = x.size(3), Ho = out.size(2), Wo = out.size(3);
  const int64_t P = lay.P, Q = lay.Q, WQ = W * Q, LQ = 2 * Wo * Q;
  const scalar_t* xd = x.const_data_ptr<scalar_t>();
  scalar_t* od = out.mutable_data_ptr<scalar_t>();
  int8_t* cd = kMode == kMax ? codes.mutable_data_ptr<int8_t>() : nullptr;
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(1, 3 * LQ + 2 * WQ));
  at::parallel_for(0, P * Ho, grain, [&](int64_t begin, int64_t end) {
    constexpr bool kDirectRows = kIdH && kNative;
    std::vector<acc_t> row_a(kDirectRows ? 0 : WQ), row_b(kDirectRows ? 0 : WQ);
    // Planar rows are short: pad them to whole vectors (aggregated into scratch, then copied) so
    // the aggregation never runs a scalar remainder loop.
    constexpr bool kPadded = kPlanar && !kIdW;
    constexpr bool kBuffered = kPadded || !kNative;
    const int64_t Wo_pad = kPadded ? (Wo + 15) / 16 * 16 : Wo;
    std::vector<acc_t> lat_a(kIdW || !kPlanar ? 0 : 2 * Wo_pad * Q, 0), lat_b(kIdW || !kPlanar ? 0 : 2 * Wo_pad * Q, 0);
    std::vector<acc_t> out_buf(kBuffered ? Wo_pad * Q : 0);
    std::vector<int8_t> code_buf(kPadded ? Wo_pad : 0);
    std::vector<wide_code_t<acc_t>> wide_codes(kMode == kMax && !kPlanar ? Wo * Q : 0);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t p = task / Ho, i = task % Ho;
      const scalar_t* plane = xd + p * H * WQ;
      const acc_t *Ra, *Rb;
      if constexpr (kDirectRows) {
        Ra = reinterpret_cast<const acc_t*>(plane + (2 * i) * WQ);
        Rb = reinterpret_cast<const acc_t*>(plane + (2 * i + 1) * WQ);
      } else if constexpr (kIdH) {
        load_row(plane + (2 * i) * WQ, WQ, row_a.data());
        load_row(plane + (2 * i + 1) * WQ, WQ, row_b.data());
        Ra = row_a.data();
        Rb = row_b.data();
      } else {
        blend_row(plane, th, 2 * i, WQ, row_a.data());
        blend_row(plane, th, 2 * i + 1, WQ, row_b.data());
        Ra = row_a.data();
        Rb = row_b.data();
      }
      if constexpr (!kIdW && !kPlanar) {
        resample_aggregate_row<scalar_t, acc_t, kMode>(Ra, Rb, tw, Wo, Q, od + (p * Ho + i) * Wo * Q,
                                                       cd ? cd + (p * Ho + i) * Wo * Q : nullptr, wide_codes.data());
        continue;
      }
      if constexpr (!kIdW) {
        resample_columns<acc_t, kPlanar>(Ra, tw, Q, lat_a.data());
        resample_columns<acc_t, kPlanar>(Rb, tw, Q, lat_b.data());
        Ra = lat_a.data();
        Rb = lat_b.data();
      }
      const int64_t o = (p * Ho + i) * Wo * Q;
      if constexpr (kBuffered) {
        aggregate_row<acc_t, kMode, kPlanar>(Ra, Rb, Wo_pad, Q, out_buf.data(),
                                             kPadded ? code_buf.data() : (cd ? cd + o : nullptr), wide_codes.data());
        store_row<scalar_t, acc_t>(out_buf.data(), Wo * Q, od + o);
        if (kPadded && cd) std::memcpy(cd + o, code_buf.data(), Wo);
      } else {
        aggregate_row<acc_t, kMode, kPlanar>(Ra, Rb, Wo, Q, reinterpret_cast<acc_t*>(od + o), cd ? cd + o : nullptr,
                                             wide_codes.data());
      }
    }
  });
}

// ------------------------------------------------------------------------------------------------
// NCHW in blocks of planes
// ------------------------------------------------------------------------------------------------
// An NCHW tensor with a resampled column axis runs the channels_last loops on blocks of kBlock
// consecutive planes (p = n*C + c) transposed to (H, W, kBlock) acc_t scratch: the column taps then
// become vector loops over the block instead of scalar gathers along a row. Every element goes through
// the arithmetic of the channels_last path, so both layouts stay bit-identical.
constexpr int64_t kBlock = 64;  // measured (NCHW r = 1.2): 16 -> 32 -> 64 faster, 128 no better

// One 8 x 8 tile: dst[c * ds + r] = src[r * ss + c].
inline void transpose8x8(const float* __restrict src, int64_t ss, float* __restrict dst, int64_t ds) {
#if defined(__AVX__)
  __m256 r[8], t[8];
  for (int k = 0; k < 8; ++k) r[k] = _mm256_loadu_ps(src + k * ss);
  for (int k = 0; k < 8; k += 2) {
    t[k] = _mm256_unpacklo_ps(r[k], r[k + 1]);
    t[k + 1] = _mm256_unpackhi_ps(r[k], r[k + 1]);
  }
  for (int k = 0; k < 8; k += 4) {
    r[k] = _mm256_shuffle_ps(t[k], t[k + 2], _MM_SHUFFLE(1, 0, 1, 0));
    r[k + 1] = _mm256_shuffle_ps(t[k], t[k + 2], _MM_SHUFFLE(3, 2, 3, 2));
    r[k + 2] = _mm256_shuffle_ps(t[k + 1], t[k + 3], _MM_SHUFFLE(1, 0, 1, 0));
    r[k + 3] = _mm256_shuffle_ps(t[k + 1], t[k + 3], _MM_SHUFFLE(3, 2, 3, 2));
  }
  for (int k = 0; k < 4; ++k) {
    _mm256_storeu_ps(dst + k * ds, _mm256_permute2f128_ps(r[k], r[k + 4], 0x20));
    _mm256_storeu_ps(dst + (k + 4) * ds, _mm256_permute2f128_ps(r[k], r[k + 4], 0x31));
  }
#else
  for (int64_t r = 0; r < 8; ++r)
    for (int64_t c = 0; c < 8; ++c) dst[c * ds + r] = src[r * ss + c];
#endif
}

// Bytes: the 8 rows as 64-bit words, blocks of 4, 2, 1 bytes swapped between word pairs.
inline void transpose8x8(const int8_t* __restrict src, int64_t ss, int8_t* __restrict dst, int64_t ds) {
  uint64_t a[8];
  for (int k = 0; k < 8; ++k) std::memcpy(&a[k], src + k * ss, 8);
  auto stage = [&](int d, int shift, uint64_t m) {
    for (int r = 0; r < 8; ++r) {
      if ((r / d) % 2) continue;
      const uint64_t x = a[r], y = a[r + d];
      a[r] = (x & m) | ((y & m) << shift);
      a[r + d] = ((x >> shift) & m) | (y & ~m);
    }
  };
  stage(4, 32, 0x00000000FFFFFFFFull);
  stage(2, 16, 0x0000FFFF0000FFFFull);
  stage(1, 8, 0x00FF00FF00FF00FFull);
  for (int k = 0; k < 8; ++k) std::memcpy(dst + k * ds, &a[k], 8);
}

// dst[c * ds + r] = convert(src[r * ss + c]) for r < rows, c < cols: 8 x 8 tiles (same-type float or
// int8 copies), scalar elsewhere.
template <typename src_t, typename dst_t, typename Convert>
inline void transpose_matrix(const src_t* __restrict src, int64_t ss, int64_t rows, int64_t cols,
                             dst_t* __restrict dst, int64_t ds, Convert convert) {
  constexpr bool kTiles = std::is_same_v<src_t, dst_t> && (std::is_same_v<src_t, float> || std::is_same_v<src_t, int8_t>);
  const int64_t r8 = kTiles ? rows / 8 * 8 : 0, c8 = kTiles ? cols / 8 * 8 : 0;
  if constexpr (kTiles) {
    for (int64_t c0 = 0; c0 < c8; c0 += 8)
      for (int64_t r0 = 0; r0 < r8; r0 += 8) transpose8x8(src + r0 * ss + c0, ss, dst + c0 * ds + r0, ds);
  }
  for (int64_t c = 0; c < cols; ++c) {
    for (int64_t r = c < c8 ? r8 : 0; r < rows; ++r) dst[c * ds + r] = convert(src[r * ss + c]);
  }
}

// dst[e * Q + q] = src[q * n + e]: Q planes of n elements as one (n, Q) block (converted to dst_t).
template <typename src_t, typename dst_t>
inline void planes_to_block(const src_t* __restrict src, int64_t n, int64_t Q, dst_t* __restrict dst) {
  transpose_matrix(src, n, Q, n, dst, Q, [](src_t v) { return static_cast<dst_t>(load_value(v)); });
}

// The inverse: dst[q * n + e] = src[e * Q + q], stored as scalar_t.
template <typename scalar_t, typename src_t>
inline void block_to_planes(const src_t* __restrict src, int64_t n, int64_t Q, scalar_t* __restrict dst) {
  transpose_matrix(src, Q, n, Q, dst, n, [](src_t v) { return store_value<scalar_t, src_t>(v); });
}

// Forward of an NCHW tensor in transposed blocks (rows blended as in forward_loop, then
// resample_aggregate_row over the block's channels).
template <typename scalar_t, typename acc_t, int64_t kMode, bool kIdH>
void forward_blocked(const at::Tensor& x, at::Tensor& out, at::Tensor& codes, const Axis<acc_t>& th,
                     const Axis<acc_t>& tw) {
  const int64_t P = x.size(0) * x.size(1), H = x.size(2), W = x.size(3), Ho = out.size(2), Wo = out.size(3);
  const int64_t HW = H * W, HoWo = Ho * Wo;
  const scalar_t* xd = x.const_data_ptr<scalar_t>();
  scalar_t* od = out.mutable_data_ptr<scalar_t>();
  int8_t* cd = kMode == kMax ? codes.mutable_data_ptr<int8_t>() : nullptr;
  const int64_t blocks = (P + kBlock - 1) / kBlock;
  at::parallel_for(0, blocks, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> xt(HW * kBlock), row_a(kIdH ? 0 : W * kBlock), row_b(kIdH ? 0 : W * kBlock);
    std::vector<acc_t> ot(HoWo * kBlock);
    std::vector<int8_t> ct(kMode == kMax ? HoWo * kBlock : 0);
    std::vector<wide_code_t<acc_t>> wide_codes(kMode == kMax ? Wo * kBlock : 0);
    for (int64_t blk = begin; blk < end; ++blk) {
      const int64_t p0 = blk * kBlock, Q = std::min(kBlock, P - p0), WQ = W * Q;
      planes_to_block(xd + p0 * HW, HW, Q, xt.data());
      for (int64_t i = 0; i < Ho; ++i) {
        const acc_t *Ra, *Rb;
        if constexpr (kIdH) {
          Ra = xt.data() + (2 * i) * WQ;
          Rb = Ra + WQ;
        } else {
          blend_row(xt.data(), th, 2 * i, WQ, row_a.data());
          blend_row(xt.data(), th, 2 * i + 1, WQ, row_b.data());
          Ra = row_a.data();
          Rb = row_b.data();
        }
        resample_aggregate_row<acc_t, acc_t, kMode>(Ra, Rb, tw, Wo, Q, ot.data() + i * Wo * Q,
                                                    kMode == kMax ? ct.data() + i * Wo * Q : nullptr,
                                                    wide_codes.data());
      }
      block_to_planes<scalar_t, acc_t>(ot.data(), HoWo, Q, od + p0 * HoWo);
      if (kMode == kMax) block_to_planes<int8_t, int8_t>(ct.data(), HoWo, Q, cd + p0 * HoWo);
    }
  });
}

template <typename scalar_t, int64_t kMode>
void forward_impl(const at::Tensor& x, at::Tensor& out, at::Tensor& codes) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t H = x.size(2), W = x.size(3), Ho = out.size(2), Wo = out.size(3);
  const auto th = make_axis<acc_t>(H, Ho, static_cast<double>(Ho));
  const auto tw = make_axis<acc_t>(W, Wo, static_cast<double>(Wo));
  const bool id_h = th.identity, id_w = tw.identity, planar = layout_of(x).Q == 1;
#define POOLARCH_FWD(IH, IW, PL) forward_loop<scalar_t, acc_t, kMode, IH, IW, PL>(x, out, codes, th, tw)
  if (planar) {
    if (id_h && id_w) POOLARCH_FWD(true, true, true);
    else if (id_w) POOLARCH_FWD(false, true, true);
    else if (id_h) forward_blocked<scalar_t, acc_t, kMode, true>(x, out, codes, th, tw);
    else forward_blocked<scalar_t, acc_t, kMode, false>(x, out, codes, th, tw);
  } else {
    if (id_h && id_w) POOLARCH_FWD(true, true, false);
    else if (id_w) POOLARCH_FWD(false, true, false);
    else if (id_h) POOLARCH_FWD(true, false, false);
    else POOLARCH_FWD(false, false, false);
  }
#undef POOLARCH_FWD
}

// ------------------------------------------------------------------------------------------------
// Backward
// ------------------------------------------------------------------------------------------------
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

// Gradient reaching query point (2i+a, 2j+b) of a cell with output gradient g and winner code c:
// g where the point won the max (c == point = 2a + b), else 0; g / 4 for avg.
template <typename acc_t, int64_t kMode, typename code_t = int8_t>
inline acc_t point_grad(acc_t g, code_t c, code_t point) {
  if constexpr (kMode == kMax) return select(c == point, g, acc_t(0));
  else return g / static_cast<acc_t>(4);
}

// Expanded gradient of lattice row 2i+a (length 2*Wo*Q) from the output row (length Wo*Q).
template <typename scalar_t, typename acc_t, int64_t kMode, bool kPlanar>
inline void expand_grad_row(const scalar_t* __restrict go, const int8_t* __restrict co, int64_t Wo, int64_t Q_dyn,
                            int64_t a, acc_t* __restrict G) {
  const int8_t p0 = static_cast<int8_t>(2 * a), p1 = static_cast<int8_t>(2 * a + 1);
  auto cell = [&](int64_t j, int64_t q, int64_t Q) {
    const acc_t g = load_value(go[j * Q + q]);
    const int8_t c = kMode == kMax ? co[j * Q + q] : int8_t(0);
    G[(2 * j) * Q + q] = point_grad<acc_t, kMode>(g, c, p0);
    G[(2 * j + 1) * Q + q] = point_grad<acc_t, kMode>(g, c, p1);
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

// Rows of one plane as acc_t: the plane itself when scalar_t == acc_t, else converted into `buffer`.
template <typename scalar_t, typename acc_t>
inline const acc_t* plane_as_acc(const scalar_t* plane, int64_t n, std::vector<acc_t>& buffer) {
  if constexpr (std::is_same_v<scalar_t, acc_t>) {
    return plane;
  } else {
    buffer.resize(n);
    load_row(plane, n, buffer.data());
    return buffer.data();
  }
}

// Backward when both axes are the identity (r = 1/2 on even sizes): every input element belongs to
// exactly one cell, so the input gradient of lattice row k is written (not accumulated) as
// G[e] = (point e won the max, or avg) ? g : 0. Every lattice point is a kink, so the size-gradient
// terms use the central slopes: sum_e G[e] (x[k+1] - x[k-1])[e] f_h[k] and
// sum_e G[e] (x[column+1] - x[column-1])[e] f_w[column] (indices clamped at the borders; f holds 1/2).
template <typename scalar_t, typename acc_t, int64_t kMode, bool kInputGrad, bool kSizeGrad, bool kPlanar>
void backward_identity(const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& codes,
                       at::Tensor& grad_x, const Axis<acc_t>& th, const Axis<acc_t>& tw, double* grad_sizes) {
  constexpr bool kNative = std::is_same_v<scalar_t, acc_t>;
  const Layout lay = layout_of(x);
  const int64_t H = x.size(2), W = x.size(3), Ho = grad_out.size(2), Wo = grad_out.size(3);
  const int64_t P = lay.P, Q = lay.Q, WQ = W * Q;
  const scalar_t* xd = x.const_data_ptr<scalar_t>();
  const scalar_t* god = grad_out.const_data_ptr<scalar_t>();
  const int8_t* cd = kMode == kMax ? codes.const_data_ptr<int8_t>() : nullptr;
  scalar_t* gxd = kInputGrad ? grad_x.mutable_data_ptr<scalar_t>() : nullptr;
  const int64_t tasks = P * Ho;
  std::vector<double> fw(WQ);
  for (int64_t e = 0; e < WQ; ++e) fw[e] = tw.f[e / Q];
  constexpr int64_t kFlushEvery = 8;  // output rows summed in acc_t before adding to double
  std::vector<double> partial(kSizeGrad ? 2 * tasks : 0, 0.0);  // slot of each chunk's first task
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(1, 2 * WQ));
  at::parallel_for(0, tasks, grain, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> buffer((kInputGrad && kNative) ? 0 : WQ);
    std::vector<acc_t> rows(kNative || !kSizeGrad ? 0 : 4 * WQ);  // x rows 2i-1 .. 2i+2 as acc_t
    std::vector<acc_t> acc_h(kSizeGrad ? WQ : 0, 0), acc_w(kSizeGrad ? WQ : 0, 0);
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
      const int64_t lo = std::max<int64_t>(2 * i - 1, 0);
      auto row = [&](int64_t h) -> const acc_t* {
        if constexpr (kNative) return reinterpret_cast<const acc_t*>(xp + h * WQ);
        else return rows.data() + (h - lo) * WQ;
      };
      if constexpr (!kNative && kSizeGrad) {
        const int64_t hi = std::min<int64_t>(2 * i + 2, H - 1);
        load_row(xp + lo * WQ, (hi - lo + 1) * WQ, rows.data());
      }
      for (int64_t a = 0; a < 2; ++a) {
        const int64_t k = 2 * i + a;
        acc_t* G = (kInputGrad && kNative) ? reinterpret_cast<acc_t*>(gxd + p * H * WQ + k * WQ) : buffer.data();
        expand_grad_row<scalar_t, acc_t, kMode, kPlanar>(go, co, Wo, Q, a, G);
        if constexpr (kInputGrad && !kNative) store_row<scalar_t, acc_t>(G, WQ, gxd + p * H * WQ + k * WQ);
        if constexpr (kSizeGrad) {
          const acc_t* __restrict xs0 = row(th.s0[k]);
          const acc_t* __restrict xs1 = row(th.s1[k]);
          const acc_t* __restrict xk = row(k);
          const acc_t fh = static_cast<acc_t>(th.f[k]);
          acc_t* __restrict ah = acc_h.data();
          acc_t* __restrict aw = acc_w.data();
#pragma omp simd
          for (int64_t e = 0; e < WQ; ++e) ah[e] += (G[e] * (xs1[e] - xs0[e])) * fh;
          // central column differences, one-sided halves at the two border columns (W >= 2 here)
#pragma omp simd
          for (int64_t e = 0; e < Q; ++e) aw[e] += G[e] * (xk[e + Q] - xk[e]);
#pragma omp simd
          for (int64_t e = Q; e < WQ - Q; ++e) aw[e] += G[e] * (xk[e + Q] - xk[e - Q]);
#pragma omp simd
          for (int64_t e = WQ - Q; e < WQ; ++e) aw[e] += G[e] * (xk[e] - xk[e - Q]);
        }
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

// out[j*Q + q] = sum over the transposed list of input index j: weight * src[l*Q + q].
template <typename acc_t>
inline void gather_transposed(const acc_t* __restrict src, const std::vector<int64_t>& off,
                              const std::vector<int64_t>& idx, const std::vector<acc_t>& wt, int64_t j_begin,
                              int64_t j_end, int64_t Q_dyn, acc_t* __restrict out) {
  const int64_t* o = off.data();
  const int64_t* ix = idx.data();
  const acc_t* w = wt.data();
  {
    // One vector loop per column for the common tap counts (1, 2, 3): a loop over the entries around
    // the channel loop was compiled (unroll-and-jam) into a scalar loop. Summation order: the list
    // order, starting from 0.
    const int64_t Q = Q_dyn;
    const acc_t zero = 0;
    for (int64_t j = j_begin; j < j_end; ++j) {
      acc_t* __restrict dst = out + j * Q;
      const int64_t eb = o[j], n = o[j + 1] - eb;
      if (n == 0) {
#pragma omp simd
        for (int64_t q = 0; q < Q; ++q) dst[q] = zero;
        continue;
      }
      const acc_t a = w[eb];
      const acc_t* __restrict s0 = src + ix[eb] * Q;
      if (n == 1) {
#pragma omp simd
        for (int64_t q = 0; q < Q; ++q) dst[q] = zero + a * s0[q];
        continue;
      }
      const acc_t b = w[eb + 1];
      const acc_t* __restrict s1 = src + ix[eb + 1] * Q;
      if (n == 2) {
#pragma omp simd
        for (int64_t q = 0; q < Q; ++q) dst[q] = (zero + a * s0[q]) + b * s1[q];
        continue;
      }
      const acc_t c = w[eb + 2];
      const acc_t* __restrict s2 = src + ix[eb + 2] * Q;
#pragma omp simd
      for (int64_t q = 0; q < Q; ++q) dst[q] = ((zero + a * s0[q]) + b * s1[q]) + c * s2[q];
      for (int64_t e = eb + 3; e < eb + n; ++e) {
        const acc_t d = w[e];
        const acc_t* __restrict s3 = src + ix[e] * Q;
#pragma omp simd
        for (int64_t q = 0; q < Q; ++q) dst[q] += d * s3[q];
      }
    }
  }
}

// Per-thread scratch of the general backward. V, P: the gradients of the lattice rows that tap one
// input row, combined with the interpolation and with the slope weights (LQ each); acc_h, acc_w: one
// input row's size-gradient sums per channel (Q).
template <typename acc_t>
struct GeneralScratch {
  std::vector<acc_t> V, P, acc_h, acc_w;
  std::vector<double> sum_h, sum_w;  // the plane's size-gradient sums per channel
  std::vector<wide_code_t<acc_t>> codes;  // the plane's winner codes, widened (max)
  GeneralScratch(int64_t LQ, int64_t Q, bool size_grad, int64_t plane_cells)
      : V(LQ), P(size_grad ? LQ : 0), acc_h(size_grad ? Q : 0), acc_w(size_grad ? Q : 0), sum_h(size_grad ? Q : 0),
        sum_w(size_grad ? Q : 0), codes(plane_cells) {}
};

// V (=, or += when !kFirstV) wv times the gradient of lattice row 2i+a, from output row i: go/co
// (Wo, Q); with kTwo also P (=, or += when !kFirstP) wp times it (one winner test serves both).
template <typename scalar_t, typename acc_t, int64_t kMode, bool kFirstV, bool kTwo = false, bool kFirstP = false>
inline void add_lattice_row_grad(const scalar_t* __restrict go, const wide_code_t<acc_t>* __restrict co, int64_t Wo,
                                 int64_t Q, int64_t a, acc_t wv, acc_t* __restrict V, acc_t wp = 0,
                                 acc_t* __restrict P = nullptr) {
  using code_t = wide_code_t<acc_t>;
  const code_t p0 = static_cast<code_t>(2 * a), p1 = static_cast<code_t>(2 * a + 1);
  for (int64_t j = 0; j < Wo; ++j) {
    const scalar_t* __restrict g = go + j * Q;
    const code_t* __restrict c = kMode == kMax ? co + j * Q : nullptr;
    acc_t* __restrict v0 = V + (2 * j) * Q;
    acc_t* __restrict v1 = v0 + Q;
    acc_t* __restrict u0 = kTwo ? P + (2 * j) * Q : nullptr;
    acc_t* __restrict u1 = kTwo ? u0 + Q : nullptr;
#pragma omp simd
    for (int64_t q = 0; q < Q; ++q) {
      const acc_t gv = load_value(g[q]);
      const code_t cq = kMode == kMax ? c[q] : code_t(0);
      const acc_t g0 = point_grad<acc_t, kMode, code_t>(gv, cq, p0), g1 = point_grad<acc_t, kMode, code_t>(gv, cq, p1);
      if constexpr (kFirstV) {
        v0[q] = wv * g0;
        v1[q] = wv * g1;
      } else {
        v0[q] += wv * g0;
        v1[q] += wv * g1;
      }
      if constexpr (kTwo && kFirstP) {
        u0[q] = wp * g0;
        u1[q] = wp * g1;
      } else if constexpr (kTwo) {
        u0[q] += wp * g0;
        u1[q] += wp * g1;
      }
    }
  }
}

// Backward of one (H, W, Q) plane (the transpose of the separable forward), one input row r at a
// time. With G_k the gradient of lattice row k (the cell's gradient at the point that won the max,
// else 0; a quarter of it for avg):
//   V = sum_k A_h[k, r] G_k,  P = sum_k D_h[k, r] G_k  (lattice width; D: the slope rows, see Axis),
//   grad_x[r] = V A_w (the transposed column lists),
//   d loss/d s_w += <V, x[r] D_w^T>,  d loss/d s_h += <P, x[r] A_w^T>  (two taps per lattice column).
// One pass: the winner test of a lattice row's gradient serves V and P. Every row of gp is written
// once (no zero fill, no read-modify-write); the size sums run in acc_t per input row and channel, then
// in double per channel, then over the channels.
// go/co: the plane's output gradient and winner codes, (Ho, Wo, Q); xp: the plane's input as acc_t.
template <typename scalar_t, typename acc_t, int64_t kMode, bool kInputGrad, bool kSizeGrad>
std::pair<double, double> backward_plane(const acc_t* xp, const scalar_t* go_plane, const int8_t* co_plane,
                                         acc_t* gp, int64_t H, int64_t W, int64_t Q, const Axis<acc_t>& th,
                                         const Axis<acc_t>& tw, GeneralScratch<acc_t>& s) {
  const int64_t WQ = W * Q, Wo = tw.lat_len / 2, WoQ = Wo * Q;
  acc_t* V = s.V.data();
  acc_t* P = kSizeGrad ? s.P.data() : nullptr;
  // the codes as wide as acc_t, so the winner tests run in acc_t-wide vector loops
  wide_code_t<acc_t>* codes = co_plane ? s.codes.data() : nullptr;
  if (codes) load_row(co_plane, th.lat_len / 2 * WoQ, codes);
  if constexpr (kSizeGrad) {
    std::fill(s.sum_h.begin(), s.sum_h.end(), 0.0);
    std::fill(s.sum_w.begin(), s.sum_w.end(), 0.0);
  }
  for (int64_t r = 0; r < H; ++r) {
    bool has_v = false, has_p = false;
    if constexpr (kSizeGrad) {
      for (int64_t t = th.mt_off[r]; t < th.mt_off[r + 1]; ++t) {
        const int64_t k = th.mt_idx[t];
        const scalar_t* go = go_plane + (k / 2) * WoQ;
        const wide_code_t<acc_t>* co = codes ? codes + (k / 2) * WoQ : nullptr;
        const acc_t wv = th.mt_wa[t], wp = th.mt_wd[t];
#define POOLARCH_ADD(FV, TWO, FP) \
  add_lattice_row_grad<scalar_t, acc_t, kMode, FV, TWO, FP>(go, co, Wo, Q, k % 2, wv, V, wp, P)
        if (wv != 0 && wp != 0) {
          if (!has_v && !has_p) POOLARCH_ADD(true, true, true);
          else if (!has_v) POOLARCH_ADD(true, true, false);
          else if (!has_p) POOLARCH_ADD(false, true, true);
          else POOLARCH_ADD(false, true, false);
          has_v = has_p = true;
        } else if (wv != 0) {
          if (!has_v) POOLARCH_ADD(true, false, false);
          else POOLARCH_ADD(false, false, false);
          has_v = true;
        } else {  // P alone: passed as the first target
          if (!has_p) add_lattice_row_grad<scalar_t, acc_t, kMode, true>(go, co, Wo, Q, k % 2, wp, P);
          else add_lattice_row_grad<scalar_t, acc_t, kMode, false>(go, co, Wo, Q, k % 2, wp, P);
          has_p = true;
        }
      }
    } else {
      for (int64_t t = th.it_off[r]; t < th.it_off[r + 1]; ++t) {
        const int64_t k = th.it_idx[t];
        const scalar_t* go = go_plane + (k / 2) * WoQ;
        const wide_code_t<acc_t>* co = codes ? codes + (k / 2) * WoQ : nullptr;
        const acc_t wv = th.it_w[t], wp = 0;
        if (!has_v) POOLARCH_ADD(true, false, false);
        else POOLARCH_ADD(false, false, false);
        has_v = true;
      }
#undef POOLARCH_ADD
    }
    if constexpr (kInputGrad) {
      acc_t* gx = gp + r * WQ;
      if (has_v) gather_transposed<acc_t>(V, tw.it_off, tw.it_idx, tw.it_w, 0, W, Q, gx);
      else std::fill(gx, gx + WQ, acc_t(0));
    }
    if constexpr (kSizeGrad) {
      if (!has_v && !has_p) continue;
      const acc_t* xr = xp + r * WQ;
      acc_t* __restrict ah = s.acc_h.data();
      acc_t* __restrict aw = s.acc_w.data();
      std::fill(ah, ah + Q, acc_t(0));
      std::fill(aw, aw + Q, acc_t(0));
      for (int64_t l = 0; l < 2 * Wo; ++l) {  // <V, x[r] D_w^T> and <P, x[r] A_w^T> at lattice width
        const acc_t* __restrict x0 = xr + tw.i0[l] * Q;
        const acc_t* __restrict x1 = xr + tw.i1[l] * Q;
        const acc_t* __restrict y0 = xr + tw.s0[l] * Q;
        const acc_t* __restrict y1 = xr + tw.s1[l] * Q;
        const acc_t w0 = tw.w0[l], w1 = tw.w1[l], f = static_cast<acc_t>(tw.f[l]);
        const acc_t* __restrict v = V + l * Q;
        const acc_t* __restrict u = P + l * Q;
        if (has_v && has_p) {
#pragma omp simd
          for (int64_t q = 0; q < Q; ++q) {
            aw[q] += v[q] * (f * (y1[q] - y0[q]));
            ah[q] += u[q] * (w0 * x0[q] + w1 * x1[q]);
          }
        } else if (has_v) {
#pragma omp simd
          for (int64_t q = 0; q < Q; ++q) aw[q] += v[q] * (f * (y1[q] - y0[q]));
        } else {
#pragma omp simd
          for (int64_t q = 0; q < Q; ++q) ah[q] += u[q] * (w0 * x0[q] + w1 * x1[q]);
        }
      }
      double* __restrict dh = s.sum_h.data();
      double* __restrict dw = s.sum_w.data();
#pragma omp simd
      for (int64_t q = 0; q < Q; ++q) {  // per channel (a vector loop, not one serial sum)
        dh[q] += static_cast<double>(ah[q]);
        dw[q] += static_cast<double>(aw[q]);
      }
    }
  }
  double sh = 0.0, sw = 0.0;
  for (int64_t q = 0; kSizeGrad && q < Q; ++q) {
    sh += s.sum_h[q];
    sw += s.sum_w[q];
  }
  return {sh, sw};
}

// General backward, channels_last: one (H, W, C) plane per sample (NCHW: backward_blocked).
template <typename scalar_t, typename acc_t, int64_t kMode, bool kInputGrad, bool kSizeGrad>
void backward_general(const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& codes,
                      at::Tensor& grad_x, const Axis<acc_t>& th, const Axis<acc_t>& tw, double* grad_sizes) {
  constexpr bool kNative = std::is_same_v<scalar_t, acc_t>;
  const Layout lay = layout_of(x);
  const int64_t H = x.size(2), W = x.size(3), Ho = grad_out.size(2), Wo = grad_out.size(3);
  const int64_t P = lay.P, Q = lay.Q, WQ = W * Q, LQ = 2 * Wo * Q;
  const scalar_t* xd = x.const_data_ptr<scalar_t>();
  const scalar_t* god = grad_out.const_data_ptr<scalar_t>();
  const int8_t* cd = kMode == kMax ? codes.const_data_ptr<int8_t>() : nullptr;
  scalar_t* gxd = kInputGrad ? grad_x.mutable_data_ptr<scalar_t>() : nullptr;
  std::vector<double> partial(kSizeGrad ? 2 * P : 0, 0.0);
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(1, 2 * Ho * (3 * LQ + 6 * WQ)));
  at::parallel_for(0, P, grain, [&](int64_t begin, int64_t end) {
    GeneralScratch<acc_t> scratch(LQ, Q, kSizeGrad, kMode == kMax ? Ho * Wo * Q : 0);
    std::vector<acc_t> xbuf, gbuf((kInputGrad && !kNative) ? H * WQ : 0);
    for (int64_t p = begin; p < end; ++p) {
      const acc_t* xp = kSizeGrad ? plane_as_acc<scalar_t, acc_t>(xd + p * H * WQ, H * WQ, xbuf) : nullptr;
      acc_t* gp = nullptr;
      if constexpr (kInputGrad) gp = kNative ? reinterpret_cast<acc_t*>(gxd + p * H * WQ) : gbuf.data();
      const auto [sh, sw] = backward_plane<scalar_t, acc_t, kMode, kInputGrad, kSizeGrad>(
          xp, god + p * Ho * Wo * Q, cd ? cd + p * Ho * Wo * Q : nullptr, gp, H, W, Q, th, tw, scratch);
      if constexpr (kInputGrad && !kNative) store_row<scalar_t, acc_t>(gp, H * WQ, gxd + p * H * WQ);
      if (kSizeGrad) {
        partial[2 * p] = sh;
        partial[2 * p + 1] = sw;
      }
    }
  });
  sum_partials(partial, grad_sizes);
}

// General backward of an NCHW tensor in blocks of kBlock planes transposed to (H, W, kBlock) acc_t
// scratch (see planes_to_block): the channels_last vector loops instead of per-column tap loops.
template <typename scalar_t, typename acc_t, int64_t kMode, bool kInputGrad, bool kSizeGrad>
void backward_blocked(const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& codes,
                      at::Tensor& grad_x, const Axis<acc_t>& th, const Axis<acc_t>& tw, double* grad_sizes) {
  const int64_t P = x.size(0) * x.size(1), H = x.size(2), W = x.size(3), Ho = grad_out.size(2),
                Wo = grad_out.size(3), HW = H * W, HoWo = Ho * Wo;
  const scalar_t* xd = x.const_data_ptr<scalar_t>();
  const scalar_t* god = grad_out.const_data_ptr<scalar_t>();
  const int8_t* cd = kMode == kMax ? codes.const_data_ptr<int8_t>() : nullptr;
  scalar_t* gxd = kInputGrad ? grad_x.mutable_data_ptr<scalar_t>() : nullptr;
  const int64_t blocks = (P + kBlock - 1) / kBlock;
  std::vector<double> partial(kSizeGrad ? 2 * blocks : 0, 0.0);
  at::parallel_for(0, blocks, 1, [&](int64_t begin, int64_t end) {
    GeneralScratch<acc_t> scratch(2 * Wo * kBlock, kBlock, kSizeGrad, kMode == kMax ? HoWo * kBlock : 0);
    std::vector<acc_t> xt(kSizeGrad ? HW * kBlock : 0), gt(HoWo * kBlock), gxt(kInputGrad ? HW * kBlock : 0);
    std::vector<int8_t> ct(kMode == kMax ? HoWo * kBlock : 0);
    for (int64_t blk = begin; blk < end; ++blk) {
      const int64_t p0 = blk * kBlock, Q = std::min(kBlock, P - p0);
      if (kSizeGrad) planes_to_block(xd + p0 * HW, HW, Q, xt.data());
      planes_to_block(god + p0 * HoWo, HoWo, Q, gt.data());
      if (kMode == kMax) planes_to_block(cd + p0 * HoWo, HoWo, Q, ct.data());
      const auto [sh, sw] = backward_plane<acc_t, acc_t, kMode, kInputGrad, kSizeGrad>(
          xt.data(), gt.data(), kMode == kMax ? ct.data() : nullptr, gxt.data(), H, W, Q, th, tw, scratch);
      if (kInputGrad) block_to_planes<scalar_t, acc_t>(gxt.data(), HW, Q, gxd + p0 * HW);
      if (kSizeGrad) {
        partial[2 * blk] = sh;
        partial[2 * blk + 1] = sw;
      }
    }
  });
  sum_partials(partial, grad_sizes);
}

template <typename scalar_t, bool kInputGrad, bool kSizeGrad>
void backward_dispatch(const at::Tensor& g, const at::Tensor& x, const at::Tensor& codes, at::Tensor& grad_x,
                       double* grad_sizes, int64_t mode) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t H = x.size(2), W = x.size(3), Ho = g.size(2), Wo = g.size(3);
  const auto th = make_axis<acc_t>(H, Ho, static_cast<double>(Ho));
  const auto tw = make_axis<acc_t>(W, Wo, static_cast<double>(Wo));
  const bool planar = layout_of(x).Q == 1;
  if (th.identity && tw.identity) {
#define POOLARCH_BWD(M, PL) \
  backward_identity<scalar_t, acc_t, M, kInputGrad, kSizeGrad, PL>(g, x, codes, grad_x, th, tw, grad_sizes)
    if (mode == kMax) {
      if (planar) POOLARCH_BWD(kMax, true); else POOLARCH_BWD(kMax, false);
    } else {
      if (planar) POOLARCH_BWD(kAvg, true); else POOLARCH_BWD(kAvg, false);
    }
#undef POOLARCH_BWD
    return;
  }
  if (planar) {  // NCHW: transposed blocks of planes
    if (mode == kMax) backward_blocked<scalar_t, acc_t, kMax, kInputGrad, kSizeGrad>(g, x, codes, grad_x, th, tw, grad_sizes);
    else backward_blocked<scalar_t, acc_t, kAvg, kInputGrad, kSizeGrad>(g, x, codes, grad_x, th, tw, grad_sizes);
    return;
  }
  if (mode == kMax) backward_general<scalar_t, acc_t, kMax, kInputGrad, kSizeGrad>(g, x, codes, grad_x, th, tw, grad_sizes);
  else backward_general<scalar_t, acc_t, kAvg, kInputGrad, kSizeGrad>(g, x, codes, grad_x, th, tw, grad_sizes);
}

void check_args(const at::Tensor& x, int64_t out_h, int64_t out_w, int64_t mode) {
  TORCH_CHECK(x.device().is_cpu(), "poolarch dynopool kernel: input must be on the CPU");
  TORCH_CHECK(x.dim() == 4, "poolarch dynopool kernel: input must be 4-d (N, C, H, W), got ", x.dim(), "-d");
  TORCH_CHECK(x.size(2) > 0 && x.size(3) > 0, "poolarch dynopool kernel: empty spatial size");
  TORCH_CHECK(out_h > 0 && out_w > 0, "poolarch dynopool kernel: output size must be positive");
  TORCH_CHECK(mode == kMax || mode == kAvg, "poolarch dynopool kernel: mode must be 0 (max) or 1 (avg)");
  const auto t = x.scalar_type();
  TORCH_CHECK(t == at::kFloat || t == at::kDouble || t == at::kBFloat16 || t == at::kHalf,
              "poolarch dynopool kernel: dtype must be float32, float64, bfloat16 or float16");
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
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "poolarch_dynopool2d_forward", [&] {
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
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "poolarch_dynopool2d_backward", [&] {
    if (input_grad && size_grad) backward_dispatch<scalar_t, true, true>(g, x, c, grad_x, gs, mode);
    else if (input_grad) backward_dispatch<scalar_t, true, false>(g, x, c, grad_x, gs, mode);
    else if (size_grad) backward_dispatch<scalar_t, false, true>(g, x, c, grad_x, gs, mode);
  });
  return {grad_x, grad_sizes};
}

// ------------------------------------------------------------------------------------------------
// Eager CPU autograd (poolarch.layers._dynopool_op.forward_eager)
// ------------------------------------------------------------------------------------------------
// poolarch::dynopool2d_backward, the Python custom op (poolarch/layers/_dynopool_op.py).
const c10::TypedOperatorHandle<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&,
                                                                   const at::Tensor&, c10::SymInt, bool, bool)>&
custom_op_backward() {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("poolarch::dynopool2d_backward", "")
                             .typed<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&,
                                                                       const at::Tensor&, c10::SymInt, bool, bool)>();
  return op;
}

// The autograd formula of the custom op poolarch::dynopool2d (its register_autograd), as a C++ node
// that calls the kernel directly: gradients to x and to the size surrogate. The custom op's Python
// dispatch and autograd wrapper cost ~0.2 ms per forward + backward, more than the kernel on small
// maps; this node costs what a built-in op's does. Same results bit for bit (tested).
struct DynOPoolFunction : public torch::autograd::Function<DynOPoolFunction> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, const at::Tensor& surrogate,
                            int64_t out_h, int64_t out_w, int64_t mode) {
    auto [out, codes] = dynopool2d_forward(x, out_h, out_w, mode);
    ctx->save_for_backward({x, codes});
    ctx->saved_data["mode"] = mode;
    ctx->saved_data["surrogate_dtype"] = surrogate.scalar_type();
    ctx->set_materialize_grads(false);
    return out;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const bool need_x = ctx->needs_input_grad(0), need_size = ctx->needs_input_grad(1);
    torch::autograd::variable_list result(5);
    if (!grads[0].defined() || !(need_x || need_size)) return result;
    const auto saved = ctx->get_saved_variables();
    const int64_t mode = ctx->saved_data["mode"].toInt();
    // create_graph=True: the custom op's backward, whose outputs carry its autograd (an error on a
    // second backward, as on the custom op's own path) instead of silently not requiring grad
    auto [grad_x, grad_sizes] = at::GradMode::is_enabled()
                                    ? custom_op_backward().call(grads[0], saved[0], saved[1], mode, need_x, need_size)
                                    : dynopool2d_backward(grads[0], saved[0], saved[1], mode, need_x, need_size);
    if (need_x) result[0] = grad_x;
    if (need_size) result[1] = grad_sizes.to(ctx->saved_data["surrogate_dtype"].toScalarType());
    return result;
  }
};

at::Tensor dynopool2d_eager_autograd(const at::Tensor& x, const at::Tensor& surrogate, int64_t out_h, int64_t out_w,
                                     int64_t mode) {
  return DynOPoolFunction::apply(x, surrogate, out_h, out_w, mode);
}

at::Tensor dynopool2d_eager_cpu(const at::Tensor& x, const at::Tensor& surrogate, int64_t out_h, int64_t out_w,
                                int64_t mode) {
  return std::get<0>(dynopool2d_forward(x, out_h, out_w, mode));
}

// ------------------------------------------------------------------------------------------------
// Eager layer call (poolarch.layers._dynopool_op.layer_forward_eager)
// ------------------------------------------------------------------------------------------------
// DynOPool2d's eager forward in one call: dynopool_output_size (poolarch/layers/dynopool.py) -- the
// rounded sizes and the straight-through surrogate (one node, SizeSurrogateFunction, with the same
// values and gradients bit for bit) -- then the kernel's autograd node. Measured per forward +
// backward of a DynOPool2d at (1, 64, 4, 4): 288 -> 210 us (forward alone 125 -> 58 us; MaxPool2d(2):
// 76 us), as much as the kernel's work on small maps.
// Declines (returns two undefined tensors, i.e. None, None) where the Python path must decide: alpha
// not 2 float32/float64 values in CPU memory (e.g. a torch.func wrapper), not positive and finite (the
// Python path raises its error), or a size below 1 or beyond the int range.
template <typename real_t>
bool rounded_sizes(const at::Tensor& alpha, const int64_t (&length)[2], double min_size, int64_t (&rounded)[2],
                   bool (&passes)[2]) {
  const at::Tensor a = alpha.contiguous();
  const real_t* av = a.const_data_ptr<real_t>();
  const real_t lower = static_cast<real_t>(min_size);
  for (int d = 0; d < 2; ++d) {
    if (!(std::isfinite(av[d]) && av[d] > 0)) return false;
    // in_size / alpha in real_t (correctly rounded, as the tensor division), clamped, then + 1/2 and floor
    const real_t v = static_cast<real_t>(length[d]) / av[d];
    // clamp's gradient mask (torch: 0 at the bound itself); true on every axis where the Python graph
    // has no clamp (it has one only if some v <= lower)
    passes[d] = v > lower;
    const real_t r = std::floor(std::max(v, lower) + static_cast<real_t>(0.5));
    if (!(r >= 1 && r < static_cast<real_t>(1LL << 31))) return false;
    rounded[d] = static_cast<int64_t>(r);
  }
  return true;
}

// The straight-through surrogate of dynopool_output_size as one autograd node instead of the graph
// in_size / alpha [-> clamp(min = min_size)] + (rounded - continuous) (two or three nodes). Value:
// exactly the rounded sizes (what that sum evaluates to). Gradient to alpha: that graph's, in alpha's
// dtype -- clamp's mask (input > min_size, where the clamp is in the graph), then DivBackward0's
// -g * ((in_size / alpha) / alpha) -- so the same bits. With create_graph the same ATen ops.
struct SizeSurrogateFunction : public torch::autograd::Function<SizeSurrogateFunction> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& alpha, int64_t length_h,
                            int64_t length_w, int64_t rounded_h, int64_t rounded_w, bool passes_h, bool passes_w) {
    ctx->save_for_backward({alpha});
    ctx->saved_data["length_h"] = length_h;
    ctx->saved_data["length_w"] = length_w;
    ctx->saved_data["passes_h"] = passes_h;
    ctx->saved_data["passes_w"] = passes_w;
    at::Tensor surrogate = at::empty({2}, alpha.options());
    AT_DISPATCH_FLOATING_TYPES(alpha.scalar_type(), "poolarch_dynopool_size_surrogate", [&] {
      surrogate.mutable_data_ptr<scalar_t>()[0] = static_cast<scalar_t>(rounded_h);
      surrogate.mutable_data_ptr<scalar_t>()[1] = static_cast<scalar_t>(rounded_w);
    });
    return surrogate;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    torch::autograd::variable_list result(7);
    if (!grads[0].defined()) return result;
    const at::Tensor alpha = ctx->get_saved_variables()[0];
    const int64_t length[2] = {ctx->saved_data["length_h"].toInt(), ctx->saved_data["length_w"].toInt()};
    const bool passes[2] = {ctx->saved_data["passes_h"].toBool(), ctx->saved_data["passes_w"].toBool()};
    const at::Tensor g = grads[0].to(alpha.scalar_type());
    if (at::GradMode::is_enabled()) {  // create_graph: differentiable ATen ops
      at::Tensor in_size = at::empty({2}, alpha.options()), mask = at::empty({2}, alpha.options().dtype(at::kBool));
      AT_DISPATCH_FLOATING_TYPES(alpha.scalar_type(), "poolarch_dynopool_size_surrogate_backward", [&] {
        for (int d = 0; d < 2; ++d) {
          in_size.mutable_data_ptr<scalar_t>()[d] = static_cast<scalar_t>(length[d]);
          mask.mutable_data_ptr<bool>()[d] = passes[d];
        }
      });
      const at::Tensor masked = at::where(mask, g, at::zeros({}, g.options()));
      result[0] = at::mul(at::neg(masked), at::div(at::div(in_size, alpha), alpha));
      return result;
    }
    const at::Tensor gc = g.contiguous(), ac = alpha.contiguous();
    at::Tensor grad_alpha = at::empty({2}, alpha.options());
    AT_DISPATCH_FLOATING_TYPES(alpha.scalar_type(), "poolarch_dynopool_size_surrogate_backward", [&] {
      for (int d = 0; d < 2; ++d) {
        const scalar_t a = ac.const_data_ptr<scalar_t>()[d];
        const scalar_t gd = passes[d] ? gc.const_data_ptr<scalar_t>()[d] : scalar_t(0);
        grad_alpha.mutable_data_ptr<scalar_t>()[d] = (-gd) * ((static_cast<scalar_t>(length[d]) / a) / a);
      }
    });
    result[0] = grad_alpha;
    return result;
  }
};

std::tuple<at::Tensor, at::Tensor> dynopool2d_layer_forward(const at::Tensor& x, const at::Tensor& alpha,
                                                            double min_size, int64_t mode) {
  const auto dtype = alpha.scalar_type();
  if (!alpha.device().is_cpu() || !alpha.has_storage() || alpha.numel() != 2 || x.dim() != 4 ||
      !(dtype == at::kFloat || dtype == at::kDouble))
    return {at::Tensor(), at::Tensor()};
  const int64_t length[2] = {x.size(2), x.size(3)};
  int64_t rounded[2];
  bool passes[2];
  const bool ok = dtype == at::kFloat ? rounded_sizes<float>(alpha, length, min_size, rounded, passes)
                                      : rounded_sizes<double>(alpha, length, min_size, rounded, passes);
  if (!ok) return {at::Tensor(), at::Tensor()};
  at::Tensor surrogate = SizeSurrogateFunction::apply(alpha.dim() == 1 ? alpha : alpha.reshape({2}), length[0],
                                                      length[1], rounded[0], rounded[1], passes[0], passes[1]);
  return {DynOPoolFunction::apply(x, surrogate, rounded[0], rounded[1], mode), surrogate};
}

}  // namespace
}  // namespace poolarch_dynopool

TORCH_LIBRARY(poolarch_dynopool, m) {
  m.def("forward(Tensor x, int out_h, int out_w, int mode) -> (Tensor, Tensor)");
  m.def("backward(Tensor grad_out, Tensor x, Tensor codes, int mode, bool input_grad, bool size_grad) -> (Tensor, Tensor)");
  m.def("forward_eager(Tensor x, Tensor surrogate, int out_h, int out_w, int mode) -> Tensor");
  m.def("layer_forward(Tensor x, Tensor alpha, float min_size, int mode) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(poolarch_dynopool, CPU, m) {
  m.impl("forward", &poolarch_dynopool::dynopool2d_forward);
  m.impl("backward", &poolarch_dynopool::dynopool2d_backward);
  m.impl("forward_eager", &poolarch_dynopool::dynopool2d_eager_cpu);
}

TORCH_LIBRARY_IMPL(poolarch_dynopool, Autograd, m) {
  m.impl("forward_eager", &poolarch_dynopool::dynopool2d_eager_autograd);
}

TORCH_LIBRARY_IMPL(poolarch_dynopool, CompositeImplicitAutograd, m) {
  m.impl("layer_forward", &poolarch_dynopool::dynopool2d_layer_forward);
}
