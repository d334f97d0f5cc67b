"""Runs one command against a real Redis Cluster started for it.

    with_cluster.py [--nodes 6] -- COMMAND [ARGS...]

Starts six redis-server processes on free loopback ports (three primaries,
three replicas; tests/e2e/scaleout/rediscluster.py, the settings of
shared/SCALEOUT.md §1 for tests), runs COMMAND with CW_REDIS_SEEDS set to
"127.0.0.1:P1,..." and CW_REDIS_PORTS to the ports, stops every server by
PID and exits with COMMAND's status. Used by ctest for the store contract
suite and the Redis store's own tests, which never skip: a cluster that
cannot be started is a failure (exit 3).
"""

import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "e2e", "scaleout"))

from rediscluster import Cluster  # noqa: E402


def main(argv):
    if "--" not in argv:
        print(__doc__, file=sys.stderr)
        return 2
    cmd = argv[argv.index("--") + 1:]
    if not cmd:
        print(__doc__, file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="cw-cluster-") as root:
        c = Cluster(root)
        try:
            try:
                c.start()
            except Exception as e:  # noqa: BLE001 - reported, then a failure
                print(f"with_cluster: cannot start the cluster: {e}", file=sys.stderr)
                for n in c.nodes:
                    try:
                        print(open(n.log).read()[-2000:], file=sys.stderr)
                    except OSError:
                        pass
                return 3
            env = dict(os.environ)
            env["CW_REDIS_SEEDS"] = c.seeds
            env["CW_REDIS_PORTS"] = ",".join(str(n.port) for n in c.nodes)
            env["CW_REDIS_PIDS"] = ",".join(str(n.proc.pid) for n in c.nodes)
            timeout = float(os.environ.get("CW_WITH_CLUSTER_TIMEOUT", "600"))
            try:
                return subprocess.run(cmd, env=env, timeout=timeout).returncode
            except subprocess.TimeoutExpired:
                print(f"with_cluster: {cmd[0]} did not finish within {timeout} s", file=sys.stderr)
                return 4
        finally:
            c.stop()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
