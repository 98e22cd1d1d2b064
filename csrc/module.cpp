// The Python module `cmn_ext._C`. Importing it loads this library, whose static TORCH_LIBRARY blocks register
// the torch.ops.cmn.* operators (static initialisers: they need no exported symbol). Its non-tensor surface is
// bound here with pybind11 (the headers torch ships): how it was built, which CPU kernel paths this CPU can
// run and which one each family takes, and a way for a caller (tests, benchmarks) to pick one.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "cpu/kernels/dispatch.h"

#include <c10/util/Exception.h>

#include <optional>
#include <string>
#include <vector>

#ifndef CMN_VERSION
#define CMN_VERSION "unknown"
#endif
#ifndef CMN_CUDA_ARCHS
#define CMN_CUDA_ARCHS ""  // CMAKE_CUDA_ARCHITECTURES, comma-separated; empty without CUDA sources
#endif
#ifndef CMN_CUDA_COMPILER
#define CMN_CUDA_COMPILER ""
#endif

namespace py = pybind11;

namespace {

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  for (size_t start = 0; start < s.size();) {
    const size_t end = std::min(s.find(sep, start), s.size());
    if (end > start) out.push_back(s.substr(start, end - start));
    start = end + 1;
  }
  return out;
}

// {"version", "built_with_torch", "compiler", "cuda_built", "cuda_archs": [...], "cuda_compiler"}
py::dict build_info() {
  py::dict d;
  d["version"] = CMN_VERSION;
  d["built_with_torch"] = CMN_TORCH_VERSION;
#if defined(__clang__)
  d["compiler"] = "clang " __clang_version__;
#elif defined(__GNUC__)
  d["compiler"] = "gcc " __VERSION__;
#else
  d["compiler"] = "unknown";
#endif
#ifdef CMN_WITH_CUDA
  d["cuda_built"] = true;
#else
  d["cuda_built"] = false;
#endif
  d["cuda_archs"] = split(CMN_CUDA_ARCHS, ',');
  d["cuda_compiler"] = CMN_CUDA_COMPILER;
  return d;
}

// {"features": [...], "winograd": bool, "int8" | "binary": {"built", "available", "selected", "ops"}}
py::dict cpu_paths() {
  py::dict out;
  out["features"] = cmn::cpu::cpu_feature_names();
  out["winograd"] = cmn::cpu::winograd_enabled();
  // The ops whose CPU kernel runs on the family's path (cpu/kernels/dispatch.h; the other ops have one path).
  const std::vector<std::pair<const char*, std::vector<std::string>>> families = {
      {"int8", {"int8_conv2d", "apot_conv2d(method='int8')"}}, {"binary", {"binary_conv2d"}}};
  for (const auto& [family, ops] : families) {
    py::dict d;
    d["built"] = cmn::cpu::cpu_paths(family, false);
    d["available"] = cmn::cpu::cpu_paths(family, true);
    d["selected"] = cmn::cpu::cpu_path(family);
    d["ops"] = ops;
    out[family] = d;
  }
  return out;
}

// name None or "" restores the default (the fastest path this CPU has).
void set_cpu_path(const std::string& family, const std::optional<std::string>& name) {
  cmn::cpu::cpu_paths(family, false);  // an unknown family is refused here, naming 'family'
  try {
    cmn::cpu::set_cpu_path(family, name.value_or(""));
  } catch (const c10::Error& e) {
    throw py::value_error(std::string("argument 'name': ") + e.what_without_backtrace());
  }
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "cmn_ext compiled operator library (torch.ops.cmn.*) and its build / CPU-path information";
  // TORCH_CHECK_VALUE (c10::Error and subclasses) -> ValueError. Module-local: a global translator would also
  // apply to torch's own pybind11 bindings, which share pybind11's internals with this module.
  py::register_local_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const c10::Error& e) {
      PyErr_SetString(PyExc_ValueError, e.what_without_backtrace());
    }
  });
  m.attr("version") = CMN_VERSION;
  m.def("build_info", &build_info, "How this library was built: version, torch, compiler, CUDA sources and archs.");
  m.def("cpu_paths", &cpu_paths, "CPU features and the CPU kernel paths built, available and selected.");
  m.def("set_cpu_path", &set_cpu_path, py::arg("family"), py::arg("name") = py::none(),
        "set_cpu_path(family, name): pick a CPU kernel path for 'int8' or 'binary' (None or '' = default).");
  m.def("set_winograd", &cmn::cpu::set_winograd, py::arg("mode"),
        "set_winograd(mode): integer Winograd for 3x3 int8 convs: 1 on, 0 off, -1 default.");
}
