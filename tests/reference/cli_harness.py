"""The shared part of the command-line integration tests: a failure count,
check(), and run() of the sightline binary with an expected exit code.

    import cli_harness as h
    h.init(SL)
    h.check(cond, "what")
    p = h.run("encode", "--help", rc=0)
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


def run(*args, rc=None, stdin=None, env=None, binary=None):
    """Run sightline ARGS (or `binary`); with rc, a different exit code is a
    failure printed with the end of both outputs."""
    p = subprocess.run([binary or SL, *args], capture_output=True, text=True, input=stdin,
                       env=env)
    if rc is not None and p.returncode != rc:
        check(False, f"sightline {' '.join(args)} exited {p.returncode}, wanted {rc}\n"
              f"{p.stdout[-2000:]}{p.stderr[-2000:]}")
    return p


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
