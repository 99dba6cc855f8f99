"""The shared part of the command-line integration tests: a failure count,
check(), run() of the sightline binary (or another command) with an
expected exit code, and index_summary() of an index build or update.

    import cli_harness as h
    h.init(SL)
    h.check(cond, "what")
    p = h.run("encode", "--help", rc=0)
    p = h.run("--cli", "--help", rc=0, cmd=[DRIVER])  # another program
    s = h.index_summary(h.run("index", "update", "--index", idx, rc=0))
    sys.exit(h.finish("name"))
"""
import os
import subprocess

SL = None
failures = 0


def init(binary):
    global SL, failures
    SL, failures = binary, 0


def check(cond, what):
    global failures
    if not cond:
        failures += 1
        print("FAIL:", what)


def run(*args, rc=None, stdin=None, env=None, binary=None, cmd=None):
    """Run sightline ARGS (or `binary` ARGS, or the command list `cmd` + ARGS);
    with rc, a different exit code is a failure printed with the end of both
    outputs."""
    argv = [*(cmd or [binary or SL]), *args]
    p = subprocess.run(argv, capture_output=True, text=True, input=stdin, env=env)
    if rc is not None and p.returncode != rc:
        what = " ".join(argv) if cmd else f"sightline {' '.join(args)}"
        check(False, f"{what} exited {p.returncode}, wanted {rc}\n"
              f"{p.stdout[-2000:]}{p.stderr[-2000:]}")
    return p


def index_summary(p):
    """The counts of the summary line that `index build|update` prints last,
    "DIR: N images in the index; S seen, U unchanged, A added, ...", as
    {"seen": S, "unchanged": U, ..., "total": N}."""
    line = p.stdout.strip().splitlines()[-1]
    fields = {}
    for part in line.split(";")[1].split(","):
        words = part.split()
        if len(words) >= 2 and words[0].isdigit():
            fields[words[1]] = int(words[0])
    fields["total"] = int(line.split(": ")[1].split()[0])
    return fields


def env_with_model(model):
    """The environment without SIGHTLINE_MODEL, or with it set to `model`."""
    env = dict(os.environ)
    env.pop("SIGHTLINE_MODEL", None)
    if model is not None:
        env["SIGHTLINE_MODEL"] = model
    return env


def finish(name):
    print(f"{name}: {failures} failure(s)")
    return 1 if failures else 0
