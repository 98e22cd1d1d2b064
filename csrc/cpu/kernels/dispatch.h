// Run-time choice of the CPU kernels by the features of the CPU that runs them (never by the build machine),
// and the parallel driver that hands task ranges and per-thread scratch to the chosen kernel.
#pragma once

#include "cpu/kernels/job.h"

#include <string>
#include <vector>

namespace cmn::cpu {

struct CpuFeatures {
  bool avx2 = false, fma = false, popcnt = false, bmi2 = false, f16c = false;
  bool avx512f = false, avx512bw = false, avx512dq = false, avx512vl = false;
  bool avx512vnni = false, avx512vpopcntdq = false, avxvnni = false;
};
const CpuFeatures& cpu_features();  // CPUID + XGETBV (the OS must save the registers too)
std::vector<std::string> cpu_feature_names();

// Kernel paths by family ("int8" covers int8_conv2d and the APoT int8 method; "binary" binary_conv2d):
//   int8:   scalar, avx2, avx512, avx512_vnni, avx_vnni, emu_avx512, emu_vnni
//   binary: scalar, avx2, avx2_lut, avx512_vpopcnt, emu_vpopcnt
// emu_* run the data layout and tiling of an instruction set this CPU lacks on AVX2 instructions (for
// tests). The default is the fastest path the CPU has; set_cpu_path(family, name) overrides it for the
// process (name "" restores the default), as do the environment variables CMN_CPU_INT8_PATH and
// CMN_CPU_BINARY_PATH at the first call.
std::vector<std::string> cpu_paths(const std::string& family, bool available_only);
std::string cpu_path(const std::string& family);  // the path the next call will take
void set_cpu_path(const std::string& family, const std::string& name);
// Integer Winograd F(2x2, 3x3) for eligible int8 / APoT convolutions: on by default (CMN_CPU_WINOGRAD=0 turns
// it off); set_winograd(0 / 1) overrides, -1 restores the default.
void set_winograd(int mode);
bool winograd_enabled();

// [P][taps] input pixel index of every output pixel and tap (H * W for taps outside the frame).
std::vector<int32_t> conv_offsets(const Geom& g);
// Pixels per task so that a call has enough tasks for the threads (whole images at large batch).
int64_t pixels_per_task(const Geom& g, int64_t multiple);

void run_int8(Int8Job& job);      // fills job.offsets / pixels_per_task itself
void run_binary(BinaryJob& job);

}  // namespace cmn::cpu
