"""Every ``python -m ...`` command in README.md parses: its flags exist and their values are valid."""

import collections
import json
import os
import re
import shlex
import subprocess
import sys

from conftest import REPO_ROOT, subprocess_env

# Parses each command's flags in a fresh process per module (binaries may define flags of the same name).
CHECK = """
import json, sys
from absl import flags
module = __import__(sys.argv[1], fromlist=["main"])
getattr(module, "define_flags", lambda: None)()  # clients define theirs in run()
for argv in json.loads(sys.argv[2]):
    flags.FLAGS.unparse_flags()
    flags.FLAGS([sys.argv[1]] + argv)
    if sys.argv[1] == "trainers.train":
        module.config_from_flags().validate()
"""


def readme_commands():
    """{module: [argv, ...]} of every ``python -m MODULE ...`` line in the README's bash blocks."""
    text = open(os.path.join(REPO_ROOT, "README.md")).read()
    commands = collections.defaultdict(list)
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #")[0]
            match = re.search(r"python3? -m ([\w.]+)(.*)", line)
            if match and match.group(1) not in ("venv", "pytest", "pip"):
                commands[match.group(1)].append(shlex.split(match.group(2)))
    return commands


def parse_in_subprocess(module, argvs):
    """Runs CHECK for ``module`` over the list of argument lists ``argvs``: the CompletedProcess."""
    command = [sys.executable, "-c", CHECK, module, json.dumps(argvs)]
    return subprocess.run(command, env=subprocess_env(), cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)


def test_every_readme_command_parses():
    commands = readme_commands()
    assert {"trainers.train", "trainers.evaluate", "trainers.sample", "export.export"} <= set(commands)
    for module, argvs in commands.items():
        result = parse_in_subprocess(module, argvs)
        assert result.returncode == 0, f"{module}: {result.stderr[-2000:]}"


def test_the_readme_check_catches_a_bad_flag():
    result = parse_in_subprocess("trainers.sample", [["--helpful"]])
    assert result.returncode != 0 and "helpful" in result.stderr
