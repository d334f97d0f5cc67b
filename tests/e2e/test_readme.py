"""The README's scripted example runs verbatim (issue 11 item 13): the
block after "The same from a script" is run by sh -e, with `build` linked
to the build under test and CAUSEWAY_ENDPOINT naming a test broker, many
times in a row. Before --ready-fd the send could overtake the listener's
login (UNKNOWN_USER or OFFLINE, and a listener waiting forever)."""

import json
import os
import re
import subprocess

from conftest import BUILD_DIR, SOURCE_DIR, TIMEOUT_SCALE

RUNS = 20 if TIMEOUT_SCALE == 1 else 5    # fewer under scripts/valgrind


def script_block():
    text = open(os.path.join(SOURCE_DIR, "README.md")).read()
    after = text.split("The same from a script", 1)[1]
    m = re.search(r"```sh\n(.*?)```", after, re.S)
    assert m, "no sh block after 'The same from a script' in README.md"
    return m.group(1)


def test_readme_script_example_is_exact(broker, tmp_path):
    b = broker()
    block = script_block()
    assert "--ready-fd" in block
    os.symlink(BUILD_DIR, tmp_path / "build")
    env = dict(os.environ, CAUSEWAY_ENDPOINT=b.endpoint)
    for i in range(RUNS):
        p = subprocess.run(["sh", "-e", "-c", block], cwd=tmp_path, env=env, capture_output=True,
                           timeout=30 * TIMEOUT_SCALE)
        out = p.stdout.decode()
        assert p.returncode == 0, (i, out, p.stderr.decode())
        objs = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
        kinds = [o["event"] for o in objs if o["event"] != "presence"]
        # The listener's delivery and the sender's result may print in
        # either order; the login comes first and `who` last.
        assert kinds[0] == "login" and kinds[-1] == "who", (i, out)
        assert sorted(kinds[1:-1]) == ["deliver", "send"], (i, out)
        send = next(o for o in objs if o["event"] == "send")
        assert send["recipients"] == [{"name": "bob", "status": "DELIVERED", "seq": 0}], send
        got = next(o for o in objs if o["event"] == "deliver")
        assert got["text"] == "hi from a script" and got["from"] == "alice", got
        assert not (tmp_path / "bob.ready").exists()
