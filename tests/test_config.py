"""Config validation: unknown keys at any depth, types and ranges, YAML errors, all before a run starts."""

import pytest

from cmn_ext.cli import main
from cmn_ext.config import load_config


@pytest.mark.parametrize("override, message", [
    ("train.epohcs=3", r"unknown key 'train.epohcs' \(did you mean 'epochs'\?\)"),
    ("train.lrr=1", r"unknown key 'train.lrr' \(did you mean 'lr'\?\)"),
    ("compress.rato=0.9", r"unknown key 'compress.rato' \(did you mean 'ratio'\?\)"),
    ("trian.epochs=3", r"unknown key 'trian' \(did you mean 'train'\?\)"),
    ("train.epochs=0", r"'train.epochs' expected an integer >= 1, got 0"),
    ("train.epochs=-1", r"'train.epochs' expected an integer >= 1, got -1"),
    ("train.epochs=3.7", r"'train.epochs' expected an integer >= 1, got 3.7"),
    ("train.epochs=abc", r"'train.epochs' expected an integer >= 1, got 'abc'"),
    ("train.lr=-1", r"'train.lr' expected a finite number > 0, got -1"),
    ("train.lr=.nan", r"'train.lr' expected a finite number > 0, got nan"),
    ("train.amp=maybe", r"'train.amp' expected true or false, got 'maybe'"),
    ("data.limit=abc", r"'data.limit' expected null, an integer >= 1"),
    ("data.val_fraction=1.0", r"'data.val_fraction' expected a finite number in \[0, 1\), got 1.0"),
    ("model.name=resnet21", r"'model.name' expected a model name"),
    ("prune={method: l1}", r"'prune.method' expected one of \['magnitude', 'fpgm'\], got 'l1'"),
    ("prune.ratoi=0.5", r"unknown key 'prune.ratoi' \(did you mean 'ratio'\?\)"),
    ("quant.weight={kind: dorefa, bits: 4, bist: 2}", r"'quant.weight': make_quantizer: unknown keys \['bist'\]"),
    ("quant.first=fp16", r"'quant.first' expected one of \['fp', '8bit', 'same'\], got 'fp16'"),
    ("cascade.search.methods=[l2]", r"'cascade.search.methods' expected a list of"),
    ("cascade.hi.train.lr=0", r"'cascade.hi.train.lr' expected a finite number > 0, got 0"),
    ("search.evolution.popluation=5", r"unknown key 'search.evolution.popluation' \(did you mean 'population'\?\)"),
    ("compress.ppq.qat.epoch=5", r"unknown key 'compress.ppq.qat.epoch' \(did you mean 'epochs'\?\)"),
])
def test_override_mistakes_name_the_key(override, message):
    with pytest.raises(ValueError, match=message):
        load_config(None, [override])


def test_every_problem_is_reported_at_once():
    with pytest.raises(ValueError, match="3 problems") as e:
        load_config(None, ["train.epochs=0", "train.lr=-1", "data.seed=x"])
    assert all(k in str(e.value) for k in ("'train.epochs'", "'train.lr'", "'data.seed'"))


def test_nested_typo_in_a_file_names_the_file(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("train: {epochs: 2}\ncascade:\n  search: {recal: [5, 95, 5]}\n")
    with pytest.raises(ValueError, match=rf"{p}: unknown key 'cascade.search.recal' \(did you mean 'recall'\?\)"):
        load_config(str(p))


def test_malformed_yaml_names_the_file_and_line(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("train:\n  epochs: 2\n  lr: [0.1\nmodel: {name: resnet8}\n")
    with pytest.raises(ValueError, match=rf"{p}: not valid YAML:[\s\S]*\"{p}\", line \d+"):
        load_config(str(p))
    with pytest.raises(ValueError, match=r"override 'train.lr=\[0.1': the value is not valid YAML"):
        load_config(None, ["train.lr=[0.1"])


def test_valid_configs_pass_unchanged():
    cfg = load_config(None, ["train.epochs=2", "data.limit={train: 8}", "quant={weight: {kind: binary}, act: "
                             "{kind: binary, encoding: '01'}, first: fp, last: fp}", "cascade.lo.train.epochs=0"])
    assert cfg.train.epochs == 2 and cfg.data.limit == {"train": 8} and cfg.cascade.lo.train == {"epochs": 0}


def test_cli_rejects_a_bad_config_before_writing_anything(tmp_path, capsys):
    run = tmp_path / "r"
    assert main(["train", "train.epohcs=3", f"run_dir={run}", "--no-progress"]) == 2
    assert "unknown key 'train.epohcs'" in capsys.readouterr().err
    assert not run.exists()


class _Captured(Exception):
    pass


@pytest.mark.parametrize("extra, schedule", [([], "plateau"), (["train.schedule=cosine"], "cosine")])
def test_spq_ppq_resolve_to_the_paper_plateau_schedule(monkeypatch, tmp_path, extra, schedule):
    """Without a config file the SPQ / PPQ recipe trains with the papers' plateau schedule (x0.9 after 3 epochs
    without a better validation top-1), not the global multistep default; an explicit choice still wins."""
    from cmn_ext.compress import pipeline

    seen = {}

    def capture(cfg, method, progress=True):
        seen.update(cfg=cfg, method=method)
        raise _Captured

    monkeypatch.setattr(pipeline, "run", capture)
    for method in ("spq", "ppq"):
        with pytest.raises(_Captured):
            main(["compress", "--method", method, f"weights={tmp_path / 'fp.pt'}", *extra])
        train = seen["cfg"].train
        assert seen["method"] == method and train.schedule == schedule
        assert (train.factor, train.patience) == (0.9, 3)
