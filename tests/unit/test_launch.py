"""Starting `app.py` with settings it cannot start with: one clear line on stderr, exit
code 2, no traceback. Only loopback addresses are used."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from core.config import Settings
from tests.net import free_port

ROOT = Path(__file__).resolve().parents[2]


def start(tmp_path, *args, env=None):
    """`python app.py ARGS` as a user runs it, with a private work folder."""
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("XBDLAB_")}, **(env or {})}
    return subprocess.run([sys.executable, "app.py", "--work", str(tmp_path / "work"), *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=120)


def one_line_error(out: subprocess.CompletedProcess) -> str:
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr
    return lines[0]


@pytest.mark.parametrize("auth", ["me", "me:", ":s3cr3t-pw"])
def test_a_malformed_auth_is_one_line_and_exit_code_2(tmp_path, auth):
    line = one_line_error(start(tmp_path, "--port", str(free_port()), "--auth", auth))
    assert "--auth" in line and "USER:PASSWORD" in line
    assert "s3cr3t-pw" not in line  # the password is never echoed


def test_a_malformed_auth_variable_too(tmp_path):
    line = one_line_error(start(tmp_path, "--port", str(free_port()), env={"XBDLAB_AUTH": "nopassword"}))
    assert "XBDLAB_AUTH" in line


def test_a_port_in_use_is_one_line_and_exit_code_2(tmp_path):
    port = free_port()
    with socket.socket() as held:
        held.bind(("127.0.0.1", port))
        held.listen()
        line = one_line_error(start(tmp_path, "--host", "127.0.0.1", "--port", str(port)))
    assert f"Port {port} on 127.0.0.1 is already in use" in line and "--port" in line


def test_a_port_that_is_not_a_number_in_the_environment(tmp_path):
    line = one_line_error(start(tmp_path, env={"XBDLAB_PORT": "eighty"}))
    assert "XBDLAB_" in line


@pytest.mark.parametrize("host, local", [("127.0.0.1", True), ("127.0.0.2", True), ("localhost", True),
                                         ("::1", True), ("[::1]", True), ("0.0.0.0", False),
                                         ("192.168.1.20", False), ("lab.example.org", False)])
def test_only_loopback_hosts_count_as_this_machine_only(host, local):
    s = Settings.load(env={}, host=host)
    assert s.local_only is local
    assert s.folder_roots == (None if local else (s.data_dir,))


def test_any_folder_lifts_the_folder_limit_by_flag_or_variable():
    assert Settings.load(env={}, host="0.0.0.0", any_folder=True).folder_roots is None
    assert Settings.load(env={"XBDLAB_ANY_FOLDER": "1", "XBDLAB_HOST": "0.0.0.0"}).folder_roots is None


def test_help_lists_any_folder(tmp_path):
    out = subprocess.run([sys.executable, "app.py", "--help"], cwd=ROOT, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0 and "--any-folder" in out.stdout
