"""The end-to-end deploy benchmark's harness on tiny settings (it checks the harness, not speed)."""

import pytest
import torch

from cmn_ext.bench import deploy

pytestmark = pytest.mark.slow  # runs five deploy engines end to end


def test_deploy_benchmark_harness(tmp_path):
    res = deploy.run(batches=(2,), rounds=1, agree_images=12, onnx=False, log=lambda m: None, arch="resnet8")
    models = {r["model"] for r in res["rows"]}
    assert {"torch fp32 NCHW", "torch fp32 channels_last", "cmn binary", "cmn int8", "cmn int8_pruned", "cmn apot",
            "cmn cascade"} <= models
    for r in res["rows"]:
        assert r["images_per_s"] > 0 and r["vs_torch_fp32"] > 0
        if r["model"].startswith("cmn "):
            assert 0.0 <= r["agree_with_qat"] <= 1.0
    assert res["machine"]["threads"] == torch.get_num_threads() and "features" in res["machine"]
    json_path, md_path = deploy.save(res, str(tmp_path))
    assert "| cmn apot |" in open(md_path).read() and json_path.endswith("deploy_cpu.json")
