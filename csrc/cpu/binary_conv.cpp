// Binary convolution on CPU: an exact direct convolution on NHWC bit-packed inputs
// (cpu/kernels/binary_direct.inl: AND-popcount of tap-concatenated patches, instruction set chosen at run
// time), with the fused epilogue.
#include "common/epilogue.h"
#include "common/validate.h"
#include "cpu/kernels/dispatch.h"
#include "cpu/prepack.h"
#include "ops.h"

namespace cmn {

namespace cpu {
Geom geom_of(const ConvGeom& g);
}

at::Tensor binary_conv2d_cpu(const at::Tensor& x_bits, const at::Tensor& w_bits, int64_t in_channels,
                             at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                             std::string_view encoding, const EpilogueArgs& epi,
                             const std::optional<at::Tensor>& prepacked) {
  const char* op = "cmn::binary_conv2d";
  const auto plan = validate_binary_conv2d(x_bits, w_bits, in_channels, stride, padding, dilation, encoding);
  const auto& g = plan.g;
  auto ep = Epilogue::make(op, epi, g.N, g.K, {g.HO, g.WO}, x_bits.options(), plan.enc);
  if (g.N == 0 || g.K == 0 || g.HO * g.WO == 0) return ep.out;

  const at::Tensor packed =
      (prepacked && prepacked->defined()) ? *prepacked : cpu::binary_pack(w_bits, in_channels);
  const auto pk = cpu::binary_packed_view(op, packed, g.K, g.C, g.KH, g.KW);
  const auto x = x_bits.contiguous();

  cpu::BinaryJob job;
  job.g = cpu::geom_of(g);
  job.pm1 = plan.enc == BitEncoding::PM1;
  job.x = reinterpret_cast<const uint32_t*>(x.data_ptr<int32_t>());
  job.x_words = x.size(3);
  job.Kpad = pk.Kpad;
  job.nw = pk.nw;
  job.w_cols = pk.cols;
  job.w_rows = pk.rows;
  job.w_tappop = pk.tappop;
  job.w_total = pk.total;
  job.epi = ep.view();
  cpu::run_binary(job);
  return ep.out;
}

}  // namespace cmn
