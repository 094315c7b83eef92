#!/usr/bin/env python3
"""Runs the shell blocks of a Markdown guide, in order, and checks what they print.

Usage: scripts/doc-test.py docs/quickstart.md [more guides...]

What a guide may contain:
- ```sh blocks: each command (a line, with `\\` continuations) runs in one bash session per
  guide (variables carry over), in a fresh temporary directory, with the workspace's built
  `latchkey` first on PATH. `set -euo pipefail`: a failing command fails the guide.
- Expected output: the full-line comments `# ...` right after a command are what it prints,
  line by line. `…` stands for any text (ids, tokens, times). A command with no such lines may
  print anything.
- Markers in HTML comments just before a block (invisible on the rendered page):
  `<!-- doc-test: file NAME -->` writes the next block to NAME instead of running it;
  `<!-- doc-test: background [URL] -->` starts the block's one command in the background (a
  server), waits until URL answers (default: Latchkey's /readyz), and stops it by PID at the end;
  `<!-- doc-test: skip -->` leaves the next block out (installation steps, alternatives).
- The guide's ports 8080 (Latchkey) and 9000 (an example API) are replaced by free ports (in
  commands, files and expected output), and LATCHKEY_LISTEN is set to the first, so the run
  never collides with a server already on those ports.
- `cargo run [--release] -p PACKAGE [--]` runs the package's binary already built in the
  workspace's target directory (the test command builds them), so a guide's commands are the
  ones a reader types without a release build in the test run.

Exits non-zero naming the guide, the command, what was expected and what came out.
"""
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MARKER = re.compile(r"<!--\s*doc-test:\s*(\w+)\s*(\S*)\s*-->")
FENCE = re.compile(r"^(\s*)```(\w*)\s*$")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def blocks(text):
    """Yields (language, marker, argument, body, line number) for each fenced block."""
    lines = text.splitlines()
    marker, argument, i = None, "", 0
    while i < len(lines):
        m = MARKER.search(lines[i])
        if m:
            marker, argument = m.group(1), m.group(2)
            i += 1
            continue
        fence = FENCE.match(lines[i])
        if fence:
            indent = len(fence.group(1))
            start = i + 1
            j = start
            while j < len(lines) and not lines[j].lstrip().startswith("```"):
                j += 1
            body = "\n".join(line[indent:] if line[:indent].isspace() else line.lstrip()
                             for line in lines[start:j])
            yield fence.group(2), marker, argument, body, start + 1
            marker, argument, i = None, "", j + 1
            continue
        if lines[i].strip():
            marker, argument = None, ""
        i += 1


def commands(body):
    """Splits a sh block into (command, expected lines)."""
    result = []
    pending = None
    for line in body.splitlines():
        if pending is not None and pending.endswith("\\"):
            pending = pending + "\n" + line
            if not line.endswith("\\"):
                result.append([pending, []])
                pending = None
            continue
        stripped = line.strip()
        if stripped.startswith("#"):
            if result:
                result[-1][1].append(stripped[1:].strip() if stripped != "#" else "")
            continue
        if not stripped:
            continue
        if line.endswith("\\"):
            pending = line
        else:
            result.append([line, []])
    return result


CARGO_RUN = re.compile(r"cargo run (?:--release )?-p (\S+)(?: --)?")


def cargo_binaries():
    """Package name -> its binary's name, for the packages of this workspace."""
    meta = json.loads(subprocess.check_output(
        ["cargo", "metadata", "--no-deps", "--format-version", "1"], cwd=ROOT))
    return {p["name"]: t["name"] for p in meta["packages"] for t in p["targets"]
            if "bin" in t["kind"]}


def matches(expected, actual):
    pattern = "^" + ".*?".join(re.escape(part) for part in expected.split("…")) + "$"
    return re.match(pattern, actual, re.S) is not None


def run_guide(path, binary_dir):
    text = open(path, encoding="utf-8").read()
    port = str(free_port())
    api_port = str(free_port())
    binaries = cargo_binaries()
    work = tempfile.mkdtemp(prefix="latchkey-doc-test-")
    env = dict(os.environ)
    env["PATH"] = binary_dir + os.pathsep + env["PATH"]
    env["LATCHKEY_LISTEN"] = f"127.0.0.1:{port}"
    env.pop("LATCHKEY_ISSUER", None)
    background_files = []
    script = ["set -euo pipefail"]
    checks = []
    count = 0

    def local(s):
        s = s.replace("8080", port).replace("9000", api_port)
        return CARGO_RUN.sub(lambda m: binaries.get(m.group(1), m.group(0)), s)

    try:
        for language, marker, argument, body, line in blocks(text):
            if marker == "skip":
                continue
            if marker == "file":
                with open(os.path.join(work, argument), "w", encoding="utf-8") as f:
                    f.write(local(body) + "\n")
                continue
            if language not in ("sh", "bash"):
                continue
            cmds = commands(local(body))
            if marker == "background":
                # A server: started in its own process group (stopped by PID at the end),
                # then the guide goes on once it answers /readyz.
                ready = shlex.quote(local(argument) or f"http://127.0.0.1:{port}/readyz")
                n = len(background_files)
                pid_file = os.path.join(work, f".bg{n}.pid")
                background_files.append(pid_file)
                script.append(
                    f"setsid bash -c {shlex.quote(cmds[0][0])} > .bg{n}.log 2>&1 &\n"
                    f"echo $! > {pid_file}\n"
                    f"for _ in $(seq 300); do curl -s -o /dev/null {ready} && break; "
                    f"sleep 0.2; done\n"
                    f"curl -s -o /dev/null {ready} || "
                    f"{{ echo 'the server did not become ready:' >&2; cat .bg{n}.log >&2; exit 1; }}")
                continue
            for cmd, expected in cmds:
                count += 1
                out = os.path.join(work, f".out{count}")
                script.append(f"echo {count} > .doc-step\n{{ {cmd}\n}} > {out} 2>&1")
                checks.append((count, cmd, expected, out, line))
        run_script(script, checks, work, env, path)
        print(f"doc-test: {path}: {count} commands ran, output as shown")
    finally:
        for pid_file in background_files:
            stop(pid_file)
        shutil.rmtree(work, ignore_errors=True)


def stop(pid_file):
    """Stops a server the guide started: its process group, by the PID recorded at start."""
    try:
        pid = int(open(pid_file).read().strip())
    except (OSError, ValueError):
        return
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.time() + wait
        while time.time() < deadline:
            try:
                os.killpg(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)


def run_script(script, checks, work, env, path):
    result = subprocess.run(["bash", "-c", "\n".join(script)], cwd=work, env=env,
                            capture_output=True, text=True, timeout=300)
    step = open(os.path.join(work, ".doc-step")).read().strip() if os.path.exists(
        os.path.join(work, ".doc-step")) else "?"
    for number, cmd, expected, out, line in checks:
        if not os.path.exists(out):
            break
        actual = open(out, encoding="utf-8", errors="replace").read().rstrip("\n")
        if result.returncode != 0 and str(number) == step:
            sys.exit(f"{path}:{line}: command failed (exit {result.returncode}):\n  {cmd}\n"
                     f"output:\n{actual}\n{result.stderr}")
        if expected and not matches("\n".join(expected), actual):
            sys.exit(f"{path}:{line}: output differs from the page for:\n  {cmd}\n"
                     f"page:\n" + "\n".join(expected) + f"\nactual:\n{actual}")
    if result.returncode != 0:
        sys.exit(f"{path}: the guide's commands failed (exit {result.returncode}):\n"
                 f"{result.stderr}")


def main():
    guides = sys.argv[1:] or ["docs/quickstart.md"]
    binary_dir = os.environ.get("LATCHKEY_BIN_DIR", os.path.join(ROOT, "target", "debug"))
    if not os.access(os.path.join(binary_dir, "latchkey"), os.X_OK):
        sys.exit(f"doc-test: no latchkey binary in {binary_dir}; run `cargo build -p latchkey` "
                 "or set LATCHKEY_BIN_DIR")
    for guide in guides:
        run_guide(os.path.join(ROOT, guide) if not os.path.isabs(guide) else guide, binary_dir)


if __name__ == "__main__":
    main()
