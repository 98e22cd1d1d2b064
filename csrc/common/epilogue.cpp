#include "common/epilogue.h"

#include <ATen/ops/empty.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <type_traits>

namespace cmn {

Epilogue Epilogue::make(const char* op, const EpilogueArgs& a, int64_t N, int64_t K, at::IntArrayRef spatial,
                        const at::TensorOptions& opts, BitEncoding default_bits_encoding) {
  Epilogue e;
  e.K = K;
  e.P = 1;
  for (auto s : spatial) e.P *= s;
  const std::string out(a.output);
  if (out == "int") e.kind = OutKind::Int;
  else if (out == "float") e.kind = OutKind::Float;
  else if (out == "int8") e.kind = OutKind::Int8;
  else if (out == "uint8") e.kind = OutKind::Uint8;
  else if (out == "bits") e.kind = OutKind::Bits;
  else TORCH_CHECK_VALUE(false, op, ": argument 'output' expected one of \"int\", \"float\", \"int8\", \"uint8\", "
                         "\"bits\", got \"", out, "\"");

  if (e.kind == OutKind::Int) {
    TORCH_CHECK_VALUE(!a.scale && !a.bias && !a.relu, op, ": output=\"int\" returns the raw int32 accumulators; "
                      "'scale', 'bias' and 'relu' need output=\"float\", \"int8\", \"uint8\" or \"bits\"");
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
  if (e.kind == OutKind::Int8 || e.kind == OutKind::Uint8) {
    TORCH_CHECK_VALUE(std::isfinite(a.out_scale) && a.out_scale > 0, op, ": argument 'out_scale' expected a "
                      "finite positive number, got ", a.out_scale);
  }
  e.out_scale = static_cast<float>(a.out_scale);
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

  std::vector<int64_t> shape{N};
  if (e.kind == OutKind::Bits) {
    shape.insert(shape.end(), spatial.begin(), spatial.end());
    shape.push_back(ceil_div(K, 32));
  } else {
    shape.push_back(K);
    shape.insert(shape.end(), spatial.begin(), spatial.end());
  }
  at::ScalarType dt = at::kInt;
  if (e.kind == OutKind::Float) dt = e.float_dtype;
  if (e.kind == OutKind::Int8) dt = at::kChar;
  if (e.kind == OutKind::Uint8) dt = at::kByte;
  e.out = at::empty(shape, opts.dtype(dt));
  return e;
}

namespace {

template <typename Out, typename Convert>
void write_values(const Epilogue& e, int64_t n, int64_t p0, int64_t np, const int32_t* acc, int64_t ld,
                  const int64_t* row_of_channel, Convert convert) {
  Out* out = e.out.data_ptr<Out>() + n * e.K * e.P;
  const float* s = e.scale.defined() ? e.scale.data_ptr<float>() : nullptr;
  const float* b = e.bias.defined() ? e.bias.data_ptr<float>() : nullptr;
  for (int64_t k = 0; k < e.K; ++k) {
    const int64_t r = row_of_channel ? row_of_channel[k] : k;
    Out* o = out + k * e.P + p0;
    for (int64_t j = 0; j < np; ++j) {
      const int32_t v = r >= 0 ? acc[r * ld + j] : 0;
      if constexpr (std::is_same_v<Out, int32_t>) {
        o[j] = v;
      } else {
        float y = static_cast<float>(v);
        if (s) y = y * s[k];
        if (b) y = y + b[k];
        if (e.relu) y = std::max(y, 0.f);
        o[j] = convert(y);
      }
    }
  }
}

void write_bits(const Epilogue& e, int64_t n, int64_t p0, int64_t np, const int32_t* acc, int64_t ld,
                const int64_t* row_of_channel) {
  const int64_t words = ceil_div(e.K, 32);
  int32_t* out = e.out.data_ptr<int32_t>() + (n * e.P + p0) * words;
  const float* s = e.scale.defined() ? e.scale.data_ptr<float>() : nullptr;
  const float* b = e.bias.defined() ? e.bias.data_ptr<float>() : nullptr;
  const bool pm1 = e.bits_encoding == BitEncoding::PM1;
  std::fill(out, out + np * words, 0);
  for (int64_t k = 0; k < e.K; ++k) {
    const int64_t r = row_of_channel ? row_of_channel[k] : k;
    const uint32_t bit = 1u << (k % 32);
    for (int64_t j = 0; j < np; ++j) {
      float y = static_cast<float>(r >= 0 ? acc[r * ld + j] : 0);
      if (s) y = y * s[k];
      if (b) y = y + b[k];
      if (e.relu) y = std::max(y, 0.f);
      const bool set = pm1 ? (y < 0.f) : (y >= 0.5f);
      if (set) reinterpret_cast<uint32_t*>(out)[j * words + k / 32] |= bit;
    }
  }
}

}  // namespace

void Epilogue::write_block(int64_t n, int64_t p0, int64_t np, const int32_t* acc, int64_t ld,
                           const int64_t* row_of_channel) const {
  const float step = out_scale;  // quantization step of the int8 / uint8 output
  switch (kind) {
    case OutKind::Int:
      write_values<int32_t>(*this, n, p0, np, acc, ld, row_of_channel, [](float) { return 0; });
      break;
    case OutKind::Float:
      if (float_dtype == at::kFloat)
        write_values<float>(*this, n, p0, np, acc, ld, row_of_channel, [](float y) { return y; });
      else if (float_dtype == at::kHalf)
        write_values<c10::Half>(*this, n, p0, np, acc, ld, row_of_channel, [](float y) { return c10::Half(y); });
      else
        write_values<c10::BFloat16>(*this, n, p0, np, acc, ld, row_of_channel,
                                    [](float y) { return c10::BFloat16(y); });
      break;
    case OutKind::Int8:
      write_values<int8_t>(*this, n, p0, np, acc, ld, row_of_channel, [step](float y) {
        return static_cast<int8_t>(std::clamp(std::nearbyint(y / step), -128.f, 127.f));
      });
      break;
    case OutKind::Uint8:
      write_values<uint8_t>(*this, n, p0, np, acc, ld, row_of_channel, [step](float y) {
        return static_cast<uint8_t>(std::clamp(std::nearbyint(y / step), 0.f, 255.f));
      });
      break;
    case OutKind::Bits:
      write_bits(*this, n, p0, np, acc, ld, row_of_channel);
      break;
  }
}

}  // namespace cmn
