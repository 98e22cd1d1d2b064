"""The build: every DESIGN 3.0 op exists with its positional signature; the CLI reports the build; CUDA entry
points exist when compiled and refuse clearly until their kernels land."""

import json
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


def test_module_does_not_define_its_own_iostream_code():
    """A build whose objects instantiate libstdc++'s stream templates themselves exports them, and formatting an
    integer into an error message then segfaulted (seen on the GPU image with the CUDA sources built)."""
    import shutil
    import subprocess

    import cmn_ext._C as lib

    if shutil.which("nm") is None:
        pytest.skip("nm (binutils) is not installed")
    defined = subprocess.run(["nm", "-D", "--defined-only", lib.__file__], capture_output=True, text=True,
                             check=True).stdout
    assert "_ZNSo9_M_insertIlEERSoT_" not in defined  # std::ostream::_M_insert<long>
    with pytest.raises(ValueError, match="got 16 at flat index 0"):
        torch.ops.cmn.pack_int4(torch.tensor([[16]], dtype=torch.uint8))
