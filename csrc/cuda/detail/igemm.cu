#include "cuda/detail/igemm.cuh"

#include <c10/cuda/CUDAException.h>

namespace cmn::cuda {
namespace {

constexpr int BM = 128, BN = 64, BKW = 32;  // CTA tile: 128 pixels x 64 filters x 32 words per stage
constexpr int PAD = 4;                       // row stride 36 words: the fragment loads hit 32 distinct banks
constexpr int THREADS = 256;                 // 8 warps as 4 (M) x 2 (N), 32 x 32 outputs each

template <MmaKind K>
__device__ __forceinline__ void mma(int32_t (&c)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  if constexpr (K == MmaKind::S8S8) {
    asm volatile("mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};\n"
                 : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  } else if constexpr (K == MmaKind::U8S8) {
    asm volatile("mma.sync.aligned.m16n8k32.row.col.s32.u8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};\n"
                 : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  } else {
    asm volatile("mma.sync.aligned.m16n8k256.row.col.s32.b1.b1.s32.and.popc {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
                 "{%8,%9}, {%0,%1,%2,%3};\n"
                 : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  }
#else
  __trap();  // built only for sm_80+ (see CMakeLists.txt)
#endif
}

template <MmaKind K>
__global__ void __launch_bounds__(THREADS) igemm_kernel(const uint32_t* __restrict__ x,
                                                         const uint32_t* __restrict__ w,
                                                         int32_t* __restrict__ acc, ConvShape s, int R) {
  __shared__ uint32_t As[BM][BKW + PAD];
  __shared__ uint32_t Bs[BN][BKW + PAD];
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int g = lane / 4, t = lane % 4;
  const int wm = warp / 2, wn = warp % 2;
  const int64_t M = s.M();
  const int64_t L = s.row_len();
  const int64_t m0 = int64_t(blockIdx.x) * BM;
  const int r0 = blockIdx.y * BN;

  // A loader: two threads per tile row, 16 words each. Decode the row's pixel once.
  const int a_row = tid / 2, a_half = tid % 2;
  const int64_t m = m0 + a_row;
  const bool m_ok = m < M;
  int n_img = 0, ho = 0, wo = 0;
  if (m_ok) {
    wo = int(m % s.Wo);
    const int64_t q = m / s.Wo;
    ho = int(q % s.Ho);
    n_img = int(q / s.Ho);
  }
  const int hbase = ho * s.sh - s.ph, wbase = wo * s.sw - s.pw;
  // B loader: four threads per filter row, 8 words each.
  const int b_row = tid / 4, b_part = tid % 4;
  const int r = r0 + b_row;
  const uint32_t* w_row = w + int64_t(r) * L;

  int32_t c[2][4][4] = {};
  for (int64_t k0 = 0; k0 < L; k0 += BKW) {
    // A tile: gather in-frame words, zero elsewhere.
    int64_t kk = k0 + a_half * 16;
    int tap = int(kk / s.CW), word = int(kk - int64_t(tap) * s.CW);
#pragma unroll 4
    for (int j = 0; j < 16; ++j, ++kk) {
      uint32_t v = 0;
      if (m_ok && kk < L) {
        const int kh = tap / s.KW, kw = tap - kh * s.KW;
        const int hi = hbase + kh * s.dh, wi = wbase + kw * s.dw;
        if (hi >= 0 && hi < s.H && wi >= 0 && wi < s.W)
          v = __ldg(x + ((int64_t(n_img) * s.H + hi) * s.W + wi) * s.CW + word);
      }
      As[a_row][a_half * 16 + j] = v;
      if (++word == s.CW) {
        word = 0;
        ++tap;
      }
    }
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      const int64_t kb = k0 + b_part * 8 + j;
      Bs[b_row][b_part * 8 + j] = (r < R && kb < L) ? __ldg(w_row + kb) : 0u;
    }
    __syncthreads();
#pragma unroll
    for (int ks = 0; ks < BKW; ks += 8) {
      uint32_t a[2][4], b[4][2];
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        const int row = wm * 32 + i * 16 + g;
        a[i][0] = As[row][ks + t];
        a[i][1] = As[row + 8][ks + t];
        a[i][2] = As[row][ks + 4 + t];
        a[i][3] = As[row + 8][ks + 4 + t];
      }
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int col = wn * 32 + j * 8 + g;
        b[j][0] = Bs[col][ks + t];
        b[j][1] = Bs[col][ks + 4 + t];
      }
#pragma unroll
      for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) mma<K>(c[i][j], a[i], b[j]);
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 2; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int64_t row = m0 + wm * 32 + i * 16 + g + (e >= 2 ? 8 : 0);
        const int col = r0 + wn * 32 + j * 8 + t * 2 + (e & 1);
        if (row < M && col < R) acc[acc_index(s, R, row, col)] = c[i][j][e];
      }
}

}  // namespace

void igemm(MmaKind kind, const uint32_t* x, const uint32_t* w, int32_t* acc, const ConvShape& s, int R,
           cudaStream_t stream) {
  const int64_t M = s.M();
  if (M == 0 || R == 0) return;
  const dim3 grid(unsigned((M + BM - 1) / BM), unsigned((R + BN - 1) / BN));
  switch (kind) {
    case MmaKind::S8S8: igemm_kernel<MmaKind::S8S8><<<grid, THREADS, 0, stream>>>(x, w, acc, s, R); break;
    case MmaKind::U8S8: igemm_kernel<MmaKind::U8S8><<<grid, THREADS, 0, stream>>>(x, w, acc, s, R); break;
    case MmaKind::B1And: igemm_kernel<MmaKind::B1And><<<grid, THREADS, 0, stream>>>(x, w, acc, s, R); break;
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace cmn::cuda
