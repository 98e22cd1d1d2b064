// The ONLY place that declares cmn:: schemas and binds kernels to dispatch keys.
#include "ops.h"

#include <ATen/core/LegacyTypeDispatch.h>
#include <ATen/core/grad_mode.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

namespace cmn {

#define CMN_EPILOGUE_SCHEMA                                                                                    \
  "Tensor? scale=None, Tensor? bias=None, bool relu=False, str output=\"int\", ScalarType? out_dtype=None, " \
  "float out_scale=1.0"

static EpilogueArgs make_epilogue(const std::optional<at::Tensor>& scale, const std::optional<at::Tensor>& bias, bool relu,
                           std::string_view output, std::optional<at::ScalarType> out_dtype, double out_scale,
                           std::optional<std::string_view> out_encoding = std::nullopt) {
  return EpilogueArgs{scale, bias, relu, output, out_dtype, out_scale, out_encoding};
}

// Adapters from the schema's flat argument list to the backend signatures in ops.h.
#define CMN_DEFINE_ADAPTERS(dev)                                                                                  \
  at::Tensor binary_conv2d_##dev##_op(const at::Tensor& x_bits, const at::Tensor& w_bits, int64_t in_channels,    \
                                      at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,  \
                                      std::string_view encoding, const std::optional<at::Tensor>& scale,          \
                                      const std::optional<at::Tensor>& bias, bool relu, std::string_view output,  \
                                      std::optional<at::ScalarType> out_dtype, double out_scale,                  \
                                      std::optional<std::string_view> out_encoding) {                             \
    return binary_conv2d_##dev(x_bits, w_bits, in_channels, stride, padding, dilation, encoding,                  \
                               make_epilogue(scale, bias, relu, output, out_dtype, out_scale, out_encoding));     \
  }                                                                                                               \
  at::Tensor int8_conv2d_##dev##_op(const at::Tensor& x, const at::Tensor& w, at::IntArrayRef stride,             \
                                    at::IntArrayRef padding, at::IntArrayRef dilation,                            \
                                    const std::optional<at::Tensor>& keep, const std::optional<at::Tensor>& scale, \
                                    const std::optional<at::Tensor>& bias, bool relu, std::string_view output,    \
                                    std::optional<at::ScalarType> out_dtype, double out_scale, bool compact) {    \
    return int8_conv2d_##dev(x, w, stride, padding, dilation, keep, compact,                                      \
                             make_epilogue(scale, bias, relu, output, out_dtype, out_scale));                     \
  }                                                                                                               \
  at::Tensor apot_matmul_##dev##_op(const at::Tensor& a_packed, const at::Tensor& a_levels,                       \
                                    const at::Tensor& b_packed, const at::Tensor& b_levels, int64_t k,            \
                                    std::string_view method, const std::optional<at::Tensor>& scale,              \
                                    const std::optional<at::Tensor>& bias, bool relu, std::string_view output,    \
                                    std::optional<at::ScalarType> out_dtype, double out_scale) {                  \
    return apot_matmul_##dev(a_packed, a_levels, b_packed, b_levels, k, method,                                   \
                             make_epilogue(scale, bias, relu, output, out_dtype, out_scale));                     \
  }                                                                                                               \
  at::Tensor apot_conv2d_##dev##_op(const at::Tensor& x_packed, const at::Tensor& x_levels,                       \
                                    const at::Tensor& w_packed, const at::Tensor& w_levels, int64_t in_channels,  \
                                    at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,    \
                                    std::string_view method, const std::optional<at::Tensor>& scale,              \
                                    const std::optional<at::Tensor>& bias, bool relu, std::string_view output,    \
                                    std::optional<at::ScalarType> out_dtype, double out_scale) {                  \
    return apot_conv2d_##dev(x_packed, x_levels, w_packed, w_levels, in_channels, stride, padding, dilation,       \
                             method, make_epilogue(scale, bias, relu, output, out_dtype, out_scale));             \
  }

CMN_DEFINE_ADAPTERS(cpu)
#ifdef CMN_WITH_CUDA
CMN_DEFINE_ADAPTERS(cuda)
#endif

#define CMN_BIND_KERNELS(m, dev)                              \
  m.impl("pack_bits", &cmn::pack_bits_##dev);                 \
  m.impl("pack_int4", &cmn::pack_int4_##dev);                 \
  m.impl("binary_conv2d", &cmn::binary_conv2d_##dev##_op);    \
  m.impl("int8_conv2d", &cmn::int8_conv2d_##dev##_op);        \
  m.impl("apot_matmul", &cmn::apot_matmul_##dev##_op);        \
  m.impl("apot_conv2d", &cmn::apot_conv2d_##dev##_op);

namespace {
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

}  // namespace
}  // namespace cmn

TORCH_LIBRARY(cmn, m) {
  m.set_python_module("cmn_ext.ops.fake");
  m.def("pack_bits(Tensor x, str encoding=\"pm1\") -> Tensor");
  m.def("pack_int4(Tensor codes) -> Tensor");
  m.def("binary_conv2d(Tensor x_bits, Tensor w_bits, int in_channels, int[2] stride, int[2] padding, "
        "int[2] dilation, str encoding=\"pm1\", *, " CMN_EPILOGUE_SCHEMA ", str? out_encoding=None) -> Tensor");
  m.def("int8_conv2d(Tensor x, Tensor w, int[2] stride, int[2] padding, int[2] dilation, Tensor? keep=None, *, "
        CMN_EPILOGUE_SCHEMA ", bool compact=False) -> Tensor");
  m.def("apot_matmul(Tensor a_packed, Tensor a_levels, Tensor b_packed, Tensor b_levels, int k, "
        "str method=\"auto\", *, " CMN_EPILOGUE_SCHEMA ") -> Tensor");
  m.def("apot_conv2d(Tensor x_packed, Tensor x_levels, Tensor w_packed, Tensor w_levels, int in_channels, "
        "int[2] stride, int[2] padding, int[2] dilation, str method=\"auto\", *, " CMN_EPILOGUE_SCHEMA
        ") -> Tensor");
}

TORCH_LIBRARY_IMPL(cmn, CPU, m) { CMN_BIND_KERNELS(m, cpu) }

#ifdef CMN_WITH_CUDA
TORCH_LIBRARY_IMPL(cmn, CUDA, m) { CMN_BIND_KERNELS(m, cuda) }
#endif

TORCH_LIBRARY_IMPL(cmn, Autograd, m) {
  for (const char* name : {"pack_bits", "pack_int4", "binary_conv2d", "int8_conv2d", "apot_matmul", "apot_conv2d"})
    m.impl(name, torch::CppFunction::makeFromBoxedFunction<&cmn::reject_grad>());
}
