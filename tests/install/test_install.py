"""`cmake --install` into a temporary DESTDIR, then everything from there.

One install per run (module fixture ``inst``), into a fresh temporary
directory; nothing here touches the build tree's programs or libraries:
  - the README's C example (the block after ``<!-- example: hello.c -->``)
    is compiled against the installed prefix four ways: pkg-config shared,
    pkg-config static (the README's command), CMake ``causeway::causeway``
    and ``causeway::causeway_static``; each binary links what it should
    (libcauseway.so.0 or nothing of causeway) and runs against the
    installed broker, receiving its own message;
  - the shared library exports every function the installed headers
    declare and nothing else;
  - the installed causeway-sim runs a scenario with the installed broker
    and clockd (the prefix has no build-tree layout to fall back on);
  - each man page renders with ``man -l`` and contains every option and
    command its program's --help lists;
  - the bash completion, sourced, completes commands and options.
Every wait is bounded; processes started here are stopped by PID.
"""

import json
import os
import re
import select
import shutil
import signal
import subprocess
import tempfile

import pytest

SOURCE_DIR = os.environ["CW_SOURCE_DIR"]
BUILD_DIR = os.environ["CW_BUILD_DIR"]
CC = os.environ.get("CW_CC") or "cc"
CMAKE = os.environ.get("CW_CMAKE") or "cmake"
SANITIZE = os.environ.get("CW_SANITIZE", "").upper() in ("ON", "1", "TRUE", "YES")
SAN_FLAGS = ["-fsanitize=address,undefined"] if SANITIZE else []
RUN_TIMEOUT = 60
START_TIMEOUT = 10.0


def cache_value(key):
    with open(os.path.join(BUILD_DIR, "CMakeCache.txt")) as f:
        for line in f:
            if line.startswith(key + ":"):
                return line.split("=", 1)[1].strip()
    raise KeyError(key)


class Installed:
    def __init__(self, root):
        self.destdir = root
        prefix = cache_value("CMAKE_INSTALL_PREFIX")
        self.prefix = root + prefix
        self.libdir = os.path.join(self.prefix, cache_value("CMAKE_INSTALL_LIBDIR"))
        self.bindir = os.path.join(self.prefix, "bin")
        self.mandir = os.path.join(self.prefix, "share", "man", "man1")

    def bin(self, name):
        return os.path.join(self.bindir, name)

    def env(self, **extra):
        """An environment that knows only the installed prefix."""
        env = {"PATH": self.bindir + ":/usr/bin:/bin", "HOME": self.destdir,
               "LANG": "C.UTF-8", "PKG_CONFIG_PATH": os.path.join(self.libdir, "pkgconfig")}
        if SANITIZE:
            env["ASAN_OPTIONS"] = "detect_leaks=1:halt_on_error=1"
        env.update(extra)
        return env


@pytest.fixture(scope="module")
def inst():
    root = tempfile.mkdtemp(prefix="cw-install-")
    try:
        res = subprocess.run([CMAKE, "--install", BUILD_DIR], env=dict(os.environ, DESTDIR=root),
                             capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, res.stdout + res.stderr
        yield Installed(root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def broker(inst):
    """The installed causeway-broker on a free loopback port; its endpoint."""
    proc = subprocess.Popen([inst.bin("causeway-broker"), "--bind", "tcp://127.0.0.1:*"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=inst.env())
    try:
        ready, _, _ = select.select([proc.stdout], [], [], START_TIMEOUT)
        assert ready, "installed broker printed nothing within %ss" % START_TIMEOUT
        line = proc.stdout.readline().decode().strip()
        assert line.startswith("listening tcp://127.0.0.1:"), line
        yield line.split()[1]
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
            rc = None
        err = proc.stderr.read().decode()
        assert rc == 0, "installed broker exit %s\n%s" % (rc, err)


def readme_example():
    text = open(os.path.join(SOURCE_DIR, "README.md")).read()
    m = re.search(r"<!-- example: hello\.c -->\s*```c\n(.*?)\n```", text, re.S)
    assert m, "README.md has no block after <!-- example: hello.c -->"
    return m.group(1) + "\n"


def readme_static_command():
    """The README's pkg-config command line for static libcauseway."""
    text = open(os.path.join(SOURCE_DIR, "README.md")).read()
    m = re.search(r"^cc hello\.c \$\(pkg-config --cflags causeway\) -o hello \\\n\s*(.*)$",
                  text, re.M)
    assert m, "README.md lost its static pkg-config command"
    return "cc hello.c $(pkg-config --cflags causeway) -o hello " + m.group(1)


def needed(path):
    out = subprocess.run(["readelf", "-d", path], capture_output=True, text=True,
                         check=True, timeout=30).stdout
    return re.findall(r"\(NEEDED\)\s+Shared library: \[(.*?)\]", out)


def run_hello(inst, exe, endpoint, env):
    res = subprocess.run([exe, endpoint], capture_output=True, text=True,
                         timeout=RUN_TIMEOUT, env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "hello: DELIVERED" in res.stdout, res.stdout
    assert "hello -> me: hello, causeway" in res.stdout, res.stdout


@pytest.fixture
def workdir(inst):
    d = tempfile.mkdtemp(prefix="work-", dir=inst.destdir)
    with open(os.path.join(d, "hello.c"), "w") as f:
        f.write(readme_example())
    return d


def test_layout(inst):
    for prog in ("causeway-broker", "causeway", "causeway-clockd", "causeway-sim"):
        assert os.access(inst.bin(prog), os.X_OK), prog
    so = os.path.join(inst.libdir, "libcauseway.so")
    assert os.path.islink(so)
    assert os.readlink(so) == "libcauseway.so.0"
    assert os.path.exists(os.path.join(inst.libdir, "libcauseway.a"))
    soname = subprocess.run(["readelf", "-d", so], capture_output=True, text=True,
                            check=True).stdout
    assert "Library soname: [libcauseway.so.0]" in soname
    for h in ("causeway.h", "cw_status.h"):
        assert os.path.exists(os.path.join(inst.prefix, "include", h)), h
    assert os.path.exists(os.path.join(inst.libdir, "pkgconfig", "causeway.pc"))
    assert os.path.exists(os.path.join(inst.libdir, "cmake", "causeway", "causewayConfig.cmake"))


def test_pkg_config_shared(inst, workdir, broker):
    env = inst.env()
    flags = subprocess.run(["pkg-config", "--cflags", "--libs", "causeway"], env=env,
                           capture_output=True, text=True, check=True).stdout.split()
    assert "-lcauseway" in flags
    exe = os.path.join(workdir, "hello")
    subprocess.run([CC, "hello.c", *flags, *SAN_FLAGS, "-o", exe], cwd=workdir, env=env,
                   check=True, timeout=120)
    assert "libcauseway.so.0" in needed(exe)
    run_hello(inst, exe, broker, inst.env(LD_LIBRARY_PATH=inst.libdir))


def test_pkg_config_static(inst, workdir, broker):
    env = inst.env(CC=CC)
    cmd = readme_static_command().replace("cc ", "$CC ", 1)
    if SAN_FLAGS:
        cmd += " " + " ".join(SAN_FLAGS)
    subprocess.run(["sh", "-ec", cmd], cwd=workdir, env=env, check=True, timeout=120)
    exe = os.path.join(workdir, "hello")
    assert not [n for n in needed(exe) if "causeway" in n], needed(exe)
    run_hello(inst, exe, broker, inst.env())   # no LD_LIBRARY_PATH: nothing to find


def test_find_package(inst, workdir, broker):
    with open(os.path.join(workdir, "CMakeLists.txt"), "w") as f:
        f.write("cmake_minimum_required(VERSION 3.18)\n"
                "project(hello C)\n"
                "find_package(causeway 0.1 REQUIRED)\n"
                "add_executable(hello_shared hello.c)\n"
                "target_link_libraries(hello_shared PRIVATE causeway::causeway)\n"
                "add_executable(hello_static hello.c)\n"
                "target_link_libraries(hello_static PRIVATE causeway::causeway_static)\n")
    build = os.path.join(workdir, "build")
    flags = " ".join(SAN_FLAGS)
    subprocess.run([CMAKE, "-S", workdir, "-B", build, "-DCMAKE_C_COMPILER=" + CC,
                    "-DCMAKE_PREFIX_PATH=" + inst.prefix, "-DCMAKE_C_FLAGS=" + flags,
                    "-DCMAKE_SKIP_RPATH=ON"],
                   env=inst.env(), check=True, timeout=120, capture_output=True)
    subprocess.run([CMAKE, "--build", build], env=inst.env(), check=True, timeout=120,
                   capture_output=True)
    shared, static = os.path.join(build, "hello_shared"), os.path.join(build, "hello_static")
    assert "libcauseway.so.0" in needed(shared)
    assert not [n for n in needed(static) if "causeway" in n]
    run_hello(inst, shared, broker, inst.env(LD_LIBRARY_PATH=inst.libdir))
    run_hello(inst, static, broker, inst.env())


def declared_functions(header):
    text = open(header).read()
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return set(re.findall(r"\b(cw_[a-z0-9_]+)\s*\([^;{]*\)\s*;", text))


def test_exports(inst):
    inc = os.path.join(inst.prefix, "include")
    declared = declared_functions(os.path.join(inc, "causeway.h")) | \
        declared_functions(os.path.join(inc, "cw_status.h"))
    assert "cw_client_new" in declared and "cw_strerror" in declared
    out = subprocess.run(["nm", "-D", "--defined-only",
                          os.path.join(inst.libdir, "libcauseway.so")],
                         capture_output=True, text=True, check=True).stdout
    exported = {line.split()[2].split("@")[0] for line in out.splitlines()
                if len(line.split()) == 3 and line.split()[1] in "TtWwDdBbRr"}
    exported.discard("CAUSEWAY_0")
    missing = declared - exported
    assert not missing, "declared in the headers, not exported (client/libcauseway.map): %s" % sorted(missing)
    extra = {s for s in exported if not s.startswith("_")} - declared
    assert not extra, "exported but not in the public headers: %s" % sorted(extra)


def test_installed_sim_runs_installed_broker(inst):
    scn = os.path.join(inst.destdir, "tiny.scn")
    with open(scn, "w") as f:
        f.write("name = tiny\nnames = a, b\nmessages = 6\nmix = unicast 1\n"
                "durable = 50%\nsize = 40..60\nthink = 10ms..20ms\nseed = 1\n")
    # The prefix has no build-tree layout (bin/../broker/causeway-broker):
    # the run works only if the simulator finds the broker beside itself.
    assert not os.path.exists(os.path.join(inst.prefix, "broker"))
    res = subprocess.run([inst.bin("causeway-sim"), "--json", scn], capture_output=True,
                         text=True, timeout=180, env=inst.env(), stdin=subprocess.DEVNULL)
    assert res.returncode == 0, res.stdout + res.stderr
    verdict = json.loads([l for l in res.stdout.splitlines() if l.startswith("{")][-1])
    assert verdict.get("lost", 0) == 0, verdict


def help_text(inst, argv):
    res = subprocess.run(argv, capture_output=True, text=True, timeout=30, env=inst.env())
    return res.stdout + res.stderr


def options_in(text):
    """Every long option an option line of a help text names."""
    return set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", text))


def commands_in(text):
    names, inside = [], False
    for line in text.splitlines():
        if re.match(r"^commands:\s*$", line, re.I):
            inside = True
        elif inside:
            m = re.match(r"^  ([a-z][a-z0-9-]*)\b", line)
            if m:
                names.append(m.group(1))
            elif names and not line.startswith(" "):
                break
    return [n for n in names if n != "help"]


@pytest.mark.parametrize("prog", ["causeway-broker", "causeway", "causeway-clockd",
                                  "causeway-sim"])
def test_man_page(inst, prog):
    page = os.path.join(inst.mandir, prog + ".1.gz")
    assert os.path.exists(page), page
    res = subprocess.run(["man", "-l", page], capture_output=True, timeout=60,
                         env=inst.env(MANWIDTH="200", MAN_KEEP_FORMATTING="", PAGER="cat"))
    assert res.returncode == 0, res.stderr
    rendered = subprocess.run(["col", "-b"], input=res.stdout, capture_output=True,
                              check=True).stdout.decode()
    # groff may print "-" as U+2010 in a UTF-8 locale; compare with ASCII.
    rendered = rendered.replace("\u2010", "-").replace("\u2212", "-")
    assert prog.upper() + "(1)" in rendered
    top = help_text(inst, [inst.bin(prog), "--help"])
    wanted = options_in(top)
    cmds = commands_in(top)
    if prog in ("causeway", "causeway-clockd"):
        assert cmds, "no commands in %s --help" % prog
    for cmd in cmds:
        assert "%s %s" % (prog, cmd) in rendered, "no section for %s %s" % (prog, cmd)
        wanted |= options_in(help_text(inst, [inst.bin(prog), "help", cmd]))
    assert len(wanted) >= 5
    missing = sorted(o for o in wanted if o not in rendered)
    assert not missing, "%s.1 lacks %s" % (prog, missing)


def complete(inst, words):
    """COMPREPLY of the installed completion for the command line WORDS
    (the last word is the one being completed)."""
    script = os.path.join(inst.prefix, "share", "bash-completion", "completions", "causeway")
    arr = " ".join("'%s'" % w for w in words)
    cmd = ('source "$1"; complete -p causeway; COMP_WORDS=(%s); COMP_CWORD=%d; '
           '_causeway; printf "%%s\\n" "${COMPREPLY[@]}"' % (arr, len(words) - 1))
    res = subprocess.run(["bash", "--norc", "--noprofile", "-c", cmd, "bash", script],
                         capture_output=True, text=True, timeout=30, env=inst.env())
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0] == "complete -F _causeway causeway", lines
    return [l for l in lines[1:] if l]


def test_bash_completion(inst):
    assert complete(inst, ["causeway", "se"]) == ["send"]
    cmds = complete(inst, ["causeway", ""])
    for c in ("chat", "send", "listen", "fetch", "history", "who", "stats", "keygen"):
        assert c in cmds, cmds
    assert complete(inst, ["causeway", "send", "--d"]) == ["--durable"]
    send_opts = complete(inst, ["causeway", "send", "--"])
    for o in ("--to", "--all", "--name", "--endpoint", "--json", "--ttl"):
        assert o in send_opts, send_opts
    # options of another command are not offered for send
    assert "--count" not in send_opts or "--count" in help_text(
        inst, [inst.bin("causeway"), "help", "send"])
    assert complete(inst, ["causeway", "listen", "--log-level", "de"]) == ["debug"]
    assert complete(inst, ["causeway", "help", "hi"]) == ["history"]
