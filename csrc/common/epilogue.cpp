#include "common/epilogue.h"

#include "cpu/kernels/isa.h"

#include <ATen/ops/empty.h>

#include <cmath>
#include <limits>
#include <string>

namespace cmn {

namespace {

at::Tensor nhwc(const at::Tensor& t) { return t.dim() == 4 ? t.permute({0, 2, 3, 1}).contiguous() : t.contiguous(); }

bool nhwc_contiguous(const at::Tensor& t) { return t.dim() == 4 ? t.permute({0, 2, 3, 1}).is_contiguous() : t.is_contiguous(); }

void check_residual(const char* op, Epilogue& e, const EpilogueArgs& a, int64_t N, at::IntArrayRef spatial,
                    const at::TensorOptions& opts) {
  const auto& r = *a.residual;
  const auto dt = r.scalar_type();
  TORCH_CHECK_TYPE(dt == at::kFloat || dt == at::kHalf || dt == at::kBFloat16 || dt == at::kChar || dt == at::kByte,
                   op, ": argument 'residual' expected float32, float16, bfloat16, int8 or uint8 (codes), got ", dt);
  const int64_t rank = 2 + int64_t(spatial.size());
  TORCH_CHECK_VALUE(r.dim() == rank, op, ": argument 'residual' expected a ", rank, "-d tensor ",
                    rank == 4 ? "[N, Cr, Hr, Wr]" : "[M, Cr]", ", got shape ", shape_str(r));
  TORCH_CHECK_VALUE(r.size(0) == N, op, ": argument 'residual' expected ", N, " rows (the batch), got shape ",
                    shape_str(r));
  TORCH_CHECK_VALUE(r.device() == opts.device(), op, ": argument 'residual' is on ", r.device(),
                    " but the inputs are on ", opts.device());
  TORCH_CHECK_VALUE(a.residual_stride >= 1, op, ": argument 'residual_stride' expected a positive integer, got ",
                    a.residual_stride);
  TORCH_CHECK_VALUE(std::isfinite(a.residual_scale), op, ": argument 'residual_scale' expected a finite number, got ",
                    a.residual_scale);
  e.res_stride = a.residual_stride;
  e.res_offset = a.residual_offset;
  e.residual_scale = static_cast<float>(a.residual_scale);
  e.res_c = r.size(1);
  if (rank == 4) {
    e.res_h = r.size(2);
    e.res_w = r.size(3);
    const int64_t need_h = (spatial[0] - 1) * a.residual_stride + 1, need_w = (spatial[1] - 1) * a.residual_stride + 1;
    TORCH_CHECK_VALUE(spatial[0] == 0 || spatial[1] == 0 || (e.res_h >= need_h && e.res_w >= need_w), op,
                      ": argument 'residual' is ", e.res_h, "x", e.res_w, " but an output of ", spatial[0], "x",
                      spatial[1], " with residual_stride=", a.residual_stride, " needs at least ", need_h, "x", need_w);
  } else {
    TORCH_CHECK_VALUE(a.residual_stride == 1, op, ": argument 'residual_stride' applies to convolutions only, got ",
                      a.residual_stride);
  }
  e.residual = nhwc(r);
}

void check_float_out(const char* op, Epilogue& e, const at::Tensor& f, const std::vector<int64_t>& values_shape,
                     const at::TensorOptions& opts) {
  check_dtype(op, "float_out", f, at::kFloat);
  TORCH_CHECK_VALUE(f.sizes() == at::IntArrayRef(values_shape), op, ": argument 'float_out' expected shape ",
                    at::IntArrayRef(values_shape), ", got ", shape_str(f));
  TORCH_CHECK_VALUE(f.device() == opts.device(), op, ": argument 'float_out' is on ", f.device(),
                    " but the inputs are on ", opts.device());
  TORCH_CHECK_VALUE(nhwc_contiguous(f), op, ": argument 'float_out' expected ",
                    values_shape.size() == 4 ? "channels_last (NHWC) contiguous memory, e.g. "
                                               "torch.empty(shape).to(memory_format=torch.channels_last)"
                                             : "a contiguous tensor",
                    ", got strides ", f.strides());
  e.float_out = f;
}

}  // namespace

Epilogue Epilogue::make(const char* op, const EpilogueArgs& a, int64_t N, int64_t K, at::IntArrayRef spatial,
                        const at::TensorOptions& opts, BitEncoding default_bits_encoding) {
  Epilogue e;
  e.K = K;
  e.P = 1;
  for (auto s : spatial) e.P *= s;
  e.WO = spatial.size() == 2 ? spatial[1] : 1;
  const std::string out(a.output);
  if (out == "int") e.kind = OutKind::Int;
  else if (out == "float") e.kind = OutKind::Float;
  else if (out == "int8") e.kind = OutKind::Int8;
  else if (out == "uint8") e.kind = OutKind::Uint8;
  else if (out == "bits") e.kind = OutKind::Bits;
  else if (out == "int4") e.kind = OutKind::Int4;
  else TORCH_CHECK_VALUE(false, op, ": argument 'output' expected one of \"int\", \"float\", \"int8\", \"uint8\", "
                         "\"bits\", \"int4\", got \"", out, "\"");
  const bool codes = e.kind == OutKind::Int8 || e.kind == OutKind::Uint8;

  if (e.kind == OutKind::Int) {
    TORCH_CHECK_VALUE(!a.scale && !a.bias && !a.relu && !a.residual && !a.float_out, op,
                      ": output=\"int\" returns the raw int32 accumulators; 'scale', 'bias', 'relu', 'residual' "
                      "and 'float_out' need output=\"float\", \"int8\", \"uint8\", \"bits\" or \"int4\"");
  }
  if (a.out_dtype) {
    TORCH_CHECK_VALUE(e.kind == OutKind::Float, op, ": argument 'out_dtype' applies to output=\"float\" only, got "
                      "output=\"", out, "\"");
    const auto d = *a.out_dtype;
    TORCH_CHECK_VALUE(d == at::kFloat || d == at::kHalf || d == at::kBFloat16, op, ": argument 'out_dtype' "
                      "expected float32, float16 or bfloat16, got ", d);
    e.float_dtype = d;
  }
  if (a.out_encoding) {
    TORCH_CHECK_VALUE(e.kind == OutKind::Bits, op, ": argument 'out_encoding' applies to output=\"bits\" only, got "
                      "output=\"", out, "\"");
    e.bits_encoding = parse_encoding(op, "out_encoding", *a.out_encoding);
  } else {
    e.bits_encoding = default_bits_encoding;
  }
  if (codes || e.kind == OutKind::Int4) {
    TORCH_CHECK_VALUE(std::isfinite(a.out_scale) && a.out_scale > 0, op, ": argument 'out_scale' expected a "
                      "finite positive number, got ", a.out_scale);
  }
  e.out_scale = static_cast<float>(a.out_scale);
  if (a.out_round == "half_up") {
    e.round_half_up = true;
  } else {
    TORCH_CHECK_VALUE(a.out_round == "half_even", op, ": argument 'out_round' expected \"half_even\" or \"half_up\", "
                      "got \"", std::string(a.out_round), "\"");
  }
  TORCH_CHECK_VALUE(!e.round_half_up || codes, op, ": argument 'out_round' applies to output=\"int8\" or \"uint8\" "
                    "only, got output=\"", out, "\"");
  e.qmin = e.kind == OutKind::Int8 ? -128 : 0;
  e.qmax = e.kind == OutKind::Int8 ? 127 : 255;
  if (a.out_range) {
    TORCH_CHECK_VALUE(codes, op, ": argument 'out_range' applies to output=\"int8\" or \"uint8\" only, got output=\"",
                      out, "\"");
    const auto& r = *a.out_range;
    TORCH_CHECK_VALUE(r.size() == 2 && r[0] <= r[1] && r[0] >= e.qmin && r[1] <= e.qmax, op, ": argument "
                      "'out_range' expected [lo, hi] with ", e.qmin, " <= lo <= hi <= ", e.qmax, ", got ",
                      at::IntArrayRef(r));
    e.qmin = int32_t(r[0]);
    e.qmax = int32_t(r[1]);
  }
  if (e.kind == OutKind::Int4) {
    TORCH_CHECK_VALUE(a.out_thresholds.has_value(), op, ": output=\"int4\" needs 'out_thresholds' (the ascending "
                      "decision levels of the next layer's 4-bit quantizer, at most 15)");
    const auto& t = *a.out_thresholds;
    TORCH_CHECK_VALUE(!t.empty() && t.size() <= 15, op, ": argument 'out_thresholds' expected 1 to 15 values, got ",
                      t.size());
    for (size_t i = 0; i < t.size(); ++i) {
      TORCH_CHECK_VALUE(std::isfinite(t[i]) && (i == 0 || t[i] >= t[i - 1]), op, ": argument 'out_thresholds' "
                        "expected finite ascending values, got ", t[i], " at index ", i);
      e.thresholds.push_back(static_cast<float>(t[i]));
    }
  } else {
    TORCH_CHECK_VALUE(!a.out_thresholds.has_value(), op, ": argument 'out_thresholds' applies to output=\"int4\" "
                      "only, got output=\"", out, "\"");
  }
  e.relu = a.relu;
  auto take = [&](const std::optional<at::Tensor>& t, const char* name) -> at::Tensor {
    if (!t) return at::Tensor();
    check_dtype(op, name, *t, at::kFloat);
    TORCH_CHECK_VALUE(t->dim() == 1 && t->size(0) == K, op, ": argument '", name, "' expected shape [", K,
                      "] (one value per output channel), got ", shape_str(*t));
    TORCH_CHECK_VALUE(t->device() == opts.device(), op, ": argument '", name, "' is on ", t->device(),
                      " but the inputs are on ", opts.device());
    return t->contiguous();
  };
  e.scale = take(a.scale, "scale");
  e.bias = take(a.bias, "bias");
  if (a.residual) check_residual(op, e, a, N, spatial, opts);

  std::vector<int64_t> values{N, K};
  values.insert(values.end(), spatial.begin(), spatial.end());
  if (a.float_out) check_float_out(op, e, *a.float_out, values, opts);

  if (e.kind == OutKind::Bits || e.kind == OutKind::Int4) {
    std::vector<int64_t> shape{N};
    shape.insert(shape.end(), spatial.begin(), spatial.end());
    shape.push_back(e.kind == OutKind::Bits ? ceil_div(K, 32) : ceil_div(K, 2));
    e.out = at::empty(shape, opts.dtype(e.kind == OutKind::Bits ? at::kInt : at::kByte));
    return e;
  }
  at::ScalarType dt = at::kInt;
  if (e.kind == OutKind::Float) dt = e.float_dtype;
  if (e.kind == OutKind::Int8) dt = at::kChar;
  if (e.kind == OutKind::Uint8) dt = at::kByte;
  auto o = opts.dtype(dt);
  if (values.size() == 4) o = o.memory_format(at::MemoryFormat::ChannelsLast);
  e.out = at::empty(values, o);
  return e;
}

cpu::EpiView Epilogue::view(const int32_t* row_of_channel) const {
  cpu::EpiView v;
  switch (kind) {
    case OutKind::Int: v.kind = cpu::OutCode::Int; break;
    case OutKind::Float:
      v.kind = float_dtype == at::kHalf ? cpu::OutCode::F16
               : float_dtype == at::kBFloat16 ? cpu::OutCode::BF16 : cpu::OutCode::F32;
      break;
    case OutKind::Int8: v.kind = cpu::OutCode::S8; break;
    case OutKind::Uint8: v.kind = cpu::OutCode::U8; break;
    case OutKind::Bits: v.kind = cpu::OutCode::Bits; break;
    case OutKind::Int4: v.kind = cpu::OutCode::Int4; break;
  }
  v.relu = relu;
  v.scale = scale.defined() ? scale.data_ptr<float>() : nullptr;
  v.bias = bias.defined() ? bias.data_ptr<float>() : nullptr;
  v.out_scale = out_scale;
  v.round_half_up = round_half_up;
  v.qmin = qmin;
  v.qmax = qmax;
  v.bits_pm1 = bits_encoding == BitEncoding::PM1;
  v.n_thresholds = int32_t(thresholds.size());
  for (size_t i = 0; i < thresholds.size(); ++i) v.thresholds[i] = thresholds[i];
  if (residual.defined()) {
    switch (residual.scalar_type()) {
      case at::kFloat: v.res_kind = cpu::ResCode::F32; break;
      case at::kHalf: v.res_kind = cpu::ResCode::F16; break;
      case at::kBFloat16: v.res_kind = cpu::ResCode::BF16; break;
      case at::kChar: v.res_kind = cpu::ResCode::S8; break;
      default: v.res_kind = cpu::ResCode::U8; break;
    }
    v.res = residual.data_ptr();
    v.res_scale = residual_scale;
    v.res_h = res_h;
    v.res_w = res_w;
    v.res_c = res_c;
    v.res_stride = res_stride;
    v.res_offset = res_offset;
  }
  v.float_out = float_out.defined() ? float_out.data_ptr<float>() : nullptr;
  v.out = out.data_ptr();
  v.K = K;
  v.P = P;
  v.WO = WO;
  v.row_of_channel = row_of_channel;
  return v;
}

void Epilogue::write_pixels(int64_t n, int64_t p0, int64_t np, const int32_t* acc, int64_t ld,
                            const int32_t* row_of_channel) const {
  const auto v = view(row_of_channel);
  std::vector<float> y(K + 1);
  cpu::scalar::epilogue(v, n, p0, np, acc, ld, y.data());
}

}  // namespace cmn
