"""The GPU benchmark harness in dry-run mode (tiny shapes, CPU kernels): record fields, files, merge."""

import json

import torch

import cmn_ext  # noqa: F401

from cmn_ext.bench import gpu

FIELDS = {"op", "backend", "shape", "time_us", "tops", "baseline", "baseline_time_us", "speedup", "exact"}


def test_dry_run_records_write_and_merge(tmp_path):
    env = gpu.environment()
    parts = []
    for family in ("binary_conv", "apot"):
        rows = gpu.run(family, dry_run=True, progress=False)
        assert rows and all(set(r) == FIELDS for r in rows)
        assert all(r["exact"] for r in rows)  # the CPU kernels against themselves on a slice
        assert all(r["time_us"] > 0 and abs(r["speedup"] - r["baseline_time_us"] / r["time_us"]) < 0.01 * r["speedup"] + 1e-3
                   for r in rows)
        parts.append(gpu.write(str(tmp_path), env, rows, f"part_{family}"))
    merged = json.loads(open(gpu.combine_parts(str(tmp_path), parts)).read())
    assert {r["op"] for r in merged["results"]} == {"binary_conv2d", "apot_matmul", "apot_conv2d"}
    md = (tmp_path / f"{gpu.device_slug(env)}.md").read_text()
    assert "| op | backend | shape | cmn (us) | TOPS |" in md


def test_exact_check_catches_a_wrong_backend():
    x = torch.randn(3, 40, 5, 5)
    xb, wb = torch.ops.cmn.pack_bits(x, "01"), torch.ops.cmn.pack_bits(torch.randn(8, 40, 3, 3), "pm1")
    args = (xb, wb, 40, [1, 1], [1, 1], [1, 1], "01")
    right = gpu.Backend(torch.ops.cmn.binary_conv2d, args, {}, {})
    wrong = gpu.Backend(lambda *a, **k: torch.ops.cmn.binary_conv2d(*a, **k) + 1, args, {}, {})
    assert right.exact(torch.ops.cmn.binary_conv2d) and not wrong.exact(torch.ops.cmn.binary_conv2d)
