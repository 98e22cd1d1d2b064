#include "common/validate.h"

#include <ATen/ops/_to_copy.h>

#include <cstdlib>
#include <string>

namespace cmn {

BitEncoding validate_pack_bits(const at::Tensor& x, std::string_view encoding) {
  const char* op = "cmn::pack_bits";
  const auto enc = parse_encoding(op, "encoding", encoding);
  TORCH_CHECK_TYPE(at::isFloatingType(x.scalar_type()), op, ": argument 'x' expected a floating-point dtype, got ",
                   x.scalar_type());
  check_rank(op, "x", x, 4, "[A, C, H, W] (activations NCHW or weights [K, C, kh, kw])");
  return enc;
}

void validate_pack_int4(const at::Tensor& codes) {
  const char* op = "cmn::pack_int4";
  check_dtype(op, "codes", codes, at::kByte);
  TORCH_CHECK_VALUE(codes.dim() >= 1, op, ": argument 'codes' expected at least 1 dimension [..., L], got a scalar");
}

void check_int4_codes_on_device(const at::Tensor& codes) {
  // One reduction and a host sync: a code above 15 is a caller bug, never silently masked.
  const auto bad = codes.reshape({-1}).gt(15);
  if (!bad.any().item<bool>()) return;
  const int64_t at_index = bad.to(at::kByte).argmax().item<int64_t>();
  const int value = codes.reshape({-1}).select(0, at_index).item<int64_t>();
  TORCH_CHECK_VALUE(false, "cmn::pack_int4: argument 'codes' expected values in 0..15, got ", value,
                    " at flat index ", at_index);
}

BinaryConvPlan validate_binary_conv2d(const at::Tensor& x_bits, const at::Tensor& w_bits, int64_t in_channels,
                                      at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                                      std::string_view encoding) {
  const char* op = "cmn::binary_conv2d";
  const auto enc = parse_encoding(op, "encoding", encoding);
  check_dtype(op, "x_bits", x_bits, at::kInt);
  check_dtype(op, "w_bits", w_bits, at::kInt);
  check_rank(op, "x_bits", x_bits, 4, "[N, H, W, ceil(C/32)] from pack_bits");
  check_rank(op, "w_bits", w_bits, 4, "[K, kh, kw, ceil(C/32)] from pack_bits");
  check_same_device(op, {{"x_bits", &x_bits}, {"w_bits", &w_bits}});
  check_pos_int(op, "in_channels", in_channels);
  const int64_t words = ceil_div(in_channels, 32);
  TORCH_CHECK_VALUE(x_bits.size(3) == words, op, ": argument 'x_bits' expected ", words,
                    " packed words per pixel for in_channels=", in_channels, ", got shape ", shape_str(x_bits));
  TORCH_CHECK_VALUE(w_bits.size(3) == words, op, ": argument 'w_bits' expected ", words,
                    " packed words per tap for in_channels=", in_channels, ", got shape ", shape_str(w_bits));
  const auto g = conv_geometry(op, x_bits.size(0), in_channels, x_bits.size(1), x_bits.size(2), w_bits.size(0),
                               w_bits.size(1), w_bits.size(2), stride, padding, dilation);
  check_accumulator_range(op, in_channels * g.taps(), 1, 1);  // |dot| <= taps * C
  return {g, enc};
}

Int8ConvPlan validate_int8_conv2d(const at::Tensor& x, const at::Tensor& w, at::IntArrayRef stride,
                                  at::IntArrayRef padding, at::IntArrayRef dilation,
                                  const std::optional<at::Tensor>& keep, bool read_keep) {
  const char* op = "cmn::int8_conv2d";
  check_dtype2(op, "x", x, at::kChar, at::kByte);
  check_dtype(op, "w", w, at::kChar);
  check_rank(op, "x", x, 4, "[N, C, H, W]");
  check_rank(op, "w", w, 4, "[K, C, kh, kw]");
  at::Tensor keep_t = keep ? *keep : at::Tensor();
  check_same_device(op, {{"x", &x}, {"w", &w}, {"keep", &keep_t}});
  TORCH_CHECK_VALUE(w.size(1) == x.size(1), op, ": channel mismatch: 'x' has C=", x.size(1), " channels but 'w' "
                    "expects ", w.size(1), " (x ", shape_str(x), ", w ", shape_str(w), ")");
  Int8ConvPlan plan;
  plan.x_unsigned = x.scalar_type() == at::kByte;
  plan.w_compacted = false;
  plan.kept_known = true;
  int64_t K = w.size(0);
  if (keep) {
    check_dtype(op, "keep", keep_t, at::kBool);
    TORCH_CHECK_VALUE(keep_t.dim() == 1, op, ": argument 'keep' expected a 1-d bool mask [K], got shape ",
                      shape_str(keep_t));
    K = keep_t.numel();
    if (read_keep) {
      const auto host = keep_t.to(at::kCPU).contiguous();
      const bool* kp = host.data_ptr<bool>();
      for (int64_t k = 0; k < host.numel(); ++k)
        if (kp[k]) plan.kept.push_back(k);
      const int64_t kept = static_cast<int64_t>(plan.kept.size());
      if (w.size(0) == K) {
        plan.w_compacted = false;
      } else if (w.size(0) == kept) {
        plan.w_compacted = true;  // deploy form: only the kept filters are stored
      } else {
        TORCH_CHECK_VALUE(false, op, ": argument 'keep' has ", K, " entries (", kept, " kept) but 'w' has ",
                          w.size(0), " filters; expected either all ", K, " filters or the ", kept,
                          " kept ones (compacted)");
      }
    } else {
      TORCH_CHECK_VALUE(w.size(0) <= K, op, ": argument 'keep' has ", K, " entries but 'w' has ", w.size(0),
                        " filters; expected either all ", K, " filters or the kept ones (compacted)");
      plan.kept_known = false;
      plan.w_compacted = w.size(0) != K;
    }
  } else {
    for (int64_t k = 0; k < K; ++k) plan.kept.push_back(k);
  }
  plan.g = conv_geometry(op, x.size(0), x.size(1), x.size(2), x.size(3), K, w.size(2), w.size(3), stride, padding,
                         dilation);
  check_accumulator_range(op, plan.g.C * plan.g.taps(), plan.x_unsigned ? 255 : 128, 128);
  return plan;
}

void check_levels_device(const char* op, const char* arg, const at::Tensor& levels, const at::Device& codes_device) {
  TORCH_CHECK_VALUE(levels.device().is_cpu() || levels.device() == codes_device, op, ": argument '", arg,
                    "' is on ", levels.device(), " but the codes are on ", codes_device,
                    " (a level table may be on the CPU or beside the codes)");
}

LevelTable read_levels(const char* op, const char* arg, const at::Tensor& levels) {
  check_dtype(op, arg, levels, at::kInt);
  TORCH_CHECK_VALUE(levels.dim() == 1 && levels.size(0) == 16, op, ": argument '", arg,
                    "' expected an int32 level table of shape [16], got shape ", shape_str(levels));
  const auto host = levels.device().is_cpu() ? levels.contiguous() : levels.to(at::kCPU).contiguous();
  LevelTable t;
  t.max_abs = 0;
  t.fits_int8 = true;
  t.shift_add_ok = true;
  t.bad_code = -1;
  for (int c = 0; c < 16; ++c) {
    const int32_t v = host.data_ptr<int32_t>()[c];
    t.v[c] = v;
    const int64_t m = std::llabs(static_cast<int64_t>(v));
    t.max_abs = std::max(t.max_abs, m);
    if (v < -128 || v > 127) t.fits_int8 = false;
    // 0, +-2^p or +-(2^p + 2^q): at most two set bits, shifts below 31.
    if (m >= (int64_t(1) << 30) || __builtin_popcountll(static_cast<unsigned long long>(m)) > 2) {
      if (t.shift_add_ok) t.bad_code = c;
      t.shift_add_ok = false;
    }
  }
  return t;
}

ApotMethod choose_apot_method(const char* op, std::string_view method, const LevelTable& a, const char* a_name,
                              const LevelTable& b, const char* b_name) {
  const std::string m(method);
  auto shift_error = [&](const LevelTable& t, const char* name) {
    TORCH_CHECK_VALUE(false, op, ": method=\"shift_add\" needs every level to be 0, +-2^p or +-(2^p + 2^q); '",
                      name, "'[", t.bad_code, "] = ", t.v[t.bad_code], " is not");
  };
  auto int8_error = [&](const LevelTable& t, const char* name) {
    TORCH_CHECK_VALUE(false, op, ": method=\"int8\" needs every level in [-128, 127]; '", name,
                      "' has max |level| = ", t.max_abs);
  };
  if (m == "shift_add") {
    if (!a.shift_add_ok) shift_error(a, a_name);
    if (!b.shift_add_ok) shift_error(b, b_name);
    return ApotMethod::ShiftAdd;
  }
  if (m == "int8") {
    if (!a.fits_int8) int8_error(a, a_name);
    if (!b.fits_int8) int8_error(b, b_name);
    return ApotMethod::Int8;
  }
  TORCH_CHECK_VALUE(m == "auto", op, ": argument 'method' expected \"auto\", \"shift_add\" or \"int8\", got \"", m,
                    "\"");
  if (a.fits_int8 && b.fits_int8) return ApotMethod::Int8;  // the fast path
  if (a.shift_add_ok && b.shift_add_ok) return ApotMethod::ShiftAdd;
  TORCH_CHECK_VALUE(false, op, ": method=\"auto\" found no valid path: levels neither fit int8 (max |", a_name,
                    "| = ", a.max_abs, ", max |", b_name, "| = ", b.max_abs, ") nor are all shift-add representable");
}

ApotMatmulPlan validate_apot_matmul(const at::Tensor& a_packed, const at::Tensor& a_levels,
                                   const at::Tensor& b_packed, const at::Tensor& b_levels, int64_t k,
                                   std::string_view method) {
  const char* op = "cmn::apot_matmul";
  check_dtype(op, "a_packed", a_packed, at::kByte);
  check_dtype(op, "b_packed", b_packed, at::kByte);
  check_rank(op, "a_packed", a_packed, 2, "[M, ceil(k/2)] from pack_int4");
  check_rank(op, "b_packed", b_packed, 2, "[N, ceil(k/2)] from pack_int4");
  check_same_device(op, {{"a_packed", &a_packed}, {"b_packed", &b_packed}});
  check_levels_device(op, "a_levels", a_levels, a_packed.device());
  check_levels_device(op, "b_levels", b_levels, a_packed.device());
  check_pos_int(op, "k", k);
  const int64_t kb = ceil_div(k, 2);
  TORCH_CHECK_VALUE(a_packed.size(1) == kb, op, ": argument 'a_packed' expected ", kb, " bytes per row for k=", k,
                    ", got shape ", shape_str(a_packed));
  TORCH_CHECK_VALUE(b_packed.size(1) == kb, op, ": argument 'b_packed' expected ", kb, " bytes per row for k=", k,
                    ", got shape ", shape_str(b_packed));
  ApotMatmulPlan p;
  p.M = a_packed.size(0);
  p.N = b_packed.size(0);
  p.k = k;
  p.a = read_levels(op, "a_levels", a_levels);
  p.b = read_levels(op, "b_levels", b_levels);
  p.method = choose_apot_method(op, method, p.a, "a_levels", p.b, "b_levels");
  check_accumulator_range(op, k, p.a.max_abs, p.b.max_abs);
  return p;
}

ApotConvPlan validate_apot_conv2d(const at::Tensor& x_packed, const at::Tensor& x_levels,
                                  const at::Tensor& w_packed, const at::Tensor& w_levels, int64_t in_channels,
                                  at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                                  std::string_view method) {
  const char* op = "cmn::apot_conv2d";
  check_dtype(op, "x_packed", x_packed, at::kByte);
  check_dtype(op, "w_packed", w_packed, at::kByte);
  check_rank(op, "x_packed", x_packed, 4, "[N, H, W, ceil(C/2)] (NHWC codes through pack_int4)");
  check_rank(op, "w_packed", w_packed, 4, "[K, kh, kw, ceil(C/2)] (codes through pack_int4)");
  check_same_device(op, {{"x_packed", &x_packed}, {"w_packed", &w_packed}});
  check_levels_device(op, "x_levels", x_levels, x_packed.device());
  check_levels_device(op, "w_levels", w_levels, x_packed.device());
  check_pos_int(op, "in_channels", in_channels);
  const int64_t cb = ceil_div(in_channels, 2);
  TORCH_CHECK_VALUE(x_packed.size(3) == cb, op, ": argument 'x_packed' expected ", cb,
                    " bytes per pixel for in_channels=", in_channels, ", got shape ", shape_str(x_packed));
  TORCH_CHECK_VALUE(w_packed.size(3) == cb, op, ": argument 'w_packed' expected ", cb,
                    " bytes per tap for in_channels=", in_channels, ", got shape ", shape_str(w_packed));
  ApotConvPlan p;
  p.g = conv_geometry(op, x_packed.size(0), in_channels, x_packed.size(1), x_packed.size(2), w_packed.size(0),
                      w_packed.size(1), w_packed.size(2), stride, padding, dilation);
  p.x = read_levels(op, "x_levels", x_levels);
  p.w = read_levels(op, "w_levels", w_levels);
  p.method = choose_apot_method(op, method, p.x, "x_levels", p.w, "w_levels");
  check_accumulator_range(op, in_channels * p.g.taps(), p.x.max_abs, p.w.max_abs);
  return p;
}

}  // namespace cmn
