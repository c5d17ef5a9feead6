"""Settings come from flags, then XBDLAB_* variables, then safe defaults."""

from pathlib import Path

import pytest

from core.config import DEMO_SCENES, Settings


def test_defaults_listen_on_this_machine_only_and_open_the_demo_scenes():
    s = Settings.load(env={})
    assert s.host == "127.0.0.1"
    assert s.data_dir == DEMO_SCENES
    assert s.auth_pair() is None
    assert s.runs == Path("lab-work") / "runs"


def test_environment_then_flags_override_defaults():
    env = {"XBDLAB_PORT": "9001", "XBDLAB_HOST": "0.0.0.0", "XBDLAB_WORK_DIR": "/tmp/w"}
    s = Settings.load(env=env, port=7000, host=None)
    assert s.port == 7000  # the flag wins
    assert s.host == "0.0.0.0"  # None flags do not override
    assert s.cache_dir == Path("/tmp/w/cache")


def test_runs_dir_flag_wins_over_the_work_folder():
    s = Settings.load(env={}, work_dir="w", runs_dir="r")
    assert s.runs == Path("r")


@pytest.mark.parametrize("bad", ["user", ":pw", "user:"])
def test_malformed_auth_is_refused(bad):
    with pytest.raises(ValueError, match="USER:PASSWORD"):
        Settings.load(env={}, auth=bad).auth_pair()


def test_settings_are_frozen():
    with pytest.raises(Exception):
        Settings.load(env={}).port = 1  # type: ignore[misc]
