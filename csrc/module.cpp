// The Python module `cmn_ext._C`. Importing it loads this library, whose static TORCH_LIBRARY blocks register
// the torch.ops.cmn.* operators. It also reports how it was built, which CPU kernel paths this CPU can run,
// and lets a caller (tests, benchmarks) pick one.
#include <Python.h>

#include "cpu/kernels/dispatch.h"

#include <c10/util/Exception.h>

#include <string>
#include <vector>

#ifndef CMN_VERSION
#define CMN_VERSION "unknown"
#endif

namespace {

PyObject* str_list(const std::vector<std::string>& items) {
  PyObject* list = PyList_New(Py_ssize_t(items.size()));
  if (!list) return nullptr;
  for (size_t i = 0; i < items.size(); ++i) PyList_SET_ITEM(list, Py_ssize_t(i), PyUnicode_FromString(items[i].c_str()));
  return list;
}

bool put(PyObject* dict, const char* key, PyObject* value) {
  if (!value) return false;
  const int rc = PyDict_SetItemString(dict, key, value);
  Py_DECREF(value);
  return rc == 0;
}

// cpu_paths() -> {"features": [...], "int8": {"built": [...], "available": [...], "selected": str}, "binary": {...}}
PyObject* cpu_paths(PyObject*, PyObject*) {
  try {
    PyObject* out = PyDict_New();
    if (!out || !put(out, "features", str_list(cmn::cpu::cpu_feature_names()))) return nullptr;
    for (const char* family : {"int8", "binary"}) {
      PyObject* d = PyDict_New();
      if (!d || !put(d, "built", str_list(cmn::cpu::cpu_paths(family, false))) ||
          !put(d, "available", str_list(cmn::cpu::cpu_paths(family, true))) ||
          !put(d, "selected", PyUnicode_FromString(cmn::cpu::cpu_path(family).c_str())) || !put(out, family, d)) {
        Py_XDECREF(out);
        return nullptr;
      }
    }
    if (!put(out, "winograd", PyBool_FromLong(cmn::cpu::winograd_enabled()))) {
      Py_XDECREF(out);
      return nullptr;
    }
    return out;
  } catch (const c10::Error& e) {
    PyErr_SetString(PyExc_ValueError, e.what_without_backtrace());
    return nullptr;
  }
}

// set_cpu_path(family, name): name "" or None restores the default (the fastest path this CPU has).
PyObject* set_cpu_path(PyObject*, PyObject* args) {
  const char* family = nullptr;
  const char* name = nullptr;
  if (!PyArg_ParseTuple(args, "sz", &family, &name)) return nullptr;
  try {
    cmn::cpu::set_cpu_path(family, name ? name : "");
  } catch (const c10::Error& e) {
    PyErr_SetString(PyExc_ValueError, e.what_without_backtrace());
    return nullptr;
  }
  Py_RETURN_NONE;
}

// set_winograd(mode): 1 on, 0 off, -1 default (on unless CMN_CPU_WINOGRAD=0).
PyObject* set_winograd(PyObject*, PyObject* args) {
  int mode = -1;
  if (!PyArg_ParseTuple(args, "i", &mode)) return nullptr;
  cmn::cpu::set_winograd(mode);
  Py_RETURN_NONE;
}

PyMethodDef methods[] = {
    {"cpu_paths", cpu_paths, METH_NOARGS, "CPU features and the CPU kernel paths built, available and selected."},
    {"set_cpu_path", set_cpu_path, METH_VARARGS, "set_cpu_path(family, name): pick a CPU kernel path ('' = default)."},
    {"set_winograd", set_winograd, METH_VARARGS, "set_winograd(mode): integer Winograd for 3x3 int8 convs: 1, 0, -1 = default."},
    {nullptr, nullptr, 0, nullptr}};

PyModuleDef cmn_module = {PyModuleDef_HEAD_INIT, "_C", "cmn_ext compiled operator library", -1, methods};

}  // namespace

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
