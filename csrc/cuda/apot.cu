// APoT matmul / conv on CUDA, from packed 4-bit codes and 16-entry integer level tables. Exact paths:
//   int8 / mma    codes decoded to int8 levels, implicit GEMM on the int8 tensor cores (large M, convs)
//   int8 / gemv   small-M matmul: the packed weight codes are read once from memory and decoded in registers,
//                 dp4a against the (tiny) decoded activations: the 4-bit bandwidth win where M is small
//   shift_add     the papers' arithmetic on CUDA cores: each weight level is sign * (2^p + 2^q), a product is
//                 (x << p) + (x << q); the reference of the arithmetic, not a fast path
// CMN_APOT_PATH=mma|gemv forces the int8 variant for a matmul (default: gemv for M <= 16).
#include "common/epilogue.h"
#include "common/validate.h"
#include "cuda/detail/epilogue.cuh"
#include "cuda/detail/shape.cuh"
#include "ops.h"

#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

namespace cmn {
namespace {

using cuda::ConvShape;

struct Levels {
  int32_t v[16];
};

__device__ __forceinline__ int code_at(const uint8_t* row, int64_t c) { return (row[c >> 1] >> ((c & 1) * 4)) & 15; }

// codes [rows, CB] -> int8 levels [rows, Cp]; channels past C are 0 (padding, never code 0's level).
__global__ void decode_kernel(const uint8_t* __restrict__ codes, int8_t* __restrict__ out, int64_t rows, int64_t C,
                              int64_t CB, int64_t Cp, Levels lv) {
  const int64_t total = rows * Cp;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = i / Cp, c = i % Cp;
    out[i] = c < C ? static_cast<int8_t>(lv.v[code_at(codes + r * CB, c)]) : int8_t(0);
  }
}

// The same for C % 8 == 0 (rows are whole 32-bit words of codes): 8 codes in, two words of levels out.
__global__ void decode8_kernel(const uint32_t* __restrict__ codes, uint32_t* __restrict__ out, int64_t words,
                               Levels lv) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < words; i += int64_t(gridDim.x) * blockDim.x) {
    const uint32_t c = __ldg(codes + i);
    uint32_t lo = 0, hi = 0;
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      lo |= (uint32_t(lv.v[(c >> (4 * e)) & 15]) & 0xffu) << (8 * e);
      hi |= (uint32_t(lv.v[(c >> (16 + 4 * e)) & 15]) & 0xffu) << (8 * e);
    }
    out[2 * i] = lo;
    out[2 * i + 1] = hi;
  }
}

constexpr int GEMV_MT = 8;  // activation rows per CTA; one warp per weight row

__device__ __forceinline__ int32_t pack4(int32_t a, int32_t b, int32_t c, int32_t d) {
  return (a & 0xff) | ((b & 0xff) << 8) | ((c & 0xff) << 16) | (int32_t(uint32_t(d) << 24));
}

// acc [M, N] += a_dec [M, Kp] (int8, zero past k) x levels(b codes [N, KB]).
__global__ void gemv_kernel(const int8_t* __restrict__ a_dec, const uint8_t* __restrict__ b, int32_t* __restrict__ acc,
                            int M, int N, int64_t KB, int64_t Kp, Levels lv) {
  __shared__ int32_t table[16];
  if (threadIdx.x < 16) table[threadIdx.x] = lv.v[threadIdx.x];
  __syncthreads();
  const int lane = threadIdx.x % 32;
  const int n = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
  const int m0 = blockIdx.y * GEMV_MT;
  if (n >= N) return;
  const uint8_t* brow = b + int64_t(n) * KB;
  int32_t sum[GEMV_MT] = {};
  if (KB % 4 == 0) {  // 8 codes per 32-bit load
    const uint32_t* b32 = reinterpret_cast<const uint32_t*>(brow);
    for (int64_t j = lane; j < KB / 4; j += 32) {
      const uint32_t word = __ldg(b32 + j);
      int32_t d[8];
#pragma unroll
      for (int e = 0; e < 8; ++e) d[e] = table[(word >> (4 * e)) & 15];
      const int32_t lo = pack4(d[0], d[1], d[2], d[3]), hi = pack4(d[4], d[5], d[6], d[7]);
#pragma unroll
      for (int mm = 0; mm < GEMV_MT; ++mm) {
        if (m0 + mm >= M) break;
        const int32_t* arow = reinterpret_cast<const int32_t*>(a_dec + int64_t(m0 + mm) * Kp) + 2 * j;
        sum[mm] = __dp4a(__ldg(arow), lo, sum[mm]);
        sum[mm] = __dp4a(__ldg(arow + 1), hi, sum[mm]);
      }
    }
  } else {
    for (int64_t j = lane; j < KB; j += 32) {
      const uint8_t byte = brow[j];
      const int32_t d0 = table[byte & 15], d1 = table[byte >> 4];
      for (int mm = 0; mm < GEMV_MT && m0 + mm < M; ++mm) {
        const int8_t* arow = a_dec + int64_t(m0 + mm) * Kp + 2 * j;
        sum[mm] += int32_t(arow[0]) * d0 + int32_t(arow[1]) * d1;  // arow[1] is 0 past k
      }
    }
  }
#pragma unroll
  for (int mm = 0; mm < GEMV_MT; ++mm) {
    int32_t v = sum[mm];
    for (int off = 16; off > 0; off /= 2) v += __shfl_xor_sync(0xffffffffu, v, off);
    if (lane == 0 && m0 + mm < M) acc[int64_t(m0 + mm) * N + n] = v;
  }
}

// Shift-add descriptor of a level: p | q << 5 | has_p << 10 | has_q << 11 | negative << 12.
Levels shift_descriptors(const LevelTable& t) {
  Levels d{};
  for (int c = 0; c < 16; ++c) {
    const int64_t v = t.v[c];
    uint64_t m = static_cast<uint64_t>(v < 0 ? -v : v);
    int32_t desc = v < 0 ? (1 << 12) : 0;
    if (m) {
      const int p = 63 - __builtin_clzll(m);
      desc |= p | (1 << 10);
      m &= ~(uint64_t(1) << p);
      if (m) desc |= ((63 - __builtin_clzll(m)) << 5) | (1 << 11);
    }
    d.v[c] = desc;
  }
  return d;
}

// acc [N, R, P]: one thread per output, sum over in-frame taps and channels of sign * ((x << p) + (x << q)).
__global__ void shift_add_kernel(const uint8_t* __restrict__ x, const uint8_t* __restrict__ w,
                                 int32_t* __restrict__ acc, ConvShape s, int64_t C, int64_t CB, int R, Levels xl,
                                 Levels wd) {
  const int64_t total = s.M() * R;
  const int taps = s.KH * s.KW;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int r = int(i % R);
    const int64_t m = i / R;
    const int wo = int(m % s.Wo), ho = int((m / s.Wo) % s.Ho), n = int(m / (int64_t(s.Wo) * s.Ho));
    int32_t sum = 0;
    for (int kh = 0; kh < s.KH; ++kh) {
      const int hi = ho * s.sh - s.ph + kh * s.dh;
      for (int kw = 0; kw < s.KW; ++kw) {
        const int wi = wo * s.sw - s.pw + kw * s.dw;
        if (hi < 0 || hi >= s.H || wi < 0 || wi >= s.W) continue;
        const uint8_t* xr = x + ((int64_t(n) * s.H + hi) * s.W + wi) * CB;
        const uint8_t* wr = w + (int64_t(r) * taps + kh * s.KW + kw) * CB;
        for (int64_t c = 0; c < C; ++c) {
          const int32_t xv = xl.v[code_at(xr, c)];
          const int32_t d = wd.v[code_at(wr, c)];
          const int32_t prod = (((d >> 10) & 1) ? (xv << (d & 31)) : 0) + (((d >> 11) & 1) ? (xv << ((d >> 5) & 31)) : 0);
          sum += ((d >> 12) & 1) ? -prod : prod;
        }
      }
    }
    acc[cuda::acc_index(s, R, m, r)] = sum;
  }
}

Levels levels_of(const LevelTable& t) {
  Levels l{};
  for (int c = 0; c < 16; ++c) l.v[c] = t.v[c];
  return l;
}

at::Tensor decode(const at::Tensor& codes, int64_t rows, int64_t C, const LevelTable& t, cudaStream_t stream) {
  const int64_t CB = ceil_div(C, 2), Cp = ceil_div(C, 4) * 4;
  auto out = at::empty({rows, Cp}, codes.options().dtype(at::kChar));
  if (out.numel() == 0) return out;
  if (C % 8 == 0 && reinterpret_cast<uintptr_t>(codes.data_ptr()) % 4 == 0) {  // word-wide, memory-bound
    const int64_t words = rows * CB / 4;
    decode8_kernel<<<cuda::grid_for(words), 256, 0, stream>>>(reinterpret_cast<const uint32_t*>(codes.data_ptr()),
                                                              reinterpret_cast<uint32_t*>(out.data_ptr()), words,
                                                              levels_of(t));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return out;
  }
  decode_kernel<<<cuda::grid_for(out.numel()), 256, 0, stream>>>(codes.data_ptr<uint8_t>(), out.data_ptr<int8_t>(),
                                                                 rows, C, CB, Cp, levels_of(t));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

// The shared core: acc [N, R, P] for x codes (NHWC) and w codes ([R, kh, kw, CB]) of the conv shape s (in bytes).
void apot_acc(const at::Tensor& x, const LevelTable& xl, const at::Tensor& w, const LevelTable& wl, int64_t C,
              ConvShape s, int64_t R, ApotMethod method, at::Tensor& acc, cudaStream_t stream) {
  const int64_t CB = ceil_div(C, 2);
  if (method == ApotMethod::ShiftAdd) {
    shift_add_kernel<<<cuda::grid_for(s.M() * R), 256, 0, stream>>>(x.data_ptr<uint8_t>(), w.data_ptr<uint8_t>(),
                                                                     acc.data_ptr<int32_t>(), s, C, CB, int(R),
                                                                     levels_of(xl), shift_descriptors(wl));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return;
  }
  const auto xd = decode(x, int64_t(s.N) * s.H * s.W, C, xl, stream);
  const auto wd = decode(w, R * s.KH * s.KW, C, wl, stream);
  s.CW = int(ceil_div(C, 4));
  cuda::igemm(cuda::MmaKind::S8S8, reinterpret_cast<const uint32_t*>(xd.data_ptr()),
              reinterpret_cast<const uint32_t*>(wd.data_ptr()), acc.data_ptr<int32_t>(), s, int(R), stream);
}

}  // namespace

at::Tensor apot_matmul_cuda(const at::Tensor& a_packed, const at::Tensor& a_levels, const at::Tensor& b_packed,
                            const at::Tensor& b_levels, int64_t k, std::string_view method, const EpilogueArgs& epi) {
  TORCH_CHECK_VALUE(a_packed.is_cuda(), "cmn::apot_matmul: argument 'a_packed' is on ", a_packed.device(),
                    " but other arguments are on CUDA");
  const auto plan = validate_apot_matmul(a_packed, a_levels, b_packed, b_levels, k, method);
  const c10::cuda::CUDAGuard guard(a_packed.device());
  auto ep = Epilogue::make("cmn::apot_matmul", epi, plan.M, plan.N, {}, a_packed.options(), BitEncoding::PM1);
  if (ep.out.numel() == 0) return ep.out;
  const auto stream = c10::cuda::getCurrentCUDAStream();
  const auto a = a_packed.contiguous(), b = b_packed.contiguous();
  auto acc = at::empty({plan.M, plan.N}, a.options().dtype(at::kInt));
  if (plan.method == ApotMethod::Int8 && cuda::path_choice("CMN_APOT_PATH", "gemv", "mma", plan.M <= 16)) {
    const int64_t Kp = ceil_div(k, 8) * 8;  // whole dp4a pairs
    auto a_dec = at::zeros({plan.M, Kp}, a.options().dtype(at::kChar));
    const auto a_part = decode(a, plan.M, k, plan.a, stream);  // [M, roundup(k, 4)]
    a_dec.narrow(1, 0, a_part.size(1)).copy_(a_part);
    const dim3 grid(unsigned(ceil_div(plan.N, 8)), unsigned(ceil_div(plan.M, GEMV_MT)));
    gemv_kernel<<<grid, 256, 0, stream>>>(a_dec.data_ptr<int8_t>(), b.data_ptr<uint8_t>(), acc.data_ptr<int32_t>(),
                                          int(plan.M), int(plan.N), ceil_div(k, 2), Kp, levels_of(plan.b));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  } else {
    // a matmul is a 1x1 conv over M one-pixel images
    const ConvShape s{int(plan.M), 1, 1, 0, 1, 1, 1, 1, 1, 1, 0, 0, 1, 1};
    apot_acc(a, plan.a, b, plan.b, k, s, plan.N, plan.method, acc, stream);
  }
  cuda::run_epilogue(ep, acc.view({plan.M, plan.N}), at::Tensor(), cuda::BinaryFix{}, stream);
  return ep.out;
}

at::Tensor apot_conv2d_cuda(const at::Tensor& x_packed, const at::Tensor& x_levels, const at::Tensor& w_packed,
                            const at::Tensor& w_levels, int64_t in_channels, at::IntArrayRef stride,
                            at::IntArrayRef padding, at::IntArrayRef dilation, std::string_view method,
                            const EpilogueArgs& epi, const std::optional<at::Tensor>& prepacked) {
  TORCH_CHECK_VALUE(x_packed.is_cuda(), "cmn::apot_conv2d: argument 'x_packed' is on ", x_packed.device(),
                    " but other arguments are on CUDA");
  const auto plan =
      validate_apot_conv2d(x_packed, x_levels, w_packed, w_levels, in_channels, stride, padding, dilation, method);
  const auto& g = plan.g;
  const c10::cuda::CUDAGuard guard(x_packed.device());
  auto ep = Epilogue::make("cmn::apot_conv2d", epi, g.N, g.K, {g.HO, g.WO}, x_packed.options(), BitEncoding::PM1);
  if (ep.out.numel() == 0) return ep.out;
  const auto stream = c10::cuda::getCurrentCUDAStream();
  const auto s = cuda::conv_shape(g, ceil_div(g.C, 4));
  auto acc = at::empty({g.N, g.K, s.P()}, x_packed.options().dtype(at::kInt));
  apot_acc(x_packed.contiguous(), plan.x, w_packed.contiguous(), plan.w, g.C, s, g.K, plan.method, acc, stream);
  cuda::run_epilogue(ep, acc, at::Tensor(), cuda::BinaryFix{}, stream);
  return ep.out;
}

}  // namespace cmn
