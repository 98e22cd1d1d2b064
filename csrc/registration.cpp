// The ONLY place that declares cmn:: schemas and binds kernels to dispatch keys: every op is one m.def below
// and one m.impl per backend (grep for the backend function to find its binding).
#include "ops.h"

#include <ATen/core/LegacyTypeDispatch.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/grad_mode.h>
#include <torch/library.h>

namespace cmn {

namespace {

// Keyword-only epilogue arguments of every conv / matmul op (EpilogueArgs in ops.h; common/epilogue.h).
#define CMN_EPILOGUE_SCHEMA                                                                                    \
  "Tensor? scale=None, Tensor? bias=None, bool relu=False, str output=\"int\", ScalarType? out_dtype=None, " \
  "float out_scale=1.0, str out_round=\"half_even\", int[]? out_range=None, float[]? out_thresholds=None, "  \
  "Tensor? residual=None, float residual_scale=1.0, int residual_stride=1, int residual_offset=0, "           \
  "Tensor(a!)? float_out=None, str? out_encoding=None"

EpilogueArgs make_epilogue(const std::optional<at::Tensor>& scale, const std::optional<at::Tensor>& bias, bool relu,
                           std::string_view output, std::optional<at::ScalarType> out_dtype, double out_scale,
                           std::string_view out_round, at::OptionalIntArrayRef out_range,
                           std::optional<c10::ArrayRef<double>> out_thresholds, const std::optional<at::Tensor>& residual,
                           double residual_scale, int64_t residual_stride, int64_t residual_offset,
                           const std::optional<at::Tensor>& float_out,
                           std::optional<std::string_view> out_encoding = std::nullopt) {
  EpilogueArgs e;
  e.scale = scale;
  e.bias = bias;
  e.relu = relu;
  e.output = output;
  e.out_dtype = out_dtype;
  e.out_scale = out_scale;
  e.out_encoding = out_encoding;
  e.out_round = out_round;
  if (out_range.has_value()) e.out_range = out_range->vec();
  if (out_thresholds.has_value()) e.out_thresholds = out_thresholds->vec();
  e.residual = residual;
  e.residual_scale = residual_scale;
  e.residual_stride = residual_stride;
  e.residual_offset = residual_offset;
  e.float_out = float_out;
  return e;
}

// Adapters from a schema's flat argument list to the backend signatures in ops.h, one per op; the backend is
// a template argument so that each m.impl line names its kernel.
using OptT = std::optional<at::Tensor>;

template <auto Backend>
at::Tensor binary_conv2d_op(const at::Tensor& x_bits, const at::Tensor& w_bits, int64_t in_channels,
                            at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                            std::string_view encoding, const OptT& scale, const OptT& bias, bool relu,
                            std::string_view output, std::optional<at::ScalarType> out_dtype, double out_scale,
                            std::string_view out_round, at::OptionalIntArrayRef out_range,
                            std::optional<c10::ArrayRef<double>> out_thresholds, const OptT& residual, double residual_scale,
                            int64_t residual_stride, int64_t residual_offset, const OptT& float_out,
                            std::optional<std::string_view> out_encoding, const OptT& prepacked) {
  return Backend(x_bits, w_bits, in_channels, stride, padding, dilation, encoding,
                 make_epilogue(scale, bias, relu, output, out_dtype, out_scale, out_round, out_range, out_thresholds,
                               residual, residual_scale, residual_stride, residual_offset, float_out, out_encoding),
                 prepacked);
}

template <auto Backend>
at::Tensor int8_conv2d_op(const at::Tensor& x, const at::Tensor& w, at::IntArrayRef stride, at::IntArrayRef padding,
                          at::IntArrayRef dilation, const OptT& keep, const OptT& scale, const OptT& bias, bool relu,
                          std::string_view output, std::optional<at::ScalarType> out_dtype, double out_scale,
                          std::string_view out_round, at::OptionalIntArrayRef out_range,
                          std::optional<c10::ArrayRef<double>> out_thresholds, const OptT& residual, double residual_scale,
                          int64_t residual_stride, int64_t residual_offset, const OptT& float_out,
                          std::optional<std::string_view> out_encoding, bool compact, const OptT& prepacked) {
  return Backend(x, w, stride, padding, dilation, keep, compact,
                 make_epilogue(scale, bias, relu, output, out_dtype, out_scale, out_round, out_range, out_thresholds,
                               residual, residual_scale, residual_stride, residual_offset, float_out, out_encoding),
                 prepacked);
}

template <auto Backend>
at::Tensor apot_matmul_op(const at::Tensor& a_packed, const at::Tensor& a_levels, const at::Tensor& b_packed,
                          const at::Tensor& b_levels, int64_t k, std::string_view method, const OptT& scale,
                          const OptT& bias, bool relu, std::string_view output,
                          std::optional<at::ScalarType> out_dtype, double out_scale, std::string_view out_round,
                          at::OptionalIntArrayRef out_range, std::optional<c10::ArrayRef<double>> out_thresholds,
                          const OptT& residual, double residual_scale, int64_t residual_stride,
                          int64_t residual_offset, const OptT& float_out, std::optional<std::string_view> out_encoding) {
  return Backend(a_packed, a_levels, b_packed, b_levels, k, method,
                 make_epilogue(scale, bias, relu, output, out_dtype, out_scale, out_round, out_range, out_thresholds,
                               residual, residual_scale, residual_stride, residual_offset, float_out, out_encoding));
}

template <auto Backend>
at::Tensor apot_conv2d_op(const at::Tensor& x_packed, const at::Tensor& x_levels, const at::Tensor& w_packed,
                          const at::Tensor& w_levels, int64_t in_channels, at::IntArrayRef stride,
                          at::IntArrayRef padding, at::IntArrayRef dilation, std::string_view method,
                          const OptT& scale, const OptT& bias, bool relu, std::string_view output,
                          std::optional<at::ScalarType> out_dtype, double out_scale, std::string_view out_round,
                          at::OptionalIntArrayRef out_range, std::optional<c10::ArrayRef<double>> out_thresholds,
                          const OptT& residual, double residual_scale, int64_t residual_stride,
                          int64_t residual_offset, const OptT& float_out, std::optional<std::string_view> out_encoding,
                          const OptT& prepacked) {
  return Backend(x_packed, x_levels, w_packed, w_levels, in_channels, stride, padding, dilation, method,
                 make_epilogue(scale, bias, relu, output, out_dtype, out_scale, out_round, out_range, out_thresholds,
                               residual, residual_scale, residual_stride, residual_offset, float_out, out_encoding),
                 prepacked);
}

// These are integer inference kernels with no derivative. Rather than let autograd produce a tensor with a
// missing gradient, refuse inputs that require grad, naming the op and the argument.
void reject_grad(const c10::OperatorHandle& op, c10::DispatchKeySet ks, torch::jit::Stack* stack) {
  const auto& schema = op.schema();
  const auto n = schema.arguments().size();
  auto args = torch::jit::last(*stack, n);
  for (size_t i = 0; i < n && at::GradMode::is_enabled(); ++i) {
    const auto& v = args[i];
    if (v.isTensor() && v.toTensor().defined() && v.toTensor().requires_grad()) {
      TORCH_CHECK(false, schema.name(), ": argument '", schema.arguments()[i].name(),
                  "' requires grad, but cmn ops are exact integer inference kernels with no gradient. Train with "
                  "the fake-quantization modules and call this op on detached tensors or under torch.no_grad().");
    }
  }
  at::AutoDispatchBelowADInplaceOrView guard;
  op.redispatchBoxed(ks & c10::after_ADInplaceOrView_keyset, stack);
}

constexpr const char* kOpNames[] = {"pack_bits",   "pack_int4",   "binary_conv2d", "int8_conv2d",
                                    "apot_matmul", "apot_conv2d", "int8_prepack",  "binary_prepack"};

}  // namespace
}  // namespace cmn

TORCH_LIBRARY(cmn, m) {
  m.set_python_module("cmn_ext.ops.fake");
  m.def("pack_bits(Tensor x, str encoding=\"pm1\") -> Tensor");
  m.def("pack_int4(Tensor codes) -> Tensor");
  m.def("binary_conv2d(Tensor x_bits, Tensor w_bits, int in_channels, int[2] stride, int[2] padding, "
        "int[2] dilation, str encoding=\"pm1\", *, " CMN_EPILOGUE_SCHEMA ", Tensor? prepacked=None) -> Tensor");
  m.def("int8_conv2d(Tensor x, Tensor w, int[2] stride, int[2] padding, int[2] dilation, Tensor? keep=None, *, "
        CMN_EPILOGUE_SCHEMA ", bool compact=False, Tensor? prepacked=None) -> Tensor");
  m.def("apot_matmul(Tensor a_packed, Tensor a_levels, Tensor b_packed, Tensor b_levels, int k, "
        "str method=\"auto\", *, " CMN_EPILOGUE_SCHEMA ") -> Tensor");
  m.def("apot_conv2d(Tensor x_packed, Tensor x_levels, Tensor w_packed, Tensor w_levels, int in_channels, "
        "int[2] stride, int[2] padding, int[2] dilation, str method=\"auto\", *, " CMN_EPILOGUE_SCHEMA
        ", Tensor? prepacked=None) -> Tensor");
  m.def("int8_prepack(Tensor w) -> Tensor");
  m.def("binary_prepack(Tensor w_bits, int in_channels) -> Tensor");
}

TORCH_LIBRARY_IMPL(cmn, CPU, m) {
  m.impl("pack_bits", &cmn::pack_bits_cpu);
  m.impl("pack_int4", &cmn::pack_int4_cpu);
  m.impl("binary_conv2d", &cmn::binary_conv2d_op<&cmn::binary_conv2d_cpu>);
  m.impl("int8_conv2d", &cmn::int8_conv2d_op<&cmn::int8_conv2d_cpu>);
  m.impl("apot_matmul", &cmn::apot_matmul_op<&cmn::apot_matmul_cpu>);
  m.impl("apot_conv2d", &cmn::apot_conv2d_op<&cmn::apot_conv2d_cpu>);
  m.impl("int8_prepack", &cmn::int8_prepack_cpu);
  m.impl("binary_prepack", &cmn::binary_prepack_cpu);
}

#ifdef CMN_WITH_CUDA
TORCH_LIBRARY_IMPL(cmn, CUDA, m) {
  m.impl("pack_bits", &cmn::pack_bits_cuda);
  m.impl("pack_int4", &cmn::pack_int4_cuda);
  m.impl("binary_conv2d", &cmn::binary_conv2d_op<&cmn::binary_conv2d_cuda>);
  m.impl("int8_conv2d", &cmn::int8_conv2d_op<&cmn::int8_conv2d_cuda>);
  m.impl("apot_matmul", &cmn::apot_matmul_op<&cmn::apot_matmul_cuda>);
  m.impl("apot_conv2d", &cmn::apot_conv2d_op<&cmn::apot_conv2d_cuda>);
}
#endif

TORCH_LIBRARY_IMPL(cmn, Autograd, m) {
  for (const char* name : cmn::kOpNames)
    m.impl(name, torch::CppFunction::makeFromBoxedFunction<&cmn::reject_grad>());
}
