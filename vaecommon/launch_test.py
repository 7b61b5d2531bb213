"""`vaecommon.launch.ProcessGroups`: per-process arguments, environment and logs, exit codes, the
deadline, and every process's output in a failure message (the one that died says why only in
its own log)."""

from __future__ import annotations

import sys
import time

import pytest

from vaecommon import launch

# process i prints its id and the environment's TAG, then exits with status i * 3
CHILD = "import os, sys; i = int(sys.argv[1]); print(f'process {i} tag {os.environ[\"TAG\"]}'); sys.exit(i * 3)"


def test_a_group_reports_each_exit_code_and_every_log(tmp_path):
    groups = launch.ProcessGroups(tmp_path / "logs")
    group = groups.spawn("g", 2, lambda i: [sys.executable, "-c", CHILD, str(i)],
                         env={"TAG": "x", "RANK": "7"}, env_for=lambda i: {"TAG": f"t{i}"})
    assert groups.wait("g", group, time.time() + 60) == [0, 3]
    assert groups.log("g", 1) == "process 1 tag t1\n"
    assert groups.log("g") == "--- g.0.log\nprocess 0 tag t0\n\n--- g.1.log\nprocess 1 tag t1\n"


def test_the_launcher_environment_does_not_leak_into_a_group(tmp_path):
    groups = launch.ProcessGroups(tmp_path)
    code = "import os, sys; sys.exit(1 if 'RANK' in os.environ else 0)"
    group = groups.spawn("g", 1, lambda i: [sys.executable, "-c", code], env={"RANK": "3"})
    assert groups.wait("g", group, time.time() + 60) == [0]


def test_a_group_past_its_deadline_is_killed_and_named_with_its_output(tmp_path):
    groups = launch.ProcessGroups(tmp_path)
    code = "import time; print('waiting', flush=True); time.sleep(600)"
    group = groups.spawn("slow", 2, lambda i: [sys.executable, "-c", code], env={})
    printed = time.time() + 60
    while not all(f.stat().st_size for f in tmp_path.glob("slow.*.log")) and time.time() < printed:
        time.sleep(0.1)  # both have printed
    with pytest.raises(AssertionError, match=r"(?s)slow: still running.*slow\.0\.log\nwaiting\n.*slow\.1\.log\nwaiting"):
        groups.wait("slow", group, time.time() + 0.5)
    assert all(p.returncode is not None for p in group)  # killed and reaped
