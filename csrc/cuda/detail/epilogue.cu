#include "cuda/detail/epilogue.cuh"
#include "cuda/detail/shape.cuh"

#include <c10/cuda/CUDAException.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace cmn::cuda {
namespace {

// The epilogue's description is the CPU's (Epilogue::view, cpu/kernels/job.h: plain data, device-usable), with
// the accumulator layout and the binary correction of this GEMM.
struct Params {
  cpu::EpiView v;
  const int32_t* acc;
  int64_t R, N;
  BinaryFix fix;
};

// row = n * P + pix; acc is [N, R, P] (cuda/detail/igemm.cuh)
__device__ __forceinline__ int32_t value(const Params& p, int64_t row, int64_t k) {
  const int64_t r = p.v.row_of_channel ? p.v.row_of_channel[k] : k;
  if (r < 0) return 0;
  const int64_t n = row / p.v.P, pix = row - n * p.v.P;
  const int32_t a = p.acc[(n * p.R + r) * p.v.P + pix];
  const BinaryFix& f = p.fix;
  if (f.mode == BinaryFix::PM1) {
    // sum (1 - 2 xb)(1 - 2 wb) over valid taps = n - 2 popc(x) - 2 popc(w) + 4 popc(x AND w)
    const int taps = f.s.KH * f.s.KW;
    const int32_t nvalid = f.row_nvalid[row];
    int32_t wpop = f.w_total[r];
    if (nvalid < taps) {  // border pixel: drop the filter bits of the taps outside the frame
      const int ho = int(pix / f.s.Wo), wo = int(pix % f.s.Wo);
      for (int kh = 0; kh < f.s.KH; ++kh) {
        const int hi = ho * f.s.sh - f.s.ph + kh * f.s.dh;
        for (int kw = 0; kw < f.s.KW; ++kw) {
          const int wi = wo * f.s.sw - f.s.pw + kw * f.s.dw;
          if (hi < 0 || hi >= f.s.H || wi < 0 || wi >= f.s.W) wpop -= f.w_tap_pop[r * taps + kh * f.s.KW + kw];
        }
      }
    }
    return nvalid * f.C - 2 * f.row_xpop[row] - 2 * wpop + 4 * a;
  }
  if (f.mode == BinaryFix::Zero1) return 2 * a - f.row_xpop[row];  // popc(x AND w+) - popc(x AND w-)
  return a;
}

__device__ __forceinline__ float residual_at(const Params& p, int64_t row, int64_t k) {
  const int64_t c = k - p.v.res_offset;
  if (c < 0 || c >= p.v.res_c) return 0.f;
  const int64_t n = row / p.v.P, pix = row - n * p.v.P, oy = pix / p.v.WO, ox = pix - oy * p.v.WO;
  const int64_t i = ((n * p.v.res_h + oy * p.v.res_stride) * p.v.res_w + ox * p.v.res_stride) * p.v.res_c + c;
  switch (p.v.res_kind) {
    case cpu::ResCode::F32: return static_cast<const float*>(p.v.res)[i];
    case cpu::ResCode::F16: return __half2float(static_cast<const __half*>(p.v.res)[i]);
    case cpu::ResCode::BF16: return __bfloat162float(static_cast<const __nv_bfloat16*>(p.v.res)[i]);
    case cpu::ResCode::S8: return __fmul_rn(float(static_cast<const int8_t*>(p.v.res)[i]), p.v.res_scale);
    default: return __fmul_rn(float(static_cast<const uint8_t*>(p.v.res)[i]), p.v.res_scale);
  }
}

// One rounding per operation, as on the CPU: explicit _rn intrinsics keep nvcc from fusing into an FMA.
__device__ __forceinline__ float affine(const Params& p, int64_t row, int64_t k) {
  float y = static_cast<float>(value(p, row, k));
  if (p.v.scale) y = __fmul_rn(y, p.v.scale[k]);
  if (p.v.bias) y = __fadd_rn(y, p.v.bias[k]);
  if (p.v.res_kind != cpu::ResCode::None) y = __fadd_rn(y, residual_at(p, row, k));
  if (p.v.relu) y = (y < 0.f) ? 0.f : y;  // the CPU's (y < 0 ? 0 : y), -0.0 included
  if (p.v.float_out) p.v.float_out[row * p.v.K + k] = y;
  return y;
}

__device__ __forceinline__ float quantize(const Params& p, float y) {
  const float s = __fdiv_rn(y, p.v.out_scale);
  float q = p.v.round_half_up ? floorf(__fadd_rn(s, 0.5f)) : rintf(s);  // rintf: half to even
  const float qmin = float(p.v.qmin), qmax = float(p.v.qmax);
  q = q < qmin ? qmin : q;
  q = q > qmax ? qmax : q;
  return q == q ? q : qmin;
}

template <typename Out, int KIND>  // KIND: 0 int, 1 float, 2 int8 / uint8
__global__ void values_kernel(Params p, Out* __restrict__ out) {
  const int64_t total = p.N * p.v.P * p.v.K;  // NHWC order: i = row * K + k
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t k = i % p.v.K, row = i / p.v.K;
    if constexpr (KIND == 0) {
      out[i] = value(p, row, k);
    } else {
      const float y = affine(p, row, k);
      if constexpr (KIND == 1) {
        if constexpr (std::is_same_v<Out, __half>) out[i] = __float2half_rn(y);
        else if constexpr (std::is_same_v<Out, __nv_bfloat16>) out[i] = __float2bfloat16_rn(y);
        else out[i] = y;
      } else {
        out[i] = static_cast<Out>(quantize(p, y));
      }
    }
  }
}

__global__ void bits_kernel(Params p, uint32_t* __restrict__ out) {
  const int64_t words = (p.v.K + 31) / 32, total = p.N * p.v.P * words;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t row = i / words, word = i % words;
    uint32_t bits = 0;
    for (int b = 0; b < 32; ++b) {
      const int64_t k = word * 32 + b;
      if (k >= p.v.K) break;
      const float y = affine(p, row, k);
      if (p.v.bits_pm1 ? (y < 0.f) : (y >= 0.5f)) bits |= 1u << b;
    }
    out[i] = bits;
  }
}

__global__ void int4_kernel(Params p, uint8_t* __restrict__ out) {
  const int64_t bytes = (p.v.K + 1) / 2, total = p.N * p.v.P * bytes;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t row = i / bytes, b = i % bytes;
    uint32_t packed = 0;
    for (int h = 0; h < 2; ++h) {
      const int64_t k = 2 * b + h;
      if (k >= p.v.K) break;
      const float u = __fdiv_rn(affine(p, row, k), p.v.out_scale);
      uint32_t code = 0;
      for (int t = 0; t < p.v.n_thresholds; ++t) code += p.v.thresholds[t] <= u;
      packed |= code << (4 * h);
    }
    out[i] = static_cast<uint8_t>(packed);
  }
}

}  // namespace

void run_epilogue(const Epilogue& e, const at::Tensor& acc, const at::Tensor& row_of_channel, const BinaryFix& fix,
                  cudaStream_t stream) {
  const int64_t N = e.out.size(0);
  if (e.out.numel() == 0) return;
  Params p{};
  p.v = e.view(row_of_channel.defined() ? row_of_channel.data_ptr<int32_t>() : nullptr);
  p.acc = acc.data_ptr<int32_t>();
  p.R = acc.size(1);
  p.N = N;
  p.fix = fix;
  const int64_t rows = N * e.P;
  switch (e.kind) {
    case OutKind::Int:
      values_kernel<int32_t, 0><<<grid_for(rows * e.K), 256, 0, stream>>>(p, e.out.data_ptr<int32_t>());
      break;
    case OutKind::Float:
      if (e.float_dtype == at::kFloat)
        values_kernel<float, 1><<<grid_for(rows * e.K), 256, 0, stream>>>(p, e.out.data_ptr<float>());
      else if (e.float_dtype == at::kHalf)
        values_kernel<__half, 1><<<grid_for(rows * e.K), 256, 0, stream>>>(p, reinterpret_cast<__half*>(e.out.data_ptr()));
      else
        values_kernel<__nv_bfloat16, 1><<<grid_for(rows * e.K), 256, 0, stream>>>(
            p, reinterpret_cast<__nv_bfloat16*>(e.out.data_ptr()));
      break;
    case OutKind::Int8:
      values_kernel<int8_t, 2><<<grid_for(rows * e.K), 256, 0, stream>>>(p, e.out.data_ptr<int8_t>());
      break;
    case OutKind::Uint8:
      values_kernel<uint8_t, 2><<<grid_for(rows * e.K), 256, 0, stream>>>(p, e.out.data_ptr<uint8_t>());
      break;
    case OutKind::Bits:
      bits_kernel<<<grid_for(rows * ((e.K + 31) / 32)), 256, 0, stream>>>(
          p, reinterpret_cast<uint32_t*>(e.out.data_ptr<int32_t>()));
      break;
    case OutKind::Int4:
      int4_kernel<<<grid_for(rows * ((e.K + 1) / 2)), 256, 0, stream>>>(p, e.out.data_ptr<uint8_t>());
      break;
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace cmn::cuda
