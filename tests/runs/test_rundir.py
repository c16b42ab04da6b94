import pytest

from tunesmith.errors import TunesmithError
from tunesmith.runs.rundir import RunDir, find_resume_point


def make_run(tmp_path, complete=(2, 4), partial=(6,)):
    run = tmp_path / "run"
    run.mkdir()
    (run / "recipe.yaml").write_text("method: lora\n")
    for step in complete:
        (run / f"checkpoint-{step}").mkdir()
        (run / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
    for step in partial:  # cut off mid-save: trainer_state.json is written last
        (run / f"checkpoint-{step}").mkdir()
    return run


def test_resume_skips_a_checkpoint_cut_off_mid_save(tmp_path):
    run = make_run(tmp_path)
    found, checkpoint = find_resume_point(str(run))
    assert checkpoint.name == "checkpoint-4"
    with pytest.raises(TunesmithError, match="incomplete checkpoint"):
        find_resume_point(str(run / "checkpoint-6"))


def test_resume_errors_are_sentences(tmp_path):
    with pytest.raises(TunesmithError, match="does not exist"):
        find_resume_point(str(tmp_path / "nope"))
    run = make_run(tmp_path, complete=(), partial=())
    with pytest.raises(TunesmithError, match="no complete checkpoint"):
        find_resume_point(str(run))


def test_final_save_is_atomic(tmp_path):
    run = RunDir(tmp_path)

    def broken(path):
        path.mkdir()
        (path / "half").write_text("x")
        raise RuntimeError("disk full")

    run.save_final("model", lambda p: (p.mkdir(), (p / "weights").write_text("v1")))
    with pytest.raises(RuntimeError):
        run.save_final("model", broken)
    assert (tmp_path / "model" / "weights").read_text() == "v1"  # the previous result is intact
