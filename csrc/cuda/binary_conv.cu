// Binary convolution on CUDA. Two exact paths, same results:
//   mma   implicit GEMM on the b1 tensor cores (mma.sync m16n8k256 AND+popc, the only b1 form on Hopper).
//         "01": acc = popc(x AND w+) with w+ = NOT w (bit 0 means +1), dot = 2 acc - popc(x).
//         "pm1": acc = popc(x AND w), dot = n - 2 popc(x) - 2 popc(w) + 4 acc, all over the in-frame taps
//         (per-pixel counts from a small kernel, per-filter counts per tap for border pixels).
//   popc  CUDA cores, one thread per output, __popc of XOR / AND words: for small problems.
// Choice: CMN_BINARY_CONV_PATH=mma|popc, default by problem size. The epilogue is shared (detail/epilogue).
#include "common/epilogue.h"
#include "common/validate.h"
#include "cuda/detail/epilogue.cuh"
#include "cuda/detail/shape.cuh"
#include "ops.h"

#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/sum.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

namespace cmn {
namespace {

using cuda::ConvShape;

__device__ __forceinline__ void pixel_of(const ConvShape& s, int64_t m, int& n, int& ho, int& wo) {
  wo = int(m % s.Wo);
  const int64_t q = m / s.Wo;
  ho = int(q % s.Ho);
  n = int(q / s.Ho);
}

__global__ void direct_kernel(const uint32_t* __restrict__ x, const uint32_t* __restrict__ w,
                              int32_t* __restrict__ acc, ConvShape s, int K, int C, bool pm1) {
  const int64_t total = s.M() * K;
  const int taps = s.KH * s.KW;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int k = int(i % K);
    int n, ho, wo;
    pixel_of(s, i / K, n, ho, wo);
    int32_t cnt = 0, xpop = 0, nvalid = 0;
    for (int kh = 0; kh < s.KH; ++kh) {
      const int hi = ho * s.sh - s.ph + kh * s.dh;
      for (int kw = 0; kw < s.KW; ++kw) {
        const int wi = wo * s.sw - s.pw + kw * s.dw;
        if (hi < 0 || hi >= s.H || wi < 0 || wi >= s.W) continue;  // off-frame taps count nothing
        ++nvalid;
        const uint32_t* xr = x + ((int64_t(n) * s.H + hi) * s.W + wi) * s.CW;
        const uint32_t* wr = w + (int64_t(k) * taps + kh * s.KW + kw) * s.CW;
        for (int c = 0; c < s.CW; ++c) {
          const uint32_t xv = __ldg(xr + c), wv = __ldg(wr + c);
          if (pm1) {
            cnt += __popc(xv ^ wv);  // tail bits are 0 in both
          } else {
            cnt += __popc(xv & ~wv);  // x tail bits are 0
            xpop += __popc(xv);
          }
        }
      }
    }
    acc[acc_index(s, K, i / K, k)] = pm1 ? nvalid * C - 2 * cnt : 2 * cnt - xpop;
  }
}

// Per output pixel: in-frame taps and popc of x over them.
__global__ void row_stats_kernel(const uint32_t* __restrict__ x, int32_t* __restrict__ xpop,
                                 int32_t* __restrict__ nvalid, ConvShape s) {
  for (int64_t m = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; m < s.M(); m += int64_t(gridDim.x) * blockDim.x) {
    int n, ho, wo;
    pixel_of(s, m, n, ho, wo);
    int32_t pop = 0, valid = 0;
    for (int kh = 0; kh < s.KH; ++kh) {
      const int hi = ho * s.sh - s.ph + kh * s.dh;
      for (int kw = 0; kw < s.KW; ++kw) {
        const int wi = wo * s.sw - s.pw + kw * s.dw;
        if (hi < 0 || hi >= s.H || wi < 0 || wi >= s.W) continue;
        ++valid;
        const uint32_t* xr = x + ((int64_t(n) * s.H + hi) * s.W + wi) * s.CW;
        for (int c = 0; c < s.CW; ++c) pop += __popc(__ldg(xr + c));
      }
    }
    xpop[m] = pop;
    nvalid[m] = valid;
  }
}

// Per filter and tap: popc of the weight bits ("pm1": the -1 weights), or the +1 weights as words ("01").
__global__ void weight_prep_kernel(const uint32_t* __restrict__ w, int32_t* __restrict__ tap_pop,
                                   uint32_t* __restrict__ w_plus, int64_t rows, int CW, int C) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < rows; i += int64_t(gridDim.x) * blockDim.x) {
    int32_t pop = 0;
    for (int c = 0; c < CW; ++c) {
      const uint32_t v = w[i * CW + c];
      pop += __popc(v);
      if (w_plus) {
        const int tail = C - c * 32;
        const uint32_t valid = tail >= 32 ? 0xFFFFFFFFu : ((1u << tail) - 1u);
        w_plus[i * CW + c] = ~v & valid;
      }
    }
    if (tap_pop) tap_pop[i] = pop;
  }
}

}  // namespace

at::Tensor binary_conv2d_cuda(const at::Tensor& x_bits, const at::Tensor& w_bits, int64_t in_channels,
                              at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                              std::string_view encoding, const EpilogueArgs& epi,
                              const std::optional<at::Tensor>& prepacked) {
  const auto plan = validate_binary_conv2d(x_bits, w_bits, in_channels, stride, padding, dilation, encoding);
  const auto& g = plan.g;
  const c10::cuda::CUDAGuard guard(x_bits.device());
  auto ep = Epilogue::make("cmn::binary_conv2d", epi, g.N, g.K, {g.HO, g.WO}, x_bits.options(), plan.enc);
  if (ep.out.numel() == 0) return ep.out;
  const auto stream = c10::cuda::getCurrentCUDAStream();
  const int64_t CW = ceil_div(g.C, 32);
  const bool pm1 = plan.enc == BitEncoding::PM1;
  const auto x = x_bits.contiguous(), w = w_bits.contiguous();
  const auto* xp = reinterpret_cast<const uint32_t*>(x.data_ptr<int32_t>());
  const auto* wp = reinterpret_cast<const uint32_t*>(w.data_ptr<int32_t>());
  const auto s = cuda::conv_shape(g, CW);
  auto acc = at::empty({g.N, g.K, s.P()}, x.options());
  cuda::BinaryFix fix;
  at::Tensor xpop, nvalid, tap_pop, w_total, w_plus;
  // below one CTA tile the tensor-core path is mostly padding
  if (!cuda::path_choice("CMN_BINARY_CONV_PATH", "mma", "popc", s.M() >= 128 && g.K >= 32)) {
    direct_kernel<<<cuda::grid_for(s.M() * g.K), 256, 0, stream>>>(xp, wp, acc.data_ptr<int32_t>(), s, int(g.K),
                                                                   int(g.C), pm1);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  } else {
    xpop = at::empty({s.M()}, x.options());
    nvalid = at::empty({s.M()}, x.options());
    row_stats_kernel<<<cuda::grid_for(s.M()), 256, 0, stream>>>(xp, xpop.data_ptr<int32_t>(),
                                                                 nvalid.data_ptr<int32_t>(), s);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    const int64_t taps = g.taps();
    if (pm1) tap_pop = at::empty({g.K, taps}, x.options());  // "pm1" needs the filter bit counts,
    else w_plus = at::empty_like(w);                         // "01" the +1 masks
    weight_prep_kernel<<<cuda::grid_for(g.K * taps), 256, 0, stream>>>(
        wp, pm1 ? tap_pop.data_ptr<int32_t>() : nullptr,
        pm1 ? nullptr : reinterpret_cast<uint32_t*>(w_plus.data_ptr<int32_t>()), g.K * taps, int(CW), int(g.C));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    const auto* w_operand = pm1 ? wp : reinterpret_cast<const uint32_t*>(w_plus.data_ptr<int32_t>());
    cuda::igemm(cuda::MmaKind::B1And, xp, w_operand, acc.data_ptr<int32_t>(), s, int(g.K), stream);
    fix.mode = pm1 ? cuda::BinaryFix::PM1 : cuda::BinaryFix::Zero1;
    fix.row_xpop = xpop.data_ptr<int32_t>();
    fix.row_nvalid = nvalid.data_ptr<int32_t>();
    if (pm1) {
      w_total = at::sum(tap_pop, {1}, false, at::kInt);
      fix.w_tap_pop = tap_pop.data_ptr<int32_t>();
      fix.w_total = w_total.data_ptr<int32_t>();
    }
    fix.C = int(g.C);
    fix.s = s;
  }
  cuda::run_epilogue(ep, acc, at::Tensor(), fix, stream);
  return ep.out;
}

}  // namespace cmn
