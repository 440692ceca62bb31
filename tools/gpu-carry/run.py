#!/usr/bin/env python3
"""Runs meson tests by name on the device from .gpu/tests.json (meson introspect --tests made
here), with meson's environment, without meson (the device's is newer than the build tree's).
usage: run.py [--wrap "compute-sanitizer --tool memcheck"] [--timeout S] NAME... [-- TEST ARGS]
Exit status: 0 when every test passed or skipped (77), else 1."""
import json, os, subprocess, sys, time, shlex
here = os.path.dirname(os.path.abspath(__file__))
tests = {t['name']: t for t in json.load(open(os.path.join(here, 'tests.json')))}
args = sys.argv[1:]
extra = []
if '--' in args:
    i = args.index('--'); extra = args[i+1:]; args = args[:i]
wrap = []; timeout = 300
while args and args[0].startswith('--'):
    if args[0] == '--wrap': wrap = shlex.split(args[1]); args = args[2:]
    elif args[0] == '--timeout': timeout = int(args[1]); args = args[2:]
failed = []
for name in args:
    t = tests[name]
    env = dict(os.environ); env.update(t['env'])
    env['LD_LIBRARY_PATH'] = env.get('LD_LIBRARY_PATH', '') + ':' + os.environ.get('LD_LIBRARY_PATH', '')
    cmd = wrap + [c for c in t['cmd'] if c != '--tap'] + extra
    print(f"=== {name}: {' '.join(cmd)}", flush=True)
    t0 = time.time()
    try:
        rc = subprocess.run(cmd, env=env, timeout=timeout, cwd=t.get('workdir') or None).returncode
    except subprocess.TimeoutExpired:
        rc = 'TIMEOUT'
    print(f"=== {name}: rc={rc} in {time.time()-t0:.1f}s", flush=True)
    if rc not in (0, 77):
        failed.append(name)
if failed:
    print(f"=== failed: {' '.join(failed)}", flush=True)
sys.exit(1 if failed else 0)
