"""The build: every DESIGN 3.0 op exists with its positional signature; the CLI reports the build; CUDA entry
points exist when compiled and refuse clearly until their kernels land."""

import json
import re
import subprocess
import sys

import pytest
import torch

import cmn_ext

POSITIONAL = {
    "pack_bits": ["x", "encoding"],
    "binary_conv2d": ["x_bits", "w_bits", "in_channels", "stride", "padding", "dilation", "encoding"],
    "int8_conv2d": ["x", "w", "stride", "padding", "dilation", "keep"],
    "pack_int4": ["codes"],
    "apot_matmul": ["a_packed", "a_levels", "b_packed", "b_levels", "k", "method"],
    "apot_conv2d": ["x_packed", "x_levels", "w_packed", "w_levels", "in_channels", "stride", "padding", "dilation",
                    "method"],
    "int8_prepack": ["w"],
    "binary_prepack": ["w_bits", "in_channels"],
}


@pytest.mark.parametrize("name", sorted(POSITIONAL))
def test_op_schema_positional_contract(name):
    schema = getattr(torch.ops.cmn, name).default._schema
    positional = [a.name for a in schema.arguments if not a.kwarg_only]
    assert positional == POSITIONAL[name]
    assert all(a.default_value is not None or a.type.kind() == "OptionalType" for a in schema.arguments if a.kwarg_only)


def test_build_info_lists_every_op_on_cpu():
    info = cmn_ext.build_info()
    assert set(info["ops"]) == set(POSITIONAL)
    assert all("CPU" in keys for keys in info["ops"].values())
    assert info["built_with_torch"] == torch.__version__


def test_cli_info_json():
    out = subprocess.run([sys.executable, "-m", "cmn_ext.cli", "info", "--json"], capture_output=True, text=True,
                         check=True)
    info = json.loads(out.stdout)
    assert info["version"] == cmn_ext.__version__ and "binary_conv2d" in info["ops"]


def test_cli_info_text_names_the_selected_cpu_paths():
    out = subprocess.run([sys.executable, "-m", "cmn_ext.cli", "info"], capture_output=True, text=True, check=True)
    paths = cmn_ext.ops.cpu_paths()
    assert f"int8   path {paths['int8']['selected']}" in out.stdout
    assert f"binary path {paths['binary']['selected']}" in out.stdout


def test_triton_kernels_ship_inside_the_package():
    import cmn_ext.triton_kernels  # noqa: F401


def _exported_symbols_nm(path: str) -> set[str] | None:
    import shutil

    if shutil.which("nm") is None:
        return None
    out = subprocess.run(["nm", "-D", "--defined-only", path], capture_output=True, text=True)
    if out.returncode != 0:
        return None
    return {line.split()[-1].split("@")[0] for line in out.stdout.splitlines() if line.strip()}


def _exported_symbols_elf(path: str) -> set[str] | None:
    """The defined symbols of an ELF64 little-endian file's .dynsym, read without binutils."""
    import struct

    with open(path, "rb") as f:
        data = f.read()
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:  # ELFCLASS64, ELFDATA2LSB
        return None
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
    sections = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
    names = set()
    for _, sh_type, _, _, off, size, link, _, _, entsize in sections:
        if sh_type != 11:  # SHT_DYNSYM
            continue
        stroff = sections[link][4]
        for pos in range(off + entsize, off + size, entsize):  # entry 0 is the null symbol
            st_name, _, _, st_shndx = struct.unpack_from("<IBBH", data, pos)
            if st_shndx != 0:  # SHN_UNDEF: imported, not exported
                names.add(data[stroff + st_name:data.index(b"\0", stroff + st_name)].decode())
    return names


# Mangled-name prefixes of libstdc++'s own code: std:: (St, and the abbreviations Sa Sb Ss Si So Sd), also
# behind N / NK (members), T[VISTH] (vtable, typeinfo, its name, VTT, thread-local), GV (guard variable);
# __gnu_cxx::; and the C++ runtime (__cxa_*, __gxx_*, operator new / delete).
_LIBSTDCXX = re.compile(r"^(_Z(T[VISTH]|GVZ?|Z)?N?K?(S[tabsiod]|9__gnu_cxx)|__cxa_|__gxx_|_Zn[wa]|_Zd[la])")


def _exported_symbols():
    import cmn_ext._C as lib

    names = _exported_symbols_nm(lib.__file__)
    if names is None:
        names = _exported_symbols_elf(lib.__file__)
    if names is None:
        pytest.skip("cannot read the module's dynamic symbol table (no nm, not an ELF64 little-endian file)")
    return names


def test_module_exports_its_init_function_and_no_libstdcxx_symbol():
    """A module that exports libstdc++ code (its own instantiations, or a second, static libstdc++ pulled in by
    the CUDA host toolchain's link directories) interposes on the process's libstdc++.so: on the GPU image it
    exported ~4,100 of them and formatting an integer into an error message segfaulted. The build exports
    PyInit__C only (a version script, --exclude-libs,ALL)."""
    names = _exported_symbols()
    assert "PyInit__C" in names
    leaked = sorted(n for n in names if _LIBSTDCXX.match(n))
    assert not leaked, f"{len(leaked)} libstdc++ symbols exported of {len(names)}, e.g. {leaked[:5]}"


def test_elf_reader_agrees_with_nm():
    """The pure-Python reader (used where binutils is missing) reads the same table as nm."""
    import cmn_ext._C as lib

    by_nm = _exported_symbols_nm(lib.__file__)
    if by_nm is None:
        pytest.skip("nm (binutils) is not installed")
    assert _exported_symbols_elf(lib.__file__) == by_nm


def test_error_messages_format_integers():
    """Formatting an integer into an error message (c10::str -> std::ostream) is what crashed with two libstdc++."""
    with pytest.raises(ValueError, match="got 16 at flat index 0"):
        torch.ops.cmn.pack_int4(torch.tensor([[16]], dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"'x' has C=3 channels but 'w' expects 5 \(x \[1, 3, 4, 4\]"):
        torch.ops.cmn.int8_conv2d(torch.zeros(1, 3, 4, 4, dtype=torch.int8), torch.zeros(2, 5, 3, 3, dtype=torch.int8),
                                  [1, 1], [1, 1], [1, 1])


def test_build_info_reports_how_the_module_was_built():
    info = cmn_ext.build_info()
    assert info["version"] == cmn_ext.__version__
    assert isinstance(info["compiler"], str) and info["compiler"]
    assert isinstance(info["cuda_built"], bool)
    assert isinstance(info["cuda_archs"], list) and all(isinstance(a, str) and a for a in info["cuda_archs"])
    if info["cuda_built"]:
        assert info["cuda_archs"] and info["cuda_compiler"].startswith("nvcc ")
    else:
        assert info["cuda_archs"] == [] and info["cuda_compiler"] == ""
    assert info["cpu"] == cmn_ext.ops.cpu_paths()
    assert info["cpu"]["int8"]["ops"][0] == "int8_conv2d" and info["cpu"]["binary"]["ops"] == ["binary_conv2d"]


def test_cli_info_reports_the_cuda_architectures():
    info = cmn_ext.build_info()
    text = subprocess.run([sys.executable, "-m", "cmn_ext.cli", "info"], capture_output=True, text=True,
                          check=True).stdout
    js = json.loads(subprocess.run([sys.executable, "-m", "cmn_ext.cli", "info", "--json"], capture_output=True,
                                   text=True, check=True).stdout)
    assert js["cuda_archs"] == info["cuda_archs"] and js["cpu"]["binary"]["ops"] == ["binary_conv2d"]
    if info["cuda_built"]:
        assert f"architectures {', '.join(info['cuda_archs'])}" in text
    else:
        assert "CUDA sources compiled: no" in text
    assert "for binary_conv2d" in text


def test_set_cpu_path_errors_name_the_argument():
    with pytest.raises(ValueError, match="'family' expected"):
        cmn_ext._C.set_cpu_path("fp64", "scalar")
    with pytest.raises(ValueError, match="argument 'name': .*unknown binary path"):
        cmn_ext._C.set_cpu_path("binary", "avx9000")
    with pytest.raises(TypeError):
        cmn_ext._C.set_cpu_path("binary", 3)
    before = cmn_ext.ops.cpu_paths()["binary"]["selected"]
    try:
        cmn_ext._C.set_cpu_path("binary", "scalar")
        assert cmn_ext.ops.cpu_paths()["binary"]["selected"] == "scalar"
        cmn_ext._C.set_cpu_path("binary", None)  # None restores the default
        assert cmn_ext.ops.cpu_paths()["binary"]["selected"] in cmn_ext.ops.cpu_paths()["binary"]["available"]
    finally:
        cmn_ext._C.set_cpu_path("binary", before)
