"""Run directories, files and failures as a user meets them: one process per run directory, no silent
overwrite of a finished run, clear errors naming a bad file (exit code 2, nothing overwritten), JSON-lines
records that survive a torn last line, atomic writes."""

import json
import os
import signal
import subprocess
import sys

import pytest
import torch

from cmn_ext.cli import main
from cmn_ext.files import (
    BadFileError,
    RunDirBusyError,
    append_jsonl,
    load,
    read_jsonl,
    run_dir_lock,
    save_atomic,
    write_text_atomic,
)
from cmn_ext.models import build_model, load_pretrained
from cmn_ext.train import make_schedule

pytestmark = pytest.mark.slow  # pipeline runs; `pytest -m "not slow"` is the kernel suite

TINY = ["data.limit={train: 32, val: 16, test: 16}", "train.epochs=1", "train.batch_size=16", "train.schedule=none",
        "model.name=resnet8", "--no-progress", "--json"]


# --- run directory lock ----------------------------------------------------------------------------------------
def test_second_holder_of_a_run_dir_is_refused_naming_the_first(tmp_path):
    with run_dir_lock(str(tmp_path)):
        with pytest.raises(RunDirBusyError, match=rf"{tmp_path} is in use by pid {os.getpid()}"):
            with run_dir_lock(str(tmp_path)):
                pass
    with run_dir_lock(str(tmp_path)):  # released when the block ends
        pass


def test_run_dir_lock_is_released_when_its_holder_is_killed(tmp_path):
    code = ("import os, signal, sys; from cmn_ext.files import run_dir_lock\n"
            "with run_dir_lock(sys.argv[1]):\n    os.kill(os.getpid(), signal.SIGKILL)")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True)
    assert proc.returncode == -signal.SIGKILL
    with run_dir_lock(str(tmp_path)):
        pass


def test_cli_train_on_a_busy_run_dir_exits_2(tmp_path, capsys):
    with run_dir_lock(str(tmp_path)):
        assert main(["train", *TINY, f"run_dir={tmp_path}"]) == 2
    assert f"in use by pid {os.getpid()}" in capsys.readouterr().err
    assert not (tmp_path / "config.yaml").exists()


# --- finished runs are not overwritten silently --------------------------------------------------------------
def test_rerun_without_resume_is_refused_and_overwrite_starts_over(tmp_path, capsys):
    run = tmp_path / "r"
    assert main(["train", *TINY, f"run_dir={run}"]) == 0
    best = (run / "best.pt").read_bytes()
    capsys.readouterr()
    assert main(["train", *TINY, "train.lr=0.5", f"run_dir={run}"]) == 2
    err = capsys.readouterr().err
    assert "already holds a run" in err and "--resume" in err and "--overwrite" in err
    assert (run / "best.pt").read_bytes() == best
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 1
    assert main(["train", *TINY, f"run_dir={run}", "--overwrite"]) == 0
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 1  # a new run, not appended to the old one
    assert main(["train", *TINY, f"run_dir={run}", "--overwrite", "--resume"]) == 2


def test_resume_after_a_kill_between_log_and_save_has_no_duplicate_rows_or_orphans(tmp_path, capsys):
    run = tmp_path / "r"
    assert main(["train", *TINY, f"run_dir={run}"]) == 0
    # Killed after epoch 2's metrics row was written, while its checkpoint was being written.
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 2, "lr": 0.1, "train_loss": 9.0}\n')
    (run / ".tmp-killed.pt").write_bytes(b"partial")
    assert main(["train", *TINY, "train.epochs=2", f"run_dir={run}", "--resume"]) == 0
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2] and rows[1]["train_loss"] != 9.0
    assert len((run / "metrics.csv").read_text().splitlines()) == 3  # header + 2 epochs
    assert not (run / ".tmp-killed.pt").exists()


# --- bad files: one clear message naming the file, exit code 2 --------------------------------------------------
def _bad_files(tmp_path):
    good = tmp_path / "good.pt"
    torch.save({"model": {"w": torch.zeros(3)}}, good)
    blob = good.read_bytes()
    files = {"empty.pt": b"", "truncated.pt": blob[: len(blob) // 2], "random.pt": os.urandom(4096),
             "text.pt": b"not a checkpoint\n"}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    return [tmp_path / name for name in files]


def test_load_names_a_bad_file(tmp_path):
    for path in _bad_files(tmp_path):
        with pytest.raises(BadFileError, match=rf"^{path}: "):
            load(str(path))
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load(str(tmp_path / "missing.pt"))


@pytest.mark.parametrize("command", ["eval", "convert", "train-weights"])
def test_cli_exits_2_on_a_bad_file(tmp_path, capsys, command):
    path = _bad_files(tmp_path)[1]
    argv = {"eval": ["eval", "--weights", str(path), "--model", "resnet8", "--no-progress"],
            "convert": ["convert", "--checkpoint", str(path), "--out", str(tmp_path / "d.pt"), "--no-progress"],
            "train-weights": ["train", *TINY, f"weights={path}", f"run_dir={tmp_path / 'r'}"]}[command]
    assert main(argv) == 2
    assert str(path) in capsys.readouterr().err
    assert not (tmp_path / "d.pt").exists()


def test_truncated_deploy_file_names_the_file(tmp_path):
    from cmn_ext.nn import convert, load_deploy, quantize_model, save_deploy

    spec = {"weight": {"kind": "binary"}, "act": {"kind": "binary", "encoding": "01"}, "first": "fp", "last": "fp"}
    model = quantize_model(build_model("resnet8"), spec).eval()
    path = tmp_path / "deploy.pt"
    save_deploy(convert(model)[0], str(path), {"model": "resnet8", "num_classes": 10, "quant": spec})
    load_deploy(str(path))
    path.write_bytes(path.read_bytes()[:-200])
    with pytest.raises(BadFileError, match=rf"^{path}: cannot be read as a torch checkpoint"):
        load_deploy(str(path))


def test_wrong_model_or_head_size_names_the_file(tmp_path):
    path = tmp_path / "r8_100.pt"
    torch.save(build_model("resnet8", num_classes=100).state_dict(), path)
    with pytest.raises(ValueError, match=rf"{path}: checkpoint does not fit the model: .*size mismatch"):
        load_pretrained(build_model("resnet8"), str(path))


def test_corrupt_resume_checkpoint_fails_before_anything_is_written(tmp_path, capsys):
    run = tmp_path / "r"
    assert main(["train", *TINY, f"run_dir={run}"]) == 0
    config = (run / "config.yaml").read_text()
    last = run / "last.pt"
    last.write_bytes(last.read_bytes()[:100])
    capsys.readouterr()
    assert main(["train", *TINY, "train.epochs=2", f"run_dir={run}", "--resume"]) == 2
    assert f"{last}: cannot be read as a torch checkpoint" in capsys.readouterr().err
    assert (run / "config.yaml").read_text() == config


def test_convert_refuses_to_replace_its_checkpoint(tmp_path, capsys):
    run = tmp_path / "r"
    assert main(["train", *TINY, f"run_dir={run}"]) == 0
    final = run / "final.pt"
    before = final.read_bytes()
    capsys.readouterr()
    assert main(["convert", "--checkpoint", str(final), "--out", str(final), "--no-progress"]) == 2
    assert "'out' must differ from 'checkpoint'" in capsys.readouterr().err
    assert final.read_bytes() == before


# --- JSON lines and atomic writes ----------------------------------------------------------------------------
def test_jsonl_torn_last_line_is_dropped_and_the_next_append_starts_a_new_line(tmp_path):
    path = str(tmp_path / "rows.jsonl")
    append_jsonl(path, {"a": 1})
    with open(path, "a") as f:
        f.write('{"a": 2, "b"')  # a kill mid-write
    with pytest.warns(UserWarning, match="torn last line 2"):
        assert read_jsonl(path) == [{"a": 1}]
    append_jsonl(path, {"a": 3})
    with pytest.raises(BadFileError, match=rf"{path}: line 2 is not a JSON record"):
        read_jsonl(path)  # now in the middle: not a torn write, a corrupt file
    assert read_jsonl(str(tmp_path / "none.jsonl")) == []


def test_failed_atomic_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    path = tmp_path / "x.pt"
    save_atomic({"v": 1}, str(path))

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("cannot pickle")

    with pytest.raises(RuntimeError, match="cannot pickle"):
        save_atomic({"v": Unpicklable()}, str(path))
    assert torch.load(path, weights_only=True) == {"v": 1}
    write_text_atomic(str(tmp_path / "t.txt"), "hello")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.txt", "x.pt"]


# --- schedules --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("epochs, milestones", [(1, []), (2, [1]), (3, [1, 2]), (8, [4, 6])])
def test_multistep_default_milestones_never_start_decayed(epochs, milestones):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    schedule, _ = make_schedule(opt, {"schedule": "multistep"}, epochs)
    assert sorted(schedule.milestones) == milestones
    assert opt.param_groups[0]["lr"] == 0.1
