#!/bin/sh
# tests/cli_test.sh SIGHTLINE - the command's global options, help for each
# command, and exit codes for usage errors.
bin="$1"
fail=0
check() { # check WANT_RC PATTERN CMD...
    want=$1 pat=$2
    shift 2
    out=$("$@" 2>&1)
    rc=$?
    if [ "$rc" -ne "$want" ]; then
        echo "FAIL: '$*' exited $rc, wanted $want"; fail=1
    elif ! printf '%s' "$out" | grep -q -- "$pat"; then
        echo "FAIL: '$*' output lacks '$pat':"; printf '%s\n' "$out"; fail=1
    fi
}
check 0 "usage: sightline" "$bin" --help
check 0 "^sightline [0-9]*\.[0-9]*\.[0-9]*$" "$bin" --version
check 2 "usage: sightline" "$bin"
check 2 "no command 'frobnicate'" "$bin" frobnicate
check 2 "no command 'frobnicate'" "$bin" help frobnicate
# every command listed in --help answers --help with its usage
for cmd in $("$bin" --help | sed -n '/^commands:/,/^$/p' | awk 'NR>1 && NF {print $1}'); do
    check 0 "usage: sightline $cmd" "$bin" "$cmd" --help
    check 0 "usage: sightline $cmd" "$bin" help "$cmd"
done
# a bad option value is named by its option, in either spelling
check 2 "bad value '0' for --batch\$" "$bin" index --index /nonexistent/x --batch 0 /nonexistent
check 2 "bad value '0' for --batch\$" "$bin" index --index /nonexistent/x --batch=0 /nonexistent
check 2 "bad value 'abc' for --batch\$" "$bin" encode --texts - --out /nonexistent/x.npy --batch abc
check 2 "bad value '0' for -k\$" "$bin" query --index /nonexistent/x -k 0 --text a
check 2 "bad value 'x' for --threads\$" "$bin" eval retrieval --threads x
check 2 "bad value '7' for --rel\$" "$bin" eval grounding --rel 7
check 0 "FAISS" "$bin" info
check 2 "unknown argument" "$bin" info --bogus
[ $fail -eq 0 ] && echo "cli_test: ok"
exit $fail
