#!/usr/bin/env python3
"""layers_check: the broker is one-way (broker/broker_internal.h draws the
layers). Each broker module may call, and include the header of, only the
modules below it:

    broker.c   -> observe.c, resume_clock.c, durable.c, outorder.c, egress.c
    observe.c  -> durable.c, outorder.c, egress.c
    resume_clock.c -> durable.c
    durable.c  -> outorder.c, egress.c, store_actor.c
    outorder.c -> egress.c
    egress.c   -> (none of these)
    sessions.c, outq.c, store.c, store_actor.c, broker_config.c -> none

A call is recognised by the callee module's prefix (cwb_ and cw_broker_:
broker.c; cwo_: observe.c; cwr_: resume_clock.c; cwd_: durable.c; cwor_: outorder.c; cwe_: egress.c;
cw_store_actor_: store_actor.c) after comments and string literals are
removed. Usage: layers_check.py [BROKER_DIR]; --self-test also proves that
a violation is caught; --names also checks that no internal header of
broker/, clockd/, common/ or sim/ defines one of libcauseway's public type
names (client/causeway.h: nng's nng_/nni_ habit). Exit 0 when clean, 1 with one line per violation.
"""
import os
import re
import sys
import tempfile

MODULES = {  # file -> (module, prefixes it defines, header)
    "broker.c": ("broker", ("cwb_", "cw_broker_"), "broker.h"),
    "observe.c": ("observe", ("cwo_",), "observe.h"),
    "resume_clock.c": ("resume_clock", ("cwr_",), "resume_clock.h"),
    "durable.c": ("durable", ("cwd_",), "durable.h"),
    "outorder.c": ("outorder", ("cwor_",), "outorder.h"),
    "egress.c": ("egress", ("cwe_",), "egress.h"),
    "store_actor.c": ("store_actor", ("cw_store_actor_",), "store_actor.h"),
    # A leaf every module may use; listed so that its cw_broker_config_
    # names are not taken for broker.c's cw_broker_ ones.
    "broker_config.c": ("broker_config", ("cw_broker_config_",), "broker_config.h"),
}
ALLOWED = {
    "broker": {"observe", "resume_clock", "durable", "outorder", "egress"},
    "observe": {"durable", "outorder", "egress"},
    "resume_clock": {"durable"},
    "durable": {"outorder", "egress", "store_actor"},
    "outorder": {"egress"},
    "egress": set(),
    "store_actor": set(),
    "broker_config": set(),
}
FREE = {"broker_config"}  # modules anyone may call
# Files of broker/ that are not layered modules but must not call up either.
LEAVES = ("sessions.c", "outq.c", "store.c", "monitor.c")
# Headers every module may include (shared data, no calls behind them).
SHARED = {"broker_internal.h"}


def strip(src):
    """Removes comments and string/char literals, keeping line breaks."""
    out, i, n = [], 0, len(src)
    while i < n:
        c = src[i]
        if src.startswith("/*", i):
            j = src.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append("\n" * src.count("\n", i, j))
            i = j
        elif src.startswith("//", i):
            j = src.find("\n", i)
            i = n if j < 0 else j
        elif c in "\"'":
            j = i + 1
            while j < n and src[j] != c:
                j += 2 if src[j] == "\\" else 1
            out.append(c + c)
            i = j + 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def check(broker_dir):
    problems = []
    owner = {}
    for f, (mod, prefixes, hdr) in MODULES.items():
        for p in prefixes:
            owner[p] = mod
    header_of = {hdr: mod for f, (mod, _, hdr) in MODULES.items()}
    call_re = re.compile(r"\b(" + "|".join(sorted(owner, key=len, reverse=True)) +
                         r")\w*\s*\(")
    inc_re = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)
    files = list(MODULES) + list(LEAVES)
    for f in files:
        path = os.path.join(broker_dir, f)
        if not os.path.exists(path):
            if f in MODULES:
                problems.append(f"{f}: missing")
            continue
        src = open(path, encoding="utf-8").read()
        me = MODULES[f][0] if f in MODULES else None
        allowed = ALLOWED.get(me, set())
        code = strip(src)
        for lineno, line in enumerate(code.split("\n"), 1):
            for m in call_re.finditer(line):
                callee = owner[m.group(1)]
                if callee != me and callee not in allowed and callee not in FREE:
                    problems.append(f"{f}:{lineno}: calls {m.group(0).rstrip('(').strip()} "
                                    f"({callee}), which is not below {me or f}")
        for m in inc_re.finditer(src):
            h = m.group(1)
            mod = header_of.get(h)
            if mod and mod != me and mod not in allowed and mod not in FREE:
                problems.append(f"{f}: includes {h} ({mod}), which is not below {me or f}")
    return problems


TYPEDEF_RE = re.compile(r"}\s*(cw_\w+_t)\s*;|typedef\s+[^;{}]*?\b(cw_\w+_t)\s*;")


def typedef_names(path):
    code = strip(open(path, encoding="utf-8").read())
    return {a or b for a, b in TYPEDEF_RE.findall(code)}


def names_apart(root):
    """libcauseway's public type names (client/causeway.h) are defined
    nowhere else: internal types use internal names (cwb_, cwc_, ...)."""
    public = typedef_names(os.path.join(root, "client", "causeway.h"))
    problems = []
    for d in ("broker", "clockd", "common", "sim"):
        for dirpath, _, files in os.walk(os.path.join(root, d)):
            for f in files:
                if f.endswith((".h", ".c")):
                    path = os.path.join(dirpath, f)
                    for name in sorted(typedef_names(path) & public):
                        problems.append(f"{os.path.relpath(path, root)}: defines {name}, "
                                        f"a public libcauseway name (client/causeway.h)")
    return problems, len(public)


def self_test():
    """A tree where durable.c calls up into broker.c must fail the check."""
    here = os.path.dirname(os.path.abspath(__file__))
    real = os.path.join(here, "..", "broker")
    with tempfile.TemporaryDirectory() as d:
        for f in list(MODULES) + list(LEAVES):
            src = os.path.join(real, f)
            if os.path.exists(src):
                text = open(src, encoding="utf-8").read()
                if f == "durable.c":
                    text += "\nstatic void up(cw_broker_t *b) { cwb_up(b); }\n"
                if f == "egress.c":
                    text += '\n#include "outorder.h"\n/* cwor_mentioned(in a comment) */\n'
                open(os.path.join(d, f), "w", encoding="utf-8").write(text)
        probs = check(d)
        want = ["durable.c", "calls cwb_up", "egress.c: includes outorder.h"]
        for w in want:
            if not any(w in p for p in probs):
                print(f"self-test: violation '{w}' not detected: {probs}")
                return 1
        if any("cwor_mentioned" in p for p in probs):
            print("self-test: a name in a comment was taken for a call")
            return 1
    with tempfile.TemporaryDirectory() as d:
        os.makedirs(os.path.join(d, "client"))
        os.makedirs(os.path.join(d, "broker"))
        pub = "typedef struct { int a; } cw_user_t;\ntypedef struct cw_x cw_x_t;\n"
        open(os.path.join(d, "client", "causeway.h"), "w").write(pub)
        open(os.path.join(d, "broker", "s.h"), "w").write(
            "/* cw_x_t in a comment */\ntypedef struct {\n    int b;\n} cw_user_t;\n")
        probs, _ = names_apart(d)
        if len(probs) != 1 or "cw_user_t" not in probs[0]:
            print(f"self-test: name collision not detected exactly: {probs}")
            return 1
    return 0


def main(argv):
    args = [a for a in argv[1:] if not a.startswith("--")]
    here = os.path.dirname(os.path.abspath(__file__))
    broker_dir = args[0] if args else os.path.join(here, "..", "broker")
    rc = 0
    if "--self-test" in argv:
        rc = self_test()
    probs = check(broker_dir)
    if "--names" in argv:
        named, n_public = names_apart(os.path.join(broker_dir, ".."))
        if n_public < 5:
            named.append(f"only {n_public} public type names found in client/causeway.h")
        probs += named
    for p in probs:
        print(p)
    if not probs and rc == 0:
        print("broker layers: one-way (%d modules checked)%s" %
              (len(MODULES), "; internal type names apart from public ones"
               if "--names" in argv else ""))
    return 1 if probs or rc else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
