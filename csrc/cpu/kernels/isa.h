// Entry points of the instruction-set specific translation units (isa_*.cpp). Each processes the tasks
// [t0, t1) of one job with the calling thread's scratch; cpu/kernels/dispatch.cpp picks the unit at run time.
#pragma once

#include "cpu/kernels/job.h"

namespace cmn::cpu {

using Int8Tasks = void (*)(const Int8Job&, int64_t, int64_t, Scratch&);
using BinaryTasks = void (*)(const BinaryJob&, int64_t, int64_t, Scratch&);
using Int8WinoTasks = Int8Tasks;

// int8_wino_tasks: 3x3 stride-1 convolutions by integer Winograd F(2x2, 3x3) (cpu/kernels/int8_winograd.inl).
namespace scalar {  // baseline x86-64 / any CPU: compiler-vectorised int16 pairs, portable popcount
void int8_tasks(const Int8Job& job, int64_t t0, int64_t t1, Scratch& s);
void int8_wino_tasks(const Int8Job& job, int64_t t0, int64_t t1, Scratch& s);
void binary_tasks(const BinaryJob& job, int64_t t0, int64_t t1, Scratch& s);
// The epilogue alone, for the ATen-side paths (APoT matmul, shift-add) that compute accumulators themselves.
void epilogue(const EpiView& e, int64_t n, int64_t p0, int64_t np, const int32_t* acc, int64_t ld, float* y);
}  // namespace scalar

#if defined(CMN_ISA_AVX2)
namespace avx2 {  // AVX2 + FMA + BMI2 + POPCNT
void int8_tasks(const Int8Job& job, int64_t t0, int64_t t1, Scratch& s);          // vpmaddwd pairs
void int8_wino_tasks(const Int8Job& job, int64_t t0, int64_t t1, Scratch& s);
void int8_tasks_emu_vnni(const Int8Job& job, int64_t t0, int64_t t1, Scratch& s);  // VNNI quads, emulated
void int8_tasks_emu_avx512(const Int8Job& job, int64_t t0, int64_t t1, Scratch& s);  // 16 lanes, emulated
void int8_wino_tasks_emu_avx512(const Int8Job& job, int64_t t0, int64_t t1, Scratch& s);
void binary_tasks(const BinaryJob& job, int64_t t0, int64_t t1, Scratch& s);         // vpshufb over filters
void binary_tasks_popcnt(const BinaryJob& job, int64_t t0, int64_t t1, Scratch& s);  // popcnt per filter
void binary_tasks_emu_vpopcnt(const BinaryJob& job, int64_t t0, int64_t t1, Scratch& s);  // 8 lanes, emulated
}  // namespace avx2
#endif
#if defined(CMN_ISA_AVX512)
namespace avx512 {  // AVX-512 F/BW/DQ/VL
void int8_tasks(const Int8Job& job, int64_t t0, int64_t t1, Scratch& s);
void int8_wino_tasks(const Int8Job& job, int64_t t0, int64_t t1, Scratch& s);
}
#endif
#if defined(CMN_ISA_AVX512_VNNI)
namespace avx512_vnni {
void int8_tasks(const Int8Job& job, int64_t t0, int64_t t1, Scratch& s);
}
#endif
#if defined(CMN_ISA_AVX_VNNI)
namespace avx_vnni {
void int8_tasks(const Int8Job& job, int64_t t0, int64_t t1, Scratch& s);
}
#endif
#if defined(CMN_ISA_AVX512_VPOPCNT)
namespace avx512_vpopcnt {
void binary_tasks(const BinaryJob& job, int64_t t0, int64_t t1, Scratch& s);
}
#endif

}  // namespace cmn::cpu
