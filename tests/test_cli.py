import re

import pytest

from minirlhf.__main__ import build_parser, main, parse_seeds

COMMANDS = ("data", "pretrain", "sample", "pipeline", "ship", "compare")


@pytest.mark.parametrize("command", COMMANDS)
def test_every_subcommand_has_help_on_every_flag(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    parser = build_parser()
    sub = parser._subparsers._group_actions[0].choices[command]
    for action in sub._actions:
        if action.option_strings and action.dest != "help":
            assert action.help, f"{command} {action.option_strings} has no help text"
            assert action.option_strings[-1] in text


def test_wrong_preset_is_a_friendly_error(capsys):
    assert main(["pretrain", "--preset", "huge", "--out", "/tmp/never"]) == 2
    err = capsys.readouterr().err
    assert "unknown pipeline preset 'huge'" in err and "course" in err and "Traceback" not in err
    assert main(["pipeline", "--preset", "tiny", "--out", "/tmp/never"]) == 2   # tiny is a model size, not a pipeline
    assert "unknown pipeline preset 'tiny'" in capsys.readouterr().err


def test_missing_checkpoint_folder_is_a_friendly_error(tmp_path, capsys):
    assert main(["sample", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["pipeline", "--pretrained", str(tmp_path / "nope"), "--out", str(tmp_path / "run")]) == 2
    assert "no pretrained checkpoint" in capsys.readouterr().err


def test_seeds_are_parsed():
    assert parse_seeds("0,1,2") == [0, 1, 2]
    assert parse_seeds(" 3, 7 ") == [3, 7]
    assert parse_seeds("5") == [5]


@pytest.mark.parametrize("text, message", [("", "non-negative integers"), ("0,,1", "non-negative integers"),
                                           ("a,b", "non-negative integers"), ("-1,2", "non-negative integers"),
                                           ("1.5", "non-negative integers"), ("0,1,0", "repeats a seed")])
def test_bad_seeds_are_friendly_errors(text, message, tmp_path, capsys):
    with pytest.raises(ValueError, match=message):
        parse_seeds(text)
    assert main(["pipeline", "--preset", "smoke", f"--seeds={text}", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()                     # nothing ran


def test_seed_and_seeds_together_are_refused(tmp_path, capsys):
    assert main(["pipeline", "--preset", "smoke", "--seed", "1", "--seeds", "0,1", "--out", str(tmp_path)]) == 2
    assert "either --seed" in capsys.readouterr().err


def test_ship_refuses_an_unfinished_run(tmp_path, capsys):
    assert main(["ship", str(tmp_path), "--data", str(tmp_path / "data")]) == 2
    assert "not a finished run" in capsys.readouterr().err


def test_help_documents_the_exit_codes(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for code, meaning in (("0", "done"), ("1", "failed while running"), ("2", "the command line or its input"),
                          ("130", "interrupted")):
        assert re.search(rf"^\s+{code}\s+{meaning}", out, re.M), code


def test_steps_zero_is_refused_not_read_as_the_default(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["pretrain", "--preset", "smoke", "--steps", "0", "--out", "/tmp/never"])
    assert exit_info.value.code == 2
    assert "argument --steps: 0 is out of range; give an integer ≥ 1" in capsys.readouterr().err


def test_a_seed_too_large_for_torch_is_refused():
    with pytest.raises(ValueError, match="at most 4294967295"):
        parse_seeds(f"0,{2**32}")


def test_reward_members_reach_the_pipeline_config(tmp_path, capsys, monkeypatch):
    import minirlhf.pipeline as pipeline

    seen = []
    monkeypatch.setattr(pipeline, "run_pipeline", lambda folder, preset, **kw: seen.append(preset))
    assert main(["pipeline", "--preset", "smoke", "--reward-members", "3", "--out", str(tmp_path / "run")]) == 0
    assert seen[0].reward_members == 3 and seen[0].name == "smoke"
    assert main(["pipeline", "--preset", "smoke", "--out", str(tmp_path / "run")]) == 0
    assert seen[1].reward_members == pipeline.smoke_config().reward_members      # the preset's own
    with pytest.raises(SystemExit):
        main(["pipeline", "--reward-members", "0", "--out", str(tmp_path / "run")])
    assert "--reward-members" in capsys.readouterr().err
    with pytest.raises(ValueError, match="reward_members=0: give an integer ≥ 1"):
        pipeline.PipelineConfig(reward_members=0)


def test_the_reward_readout_reaches_the_pipeline_config(tmp_path, capsys, monkeypatch):
    import minirlhf.pipeline as pipeline
    from minirlhf.reward import READOUTS

    seen = []
    monkeypatch.setattr(pipeline, "run_pipeline", lambda folder, preset, **kw: seen.append(preset))
    for readout in READOUTS:   # every readout the model knows is a choice of the command line
        assert main(["pipeline", "--preset", "smoke", "--reward-readout", readout, "--out", str(tmp_path)]) == 0
    assert [cfg.reward_readout for cfg in seen] == list(READOUTS)
    assert pipeline.pipeline_config("course").reward_readout == "last"      # InstructGPT's, the course's
    with pytest.raises(SystemExit):
        main(["pipeline", "--reward-readout", "mean", "--out", str(tmp_path / "run")])
    assert "--reward-readout" in capsys.readouterr().err
    with pytest.raises(ValueError, match="reward_readout='mean': give one of last, sum"):
        pipeline.PipelineConfig(reward_readout="mean")


def test_the_reward_flag_coef_reaches_both_reward_models_config(tmp_path, capsys, monkeypatch):
    import minirlhf.pipeline as pipeline

    seen = []
    monkeypatch.setattr(pipeline, "run_pipeline", lambda folder, preset, **kw: seen.append(preset))
    assert main(["pipeline", "--preset", "smoke", "--reward-flag-coef", "0.5", "--out", str(tmp_path)]) == 0
    assert seen[0].reward.flag_coef == 0.5 and seen[0].reward.epochs == pipeline.smoke_config().reward.epochs
    assert pipeline.pipeline_config("course").reward.flag_coef == 0.0      # InstructGPT trains on rankings only
    with pytest.raises(SystemExit):
        main(["pipeline", "--reward-flag-coef", "-1", "--out", str(tmp_path / "run")])
    assert "--reward-flag-coef" in capsys.readouterr().err


def test_the_reward_surprise_reaches_the_pipeline_config(tmp_path, capsys, monkeypatch):
    import minirlhf.pipeline as pipeline

    seen = []
    monkeypatch.setattr(pipeline, "run_pipeline", lambda folder, preset, **kw: seen.append(preset))
    assert main(["pipeline", "--preset", "smoke", "--reward-surprise", "0.2", "--out", str(tmp_path)]) == 0
    assert seen[0].reward_surprise == 0.2 and seen[0].reward == pipeline.smoke_config().reward
    assert pipeline.pipeline_config("course").reward_surprise == 0.0        # InstructGPT's RM: no prior
    with pytest.raises(SystemExit):
        main(["pipeline", "--reward-surprise", "-1", "--out", str(tmp_path / "run")])
    assert "--reward-surprise" in capsys.readouterr().err
    with pytest.raises(ValueError, match="reward_surprise"):
        pipeline.PipelineConfig(reward_surprise=-0.5)


def test_cut_copies_reach_the_comparisons_config(tmp_path, capsys, monkeypatch):
    import minirlhf.pipeline as pipeline

    seen = []
    monkeypatch.setattr(pipeline, "run_pipeline", lambda folder, preset, **kw: seen.append(preset))
    assert main(["pipeline", "--preset", "smoke", "--cut-copies", "1", "--out", str(tmp_path)]) == 0
    assert seen[0].comparisons.cut_copies == 1 and seen[0].comparisons.k == pipeline.smoke_config().comparisons.k
    assert pipeline.pipeline_config("course").comparisons.cut_copies == 0
    with pytest.raises(SystemExit):
        main(["pipeline", "--cut-copies", "4", "--out", str(tmp_path / "run")])
    assert "--cut-copies" in capsys.readouterr().err
