#include "common/checks.h"

#include <limits>
#include <sstream>

namespace cmn {

std::string shape_str(const at::Tensor& t) {
  std::ostringstream os;
  os << t.sizes();
  return os.str();
}

void check_dtype(const char* op, const char* arg, const at::Tensor& t, at::ScalarType expected) {
  TORCH_CHECK_TYPE(t.scalar_type() == expected, op, ": argument '", arg, "' expected dtype ", expected, ", got ",
                   t.scalar_type());
}

void check_dtype2(const char* op, const char* arg, const at::Tensor& t, at::ScalarType e1, at::ScalarType e2) {
  TORCH_CHECK_TYPE(t.scalar_type() == e1 || t.scalar_type() == e2, op, ": argument '", arg, "' expected dtype ",
                   e1, " or ", e2, ", got ", t.scalar_type());
}

void check_rank(const char* op, const char* arg, const at::Tensor& t, int64_t rank, const char* layout) {
  TORCH_CHECK_VALUE(t.dim() == rank, op, ": argument '", arg, "' expected a ", rank, "-d tensor ", layout,
                    ", got shape ", shape_str(t));
}

void check_same_device(const char* op, std::initializer_list<std::pair<const char*, const at::Tensor*>> ts) {
  const std::pair<const char*, const at::Tensor*>* first = nullptr;
  for (const auto& p : ts) {
    if (!p.second->defined()) continue;
    if (!first) {
      first = &p;
      continue;
    }
    TORCH_CHECK_VALUE(p.second->device() == first->second->device(), op, ": all tensors must be on one device; '",
                      first->first, "' is on ", first->second->device(), " but '", p.first, "' is on ",
                      p.second->device());
  }
}

int64_t check_pos_int(const char* op, const char* arg, int64_t v) {
  TORCH_CHECK_VALUE(v >= 1, op, ": argument '", arg, "' expected a positive integer, got ", v);
  return v;
}

BitEncoding parse_encoding(const char* op, const char* arg, std::string_view s) {
  if (s == "pm1") return BitEncoding::PM1;
  if (s == "01") return BitEncoding::ZeroOne;
  TORCH_CHECK_VALUE(false, op, ": argument '", arg, "' expected \"pm1\" or \"01\", got \"", std::string(s), "\"");
}

static void check_pair(const char* op, const char* arg, at::IntArrayRef v, int64_t min_value) {
  TORCH_CHECK_VALUE(v.size() == 2, op, ": argument '", arg, "' expected a list of two ints, got ", v.size(),
                    " values");
  TORCH_CHECK_VALUE(v[0] >= min_value && v[1] >= min_value, op, ": argument '", arg, "' expected values >= ",
                    min_value, ", got ", v);
}

ConvGeom conv_geometry(const char* op, int64_t N, int64_t C, int64_t H, int64_t W, int64_t K, int64_t KH,
                       int64_t KW, at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation) {
  check_pair(op, "stride", stride, 1);
  check_pair(op, "padding", padding, 0);
  check_pair(op, "dilation", dilation, 1);
  TORCH_CHECK_VALUE(KH >= 1 && KW >= 1, op, ": kernel must be at least 1x1, got ", KH, "x", KW);
  ConvGeom g{N, C, H, W, K, KH, KW, stride[0], stride[1], padding[0], padding[1], dilation[0], dilation[1], 0, 0};
  const int64_t eh = g.DH * (KH - 1) + 1, ew = g.DW * (KW - 1) + 1;
  const int64_t hp = H + 2 * g.PH, wp = W + 2 * g.PW;
  TORCH_CHECK_VALUE(eh <= hp && ew <= wp, op, ": kernel larger than padded input: dilated kernel ", eh, "x", ew,
                    " but padded input is ", hp, "x", wp, " (input ", H, "x", W, ", padding ", padding, ")");
  g.HO = (hp - eh) / g.SH + 1;
  g.WO = (wp - ew) / g.SW + 1;
  return g;
}

void check_accumulator_range(const char* op, int64_t terms, int64_t max_abs_a, int64_t max_abs_b) {
  const long double worst = static_cast<long double>(terms) * max_abs_a * max_abs_b;
  TORCH_CHECK_VALUE(worst <= static_cast<long double>(std::numeric_limits<int32_t>::max()), op,
                    ": the int32 accumulator could overflow: ", terms, " terms x max|a| ", max_abs_a, " x max|b| ",
                    max_abs_b, " exceeds 2^31 - 1; split the reduction or use smaller levels");
}

}  // namespace cmn
