"""The GPU benchmark harness in dry-run mode (tiny shapes, CPU kernels): record fields, files, merge."""

import json

from cmn_ext.bench import gpu

FIELDS = {"op", "backend", "shape", "time_us", "tops", "baseline", "baseline_time_us", "speedup"}


def test_dry_run_records_write_and_merge(tmp_path):
    env = gpu.environment()
    parts = []
    for family in ("binary_conv", "apot"):
        rows = gpu.run(family, dry_run=True, progress=False)
        assert rows and all(set(r) == FIELDS for r in rows)
        assert all(r["time_us"] > 0 and abs(r["speedup"] - r["baseline_time_us"] / r["time_us"]) < 0.01 * r["speedup"] + 1e-3
                   for r in rows)
        parts.append(gpu.write(str(tmp_path), env, rows, f"part_{family}"))
    merged = json.loads(open(gpu.merge(str(tmp_path), parts)).read())
    assert {r["op"] for r in merged["results"]} == {"binary_conv2d", "apot_matmul", "apot_conv2d"}
    md = (tmp_path / f"{gpu.device_slug(env)}.md").read_text()
    assert "| op | backend | shape | cmn (us) | TOPS |" in md
