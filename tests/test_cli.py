import pytest

from minirlhf.__main__ import build_parser, main

COMMANDS = ("data", "pretrain", "sample", "pipeline", "ship")


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
    assert "unknown preset 'huge'" in err and "course" in err and "Traceback" not in err


def test_missing_checkpoint_folder_is_a_friendly_error(tmp_path, capsys):
    assert main(["sample", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["pipeline", "--pretrained", str(tmp_path / "nope"), "--out", str(tmp_path / "run")]) == 2
    assert "no pre-trained checkpoint" in capsys.readouterr().err


def test_ship_refuses_an_unfinished_run(tmp_path, capsys):
    assert main(["ship", str(tmp_path), "--data", str(tmp_path / "data")]) == 2
    assert "not a finished run" in capsys.readouterr().err
