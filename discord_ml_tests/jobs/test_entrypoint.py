"""Typed entrypoints: what an asset builds is exactly what the job parses, quoted for the shell."""

from __future__ import annotations

import shlex

import pytest
from hypothesis import given
from hypothesis import strategies as st

from discord_ml.orchestration.smoke import SmokeArgs
from discord_ml.quests.config import InferenceConfig, TrainConfig
from discord_ml.quests.entrypoints import InferenceArgs, PrepArgs, TrainArgs

texts = st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=30)


@given(root=texts, dates=st.lists(texts, min_size=1, max_size=4), epochs=st.integers(1, 100),
       drill=st.none() | st.integers(1, 9), rate=st.floats(1e-6, 1.0))  # fmt: skip
def test_commands_round_trip_through_the_shell_and_the_parser(
    root: str, dates: list[str], epochs: int, drill: int | None, rate: float
) -> None:
    train = TrainArgs(root=root, date=dates[0], epochs=epochs, fail_once_at_epoch=drill, learning_rate=rate)
    program, flag, module, *argv = shlex.split(train.command())
    assert (program, flag, module) == ("python", "-m", "discord_ml.quests.tasks.train")
    assert TrainArgs.parse(argv) == train
    prep = PrepArgs(root=root, date=dates)
    assert PrepArgs.parse(shlex.split(prep.command())[3:]) == prep


def test_none_is_left_out_and_required_flags_are_required(capsys: pytest.CaptureFixture[str]) -> None:
    assert "--model" not in InferenceArgs(root="r", date="2026-11-04").argv()
    assert "--fail-once-at-epoch" not in TrainArgs(root="r", date="2026-11-04").argv()
    with pytest.raises(SystemExit) as exited:
        TrainArgs.parse(["--root", "r"])
    assert exited.value.code == 2 and "--date" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        TrainArgs.parse(["--root", "r", "--date", "d", "--model", "resnet"])
    assert "invalid choice: 'resnet'" in capsys.readouterr().err


def test_the_launchpad_and_the_jobs_share_their_defaults() -> None:
    job, config = TrainArgs(root="r", date="d"), TrainConfig()
    assert (config.model_name, config.data_window, config.workers, config.epochs, config.batch_size,
            config.learning_rate, config.sparse_learning_rate, config.embedding_dim) == (
        job.model, job.window, job.workers, job.epochs, job.batch_size, job.learning_rate, job.sparse_learning_rate,
        job.embedding_dim)  # fmt: skip
    inference = InferenceArgs(root="r", date="d")
    assert (InferenceConfig().top_k, InferenceConfig().actors) == (inference.top_k, inference.actors)
    assert SmokeArgs.parse([]) == SmokeArgs()
