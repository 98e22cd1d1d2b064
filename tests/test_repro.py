"""benchmarks/repro_gpu.sh in dry-run mode (tiny settings, digits, CPU): every method runs end to end and leaves
its results file and a checkpoint archive that fits what a device call can bring back."""

import json
import os
import subprocess
import sys
import tarfile

import pytest

from cmn_ext.bench import repro

pytestmark = pytest.mark.slow  # pipeline runs
ROOT = os.path.join(os.path.dirname(__file__), "..")


@pytest.mark.parametrize("method", repro.METHODS)
def test_dry_run_writes_results_and_checkpoints(method, tmp_path):
    out, run = tmp_path / "out", tmp_path / "run"
    env = {**os.environ, "REPRO_DRY_RUN": "1", "PYTHON": sys.executable, "OUT": str(out),
           "REPRO_RUN_DIR": str(run)}
    proc = subprocess.run(["bash", os.path.join(ROOT, "benchmarks", "repro_gpu.sh"), method], env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads((out / f"{method}.json").read_text())
    assert res["method"] == method and res["finished"] and res["dry_run"] and res["wall_s"] > 0
    assert res["epochs"] and res["data"] == "digits" and res["result"]
    headline = {"cmn": "cascade_acc", "ppq": "paper_size_reduction", "spq": "acc_drop",
                "apq": "predictor_pairwise_acc"}[method]
    assert res[headline] is not None
    archive = out / f"run_{method}.tar.gz"
    assert 0 < archive.stat().st_size <= repro.LIMIT
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    assert "config.yaml" in names and not any(os.path.isabs(n) or ".." in n for n in names)
    # at most 8 files come back from a device call
    assert len(os.listdir(out)) <= 8


def test_pack_leaves_out_what_does_not_fit(tmp_path):
    run = tmp_path / "run"
    (run / "lo").mkdir(parents=True)
    (run / "config.yaml").write_text("name: x\n")
    (run / "lo" / "final.pt").write_bytes(b"\0" * 1000)
    (run / "lo" / "last.pt").write_bytes(b"\0" * 10)  # not needed to continue: never packed
    res = repro.pack(str(run), str(tmp_path / "a.tar.gz"), limit=500)
    assert res["packed"] == 1 and res["left_out"] == ["lo/final.pt"]


def test_collect_marks_an_unfinished_run(tmp_path):
    (tmp_path / "run").mkdir()
    path = repro.collect("ppq", str(tmp_path / "run"), str(tmp_path / "out"), 12.0)
    res = json.loads(open(path).read())
    assert res["finished"] is False and res["epochs"] is None and res["wall_s"] == 12.0
    with pytest.raises(ValueError, match="'method' expected one of"):
        repro.collect("xyz", str(tmp_path), str(tmp_path), 1.0)
