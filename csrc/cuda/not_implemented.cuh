// The CUDA kernels arrive with the GPU issue. Until then every CUDA entry point validates its inputs exactly
// like the CPU one and then refuses clearly: it never falls back to the CPU behind the caller's back.
#pragma once

#include <c10/util/Exception.h>

#define CMN_CUDA_NOT_IMPLEMENTED(op)                                                                           \
  TORCH_CHECK_NOT_IMPLEMENTED(false, op, ": not implemented on CUDA yet in this build. Move the inputs to "    \
                              "the CPU (tensor.cpu()) to run the exact CPU kernel.")
