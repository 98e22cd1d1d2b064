// The Python module `cmn_ext._C`. Importing it loads this library, whose static TORCH_LIBRARY blocks register
// the torch.ops.cmn.* operators. It also reports how it was built.
#include <Python.h>

#ifndef CMN_VERSION
#define CMN_VERSION "unknown"
#endif

static PyModuleDef cmn_module = {PyModuleDef_HEAD_INIT, "_C", "cmn_ext compiled operator library", -1, nullptr};

PyMODINIT_FUNC PyInit__C(void) {
  PyObject* m = PyModule_Create(&cmn_module);
  if (!m) return nullptr;
#ifdef CMN_WITH_CUDA
  PyModule_AddIntConstant(m, "cuda_built", 1);
#else
  PyModule_AddIntConstant(m, "cuda_built", 0);
#endif
  PyModule_AddStringConstant(m, "version", CMN_VERSION);
  PyModule_AddStringConstant(m, "built_with_torch", CMN_TORCH_VERSION);
  PyModule_AddStringConstant(m, "cxx", __VERSION__);
  return m;
}
