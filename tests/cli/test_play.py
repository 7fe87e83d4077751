"""`glamhpc play`, driven through Typer's CliRunner with scripted stdin."""

from __future__ import annotations

from minigrid.utils.baby_ai_bot import BabyAIBot
from typer.testing import CliRunner

from glamhpc.cli import app
from glamhpc.envs.textenv import TextEnv

runner = CliRunner()


def _play(*args: str, keys: str) -> tuple[int, str]:
    result = runner.invoke(app, ["play", *args], input=keys)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.output


def test_shows_mission_observation_and_prompt_then_quits() -> None:
    ref = TextEnv("MixedTrainLocal")
    ref.reset(seed=4)
    code, out = _play("MixedTrainLocal", "--seed", "4", keys="q\n")
    assert code == 0
    assert ref.mission in out and ref.task_kind in out
    assert "Goal of the agent: " in out and "Observation 0:" in out
    assert ref.descriptions[0] in out
    assert "0 turn left, 1 turn right, 2 go forward" in out


def test_actions_by_number_and_name_unknown_and_help() -> None:
    code, out = _play("GoToLocal", "--seed", "1", keys="?\n1\nTurn  Left\nfly\n9\nquit\n")
    assert code == 0
    assert "Type an action by number or name" in out
    assert "turn right -> reward 0" in out and "turn left -> reward 0" in out
    assert "unknown action 'fly'; valid: 0 turn left" in out
    assert "unknown action '9'" in out
    assert "Action 1: turn left" in out  # the prompt shows the history


def test_eof_exits_cleanly() -> None:
    code, out = _play("GoToLocal", keys="2\n")  # input ends without 'q'
    assert code == 0 and "Traceback" not in out


def test_success_ends_the_episode_and_starts_the_next() -> None:
    env = TextEnv("GoToLocal")
    env.reset(seed=7)
    bot, names, done = BabyAIBot(env), [], False
    while not done:
        action = bot.replan()
        names.append(env.action_texts[action])
        _, _, terminated, truncated, _ = env.step(action)
        done = terminated or truncated
    code, out = _play("GoToLocal", "--seed", "7", keys="\n".join(names) + "\nq\n")
    assert code == 0
    assert "episode over: SUCCESS" in out
    assert "episode 1 (seed 8)" in out


def test_reset_and_french_and_augmented() -> None:
    code, out = _play("GoToFrench", keys="tourner à droite\nr\nq\n")
    assert code == 0 and "Actions possibles pour l'agent" in out
    assert "tourner à droite -> reward 0" in out and "episode 1 (seed 1)" in out
    code, out = _play("GoToLocal", "--action-space", "augmented", keys="sleep\n8\nq\n")
    assert code == 0 and "sleep -> reward 0" in out and "think -> reward 0" in out


def test_bad_level_and_bad_action_space_are_one_line_errors() -> None:
    result = runner.invoke(app, ["play", "MixedTrainLocl"])
    assert result.exit_code == 2
    assert "unknown level 'MixedTrainLocl'" in result.output and "MixedTrainLocal" in result.output
    assert "Traceback" not in result.output
    result = runner.invoke(app, ["play", "GoToLocal", "--action-space", "bogus"])
    assert result.exit_code == 2 and "unknown action space 'bogus'" in result.output
