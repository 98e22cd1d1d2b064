#include "cpu/kernels/dispatch.h"

#include "cpu/kernels/isa.h"

#include <ATen/Parallel.h>
#include <c10/util/Exception.h>

#include <array>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>

#if defined(__x86_64__) || defined(_M_X64)
#include <cpuid.h>
#define CMN_X86 1
#endif

namespace cmn::cpu {

namespace {

#ifdef CMN_X86
uint64_t xgetbv0() {
  uint32_t lo, hi;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return (uint64_t(hi) << 32) | lo;
}

CpuFeatures detect() {
  CpuFeatures f;
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return f;
  const bool osxsave = c & (1u << 27), avx = c & (1u << 28);
  f.fma = c & (1u << 12);
  f.popcnt = c & (1u << 23);
  f.f16c = c & (1u << 29);
  const uint64_t xcr0 = osxsave ? xgetbv0() : 0;
  const bool ymm_state = (xcr0 & 0x6) == 0x6, zmm_state = (xcr0 & 0xe6) == 0xe6;
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return f;
  const bool os_avx = avx && ymm_state;
  f.avx2 = os_avx && (b & (1u << 5));
  f.bmi2 = b & (1u << 8);
  f.fma = f.fma && os_avx;
  f.f16c = f.f16c && os_avx;
  const bool os_512 = os_avx && zmm_state;
  f.avx512f = os_512 && (b & (1u << 16));
  f.avx512dq = os_512 && (b & (1u << 17));
  f.avx512bw = os_512 && (b & (1u << 30));
  f.avx512vl = os_512 && (b & (1u << 31));
  f.avx512vnni = os_512 && (c & (1u << 11));
  f.avx512vpopcntdq = os_512 && (c & (1u << 14));
  if (__get_cpuid_count(7, 1, &a, &b, &c, &d)) f.avxvnni = os_avx && (a & (1u << 4));
  return f;
}
#else
CpuFeatures detect() { return {}; }
#endif

struct Path {
  const char* name;
  bool (*available)(const CpuFeatures&);
  const void* fn;            // Int8Tasks or BinaryTasks
  bool quads = false;        // int8: reads uint8 x int8 quads (VNNI layout)
  const void* wino = nullptr;  // int8: the Winograd F(2x2, 3x3) kernel of the same unit, if any
};

bool has_avx2(const CpuFeatures& f) { return f.avx2 && f.fma && f.popcnt && f.bmi2; }
bool has_avx512(const CpuFeatures& f) { return has_avx2(f) && f.avx512f && f.avx512bw && f.avx512dq && f.avx512vl; }
[[maybe_unused]] bool always(const CpuFeatures&) { return true; }
[[maybe_unused]] bool never(const CpuFeatures&) { return false; }

// Listed fastest first: the default is the first available one.
const std::vector<Path>& int8_paths() {
  static const std::vector<Path> paths = {
#ifdef CMN_ISA_AVX512_VNNI
      {"avx512_vnni", [](const CpuFeatures& f) { return has_avx512(f) && f.avx512vnni; },
       reinterpret_cast<const void*>(&avx512_vnni::int8_tasks), true},
#endif
#ifdef CMN_ISA_AVX_VNNI
      {"avx_vnni", [](const CpuFeatures& f) { return has_avx2(f) && f.avxvnni; },
       reinterpret_cast<const void*>(&avx_vnni::int8_tasks), true},
#endif
#ifdef CMN_ISA_AVX512
      {"avx512", has_avx512, reinterpret_cast<const void*>(&avx512::int8_tasks), false,
       reinterpret_cast<const void*>(&avx512::int8_wino_tasks)},
#endif
#ifdef CMN_ISA_AVX2
      {"avx2", has_avx2, reinterpret_cast<const void*>(&avx2::int8_tasks), false,
       reinterpret_cast<const void*>(&avx2::int8_wino_tasks)},
#endif
      {"scalar", always, reinterpret_cast<const void*>(&scalar::int8_tasks), false,
       reinterpret_cast<const void*>(&scalar::int8_wino_tasks)},
#ifdef CMN_ISA_AVX2
      {"emu_avx512", has_avx2, reinterpret_cast<const void*>(&avx2::int8_tasks_emu_avx512), false,
       reinterpret_cast<const void*>(&avx2::int8_wino_tasks_emu_avx512)},
      {"emu_vnni", has_avx2, reinterpret_cast<const void*>(&avx2::int8_tasks_emu_vnni), true},
#endif
  };
  return paths;
}

const std::vector<Path>& binary_paths() {
  static const std::vector<Path> paths = {
#ifdef CMN_ISA_AVX512_VPOPCNT
      {"avx512_vpopcnt", [](const CpuFeatures& f) { return has_avx512(f) && f.avx512vpopcntdq; },
       reinterpret_cast<const void*>(&avx512_vpopcnt::binary_tasks)},
#endif
#ifdef CMN_ISA_AVX2
      {"avx2", has_avx2, reinterpret_cast<const void*>(&avx2::binary_tasks)},
      {"avx2_popcnt", has_avx2, reinterpret_cast<const void*>(&avx2::binary_tasks_popcnt)},
#endif
      {"scalar", always, reinterpret_cast<const void*>(&scalar::binary_tasks)},
#ifdef CMN_ISA_AVX2
      {"emu_vpopcnt", has_avx2, reinterpret_cast<const void*>(&avx2::binary_tasks_emu_vpopcnt)},
#endif
  };
  return paths;
}

bool is_emulation(const char* name) { return std::string(name).rfind("emu_", 0) == 0; }

const std::vector<Path>& family_paths(const std::string& family) {
  if (family == "int8") return int8_paths();
  if (family == "binary") return binary_paths();
  TORCH_CHECK_VALUE(false, "cmn cpu paths: 'family' expected \"int8\" or \"binary\", got \"", family, "\"");
}

// Chosen path per family: -1 = default (first available non-emulation).
std::mutex choice_mutex;
int int8_choice = -2, binary_choice = -2;  // -2: not yet read from the environment

int find_path(const std::string& family, const std::string& name) {
  const auto& paths = family_paths(family);
  std::string names;
  for (size_t i = 0; i < paths.size(); ++i) {
    if (name == paths[i].name) {
      TORCH_CHECK_VALUE(paths[i].available(cpu_features()), "cmn cpu paths: ", family, " path \"", name,
                        "\" needs instructions this CPU does not have");
      return int(i);
    }
    names += std::string(i ? ", " : "") + paths[i].name;
  }
  TORCH_CHECK_VALUE(false, "cmn cpu paths: unknown ", family, " path \"", name, "\"; this build has: ", names);
}

int default_path(const std::string& family) {
  const auto& paths = family_paths(family);
  for (size_t i = 0; i < paths.size(); ++i)
    if (!is_emulation(paths[i].name) && paths[i].available(cpu_features())) return int(i);
  return int(paths.size()) - 1;
}

int& choice_of(const std::string& family) { return family == "int8" ? int8_choice : binary_choice; }

int winograd_choice = -1;  // -1: from CMN_CPU_WINOGRAD (default on), 0 off, 1 on

int chosen(const std::string& family) {
  std::lock_guard<std::mutex> lock(choice_mutex);
  int& c = choice_of(family);
  if (c == -2) {
    const char* env = std::getenv(family == "int8" ? "CMN_CPU_INT8_PATH" : "CMN_CPU_BINARY_PATH");
    c = (env && *env) ? find_path(family, env) : -1;
  }
  return c >= 0 ? c : default_path(family);
}

template <typename Job, typename Fn>
void run_tasks(const Job& job, Fn fn, int64_t tasks, int64_t scratch_bytes) {
  at::parallel_for(0, tasks, 1, [&](int64_t b, int64_t e) {
    std::vector<uint64_t> buf((scratch_bytes + 7) / 8 + 8, 0);  // zeroed, 8-byte aligned
    Scratch s{reinterpret_cast<uint8_t*>(buf.data()), scratch_bytes, -1};
    fn(job, b, e, s);
  });
}

}  // namespace

const CpuFeatures& cpu_features() {
  static const CpuFeatures f = detect();
  return f;
}

std::vector<std::string> cpu_feature_names() {
  const auto& f = cpu_features();
  std::vector<std::string> out;
  auto add = [&](bool on, const char* name) {
    if (on) out.emplace_back(name);
  };
  add(f.avx2, "avx2");
  add(f.fma, "fma");
  add(f.popcnt, "popcnt");
  add(f.bmi2, "bmi2");
  add(f.f16c, "f16c");
  add(f.avx512f, "avx512f");
  add(f.avx512bw, "avx512bw");
  add(f.avx512dq, "avx512dq");
  add(f.avx512vl, "avx512vl");
  add(f.avx512vnni, "avx512_vnni");
  add(f.avx512vpopcntdq, "avx512_vpopcntdq");
  add(f.avxvnni, "avx_vnni");
  return out;
}

std::vector<std::string> cpu_paths(const std::string& family, bool available_only) {
  std::vector<std::string> out;
  for (const auto& p : family_paths(family))
    if (!available_only || p.available(cpu_features())) out.emplace_back(p.name);
  return out;
}

std::string cpu_path(const std::string& family) { return family_paths(family)[chosen(family)].name; }

void set_winograd(int mode) {
  std::lock_guard<std::mutex> lock(choice_mutex);
  winograd_choice = mode < 0 ? -1 : (mode ? 1 : 0);
}

bool winograd_enabled() {
  std::lock_guard<std::mutex> lock(choice_mutex);
  if (winograd_choice < 0) {
    const char* env = std::getenv("CMN_CPU_WINOGRAD");
    return !(env && std::string(env) == "0");
  }
  return winograd_choice == 1;
}

void set_cpu_path(const std::string& family, const std::string& name) {
  const int idx = name.empty() ? -1 : find_path(family, name);
  std::lock_guard<std::mutex> lock(choice_mutex);
  choice_of(family) = idx;
}

std::vector<int32_t> conv_offsets(const Geom& g) {
  const int64_t taps = g.taps(), HW = g.H * g.W;
  std::vector<int32_t> off(g.pixels() * taps);
  for (int64_t oy = 0; oy < g.HO; ++oy)
    for (int64_t ox = 0; ox < g.WO; ++ox) {
      int32_t* o = off.data() + (oy * g.WO + ox) * taps;
      for (int64_t ky = 0; ky < g.KH; ++ky)
        for (int64_t kx = 0; kx < g.KW; ++kx) {
          const int64_t iy = oy * g.SH - g.PH + ky * g.DH, ix = ox * g.SW - g.PW + kx * g.DW;
          const bool inside = iy >= 0 && iy < g.H && ix >= 0 && ix < g.W;
          o[ky * g.KW + kx] = int32_t(inside ? iy * g.W + ix : HW);
        }
    }
  return off;
}

namespace {
// Offset tables (and per-pixel valid-tap counts) depend on the geometry only: a network reuses a handful, and
// at batch 1 building one costs as much as the convolution, so they are kept (a bounded cache).
struct OffsetTables {
  std::vector<int32_t> offsets, valid;
};

std::shared_ptr<const OffsetTables> offset_tables(const Geom& g) {
  using Key = std::array<int64_t, 12>;
  static std::mutex mutex;
  static std::map<Key, std::shared_ptr<const OffsetTables>> cache;
  const Key key{g.H, g.W, g.HO, g.WO, g.KH, g.KW, g.SH, g.SW, g.PH, g.PW, g.DH, g.DW};
  std::lock_guard<std::mutex> lock(mutex);
  auto it = cache.find(key);
  if (it != cache.end()) return it->second;
  auto t = std::make_shared<OffsetTables>();
  t->offsets = conv_offsets(g);
  const int64_t taps = g.taps(), HW = g.H * g.W;
  t->valid.resize(g.pixels());
  for (int64_t p = 0; p < g.pixels(); ++p) {
    int32_t v = 0;
    for (int64_t i = 0; i < taps; ++i) v += t->offsets[p * taps + i] != HW;
    t->valid[p] = v;
  }
  if (cache.size() >= 256) cache.clear();
  cache.emplace(key, t);
  return t;
}
}  // namespace

int64_t pixels_per_task(const Geom& g, int64_t multiple) {
  const int64_t P = g.pixels(), threads = at::get_num_threads();
  const int64_t want = 4 * threads;  // tasks, for load balance
  int64_t splits = g.N >= want ? 1 : (want + g.N - 1) / g.N;
  int64_t ppt = (P + splits - 1) / splits;
  ppt = ((ppt + multiple - 1) / multiple) * multiple;
  return ppt < multiple ? multiple : ppt;
}

void run_int8(Int8Job& job) {
  const auto& g = job.g;
  const auto tables = offset_tables(g);
  job.offsets = tables->offsets.data();
  job.pixels_per_task = pixels_per_task(g, 12);
  const int64_t tasks = g.N * ((g.pixels() + job.pixels_per_task - 1) / job.pixels_per_task);
  const int64_t cs = job.Cp2 > job.Cq4 ? job.Cp2 : job.Cq4;
  const int64_t np_max = 12;  // >= every traits' np
  const int64_t flat_patch = 96 * ((g.taps() * g.C + 1) / 2 + 1);  // int32 words of the small-C patches
  const int64_t bytes =
      4 * ((g.H * g.W + 1) * cs + np_max * job.Rpad + np_max * g.taps() + job.epi.K + 16 + flat_patch);
  const auto& paths = int8_paths();
  int idx = chosen("int8");
  job.flat = job.w_flat && g.C <= 4;  // a network's first layer: taps x channels as one reduction
  if (paths[idx].quads && (!job.quads_ok || job.flat)) {  // the fastest pairs path instead
    for (size_t i = 0; i < paths.size(); ++i)
      if (!paths[i].quads && !is_emulation(paths[i].name) && paths[i].available(cpu_features())) {
        idx = int(i);
        break;
      }
  }
  // Winograd F(2x2, 3x3) on the int16-pairs paths (on VNNI the direct uint8 quads do more per instruction),
  // when every int32 sum provably fits: |4 Y| <= 9 * C * (4 max|x|) * (9 max|w|).
  const bool wino = paths[idx].wino && job.w_wino && g.C > 4 && g.KH == 3 && g.KW == 3 && g.SH == 1 && g.SW == 1 &&
                    g.DH == 1 && g.DW == 1 && winograd_enabled() &&
                    9.0 * double(g.C) * 4.0 * double(job.x_max_abs) * 9.0 * double(job.w_max_abs) < 2147483647.0;
  if (wino) {
    const int64_t tiles_y = (g.HO + 1) / 2, tiles_x = (g.WO + 1) / 2;
    const int64_t rows = pixels_per_task(Geom{g.N, g.C, g.H, g.W, g.K, 1, 1, 1, 1, 0, 0, 1, 1, tiles_y, tiles_x}, 1);
    job.wino_rows_per_task = std::max<int64_t>(1, rows / std::max<int64_t>(1, tiles_x));
    const int64_t wtasks = g.N * ((tiles_y + job.wino_rows_per_task - 1) / job.wino_rows_per_task);
    const int64_t nt = 12;  // >= every traits' np
    const int64_t padded = (g.H + 2 * g.PH + 2) * (g.W + 2 * g.PW + 2);
    const int64_t wbytes = 4 * (padded * job.Cp2 + 16 * nt * job.Cp2 + 16 * nt * job.Rpad +
                                4 * nt * job.Rpad + job.epi.K + 16);
    run_tasks(job, reinterpret_cast<Int8Tasks>(paths[idx].wino), wtasks, wbytes);
    return;
  }
  run_tasks(job, reinterpret_cast<Int8Tasks>(paths[idx].fn), tasks, bytes);
}

namespace {
// For a "01" binary conv whose epilogue only turns y into bits: per channel, the integer form of the decision
// bit(dot) = [y(dot) >= 0.5] (or [y < 0] for pm1 outputs) with y = relu?(float(dot) * scale + bias). Every
// operation is monotone in dot, so the decision is a threshold; it is found by bisection over the possible
// dots [-D, D] with the epilogue's own float arithmetic, hence equal to it for every dot.
bool bits_thresholds(const BinaryJob& job, std::vector<int32_t>& mul, std::vector<int32_t>& thr) {
  const EpiView& e = job.epi;
  if (job.pm1 || e.kind != OutCode::Bits || e.res_kind != ResCode::None || e.float_out || e.row_of_channel)
    return false;
  const int64_t D = job.g.taps() * job.g.C;
  mul.resize(e.K);
  thr.resize(e.K);
  for (int64_t k = 0; k < e.K; ++k) {
    auto bit = [&](int64_t d) {
      float y = float(d);
      if (e.scale) y = y * e.scale[k];
      if (e.bias) y = y + e.bias[k];
      if (e.relu) y = y < 0.f ? 0.f : y;
      return e.bits_pm1 ? (y < 0.f) : (y >= 0.5f);
    };
    const bool lo = bit(-D), hi = bit(D);
    if (lo == hi) {  // constant over the range
      mul[k] = 0;
      thr[k] = lo ? 0 : 1;
    } else if (hi) {  // 0 ... 0 1 ... 1: the first dot with bit 1
      int64_t a = -D, b = D;  // bit(a) = 0, bit(b) = 1
      while (b - a > 1) {
        const int64_t m = a + (b - a) / 2;
        (bit(m) ? b : a) = m;
      }
      mul[k] = 1;
      thr[k] = int32_t(b);
    } else {  // 1 ... 1 0 ... 0: the last dot with bit 1, as -dot >= -last
      int64_t a = -D, b = D;  // bit(a) = 1, bit(b) = 0
      while (b - a > 1) {
        const int64_t m = a + (b - a) / 2;
        (bit(m) ? a : b) = m;
      }
      mul[k] = -1;
      thr[k] = int32_t(-a);
    }
  }
  return true;
}
}  // namespace

void run_binary(BinaryJob& job) {
  std::vector<int32_t> mul, thr;
  if (bits_thresholds(job, mul, thr)) {
    job.bit_mul = mul.data();
    job.bit_thr = thr.data();
  }
  const auto& g = job.g;
  const int64_t HW = g.H * g.W;
  const auto tables = offset_tables(g);
  job.offsets = tables->offsets.data();
  job.valid_taps = tables->valid.data();
  job.pixels_per_task = pixels_per_task(g, 4);
  const int64_t tasks = g.N * ((g.pixels() + job.pixels_per_task - 1) / job.pixels_per_task);
  const int64_t tile = 4;  // kBinaryTile
  const int64_t cw64 = (g.C + 63) / 64;
  const int64_t bytes = 8 * ((HW + 1) * cw64 + tile * job.nw) + 4 * (2 * tile * job.Kpad + job.epi.K + 16);
  const auto fn = reinterpret_cast<BinaryTasks>(binary_paths()[chosen("binary")].fn);
  run_tasks(job, fn, tasks, bytes);
}

}  // namespace cmn::cpu
