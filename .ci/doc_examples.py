#!/usr/bin/env python3
"""Run every command example of the README and docs/*.md, scaled down, so an example that
breaks fails CI.   Usage: doc_examples.py --cnnbench PATH --work DIR [FILE.md ...]

What counts as an example (README.md, Development, says the same to writers):

- each line of a fenced ``sh`` / ``bash`` / ``shell`` / ``console`` block: a line that starts
  with ``cnnbench`` runs; any other command (``make``, ``pip``, ``python``) is listed as
  skipped with the reason;
- each line that starts with ``cnnbench`` in a fenced block with no language;
- a fenced block whose first line is ``# file: NAME`` is written to NAME in the work folder
  when it is reached, so the commands after it can use it (a spec file, a study file).

The one scaling mechanism: every ``cnnbench run`` and ``cnnbench ablate`` example trains
``--epochs 1 --train-limit 256`` (replacing the values it gives) and only the first seed of a
``--seeds`` option (``--seeds 5`` and ``--seeds auto 3 10`` -> ``--seeds 1``; ``--seeds 3 4``
-> ``--seed 3``); a study file's own seeds stay. Two seeds everywhere took the examples past
5 minutes on 2 cores; statistics over seeds are still exercised, as the committed result
packs hold several.

Markers, a trailing comment on the line: ``# needs cnnbench[NAME]`` and ``# needs a GPU``
skip the example with the reason printed; ``# exits N`` expects exit status N instead of 0.
A run id in an example (4-12 hex digits, e.g. ``3f2a``) stands for the newest run of the
store that has weights (a second id for the next newest); ``~`` is a folder inside the work
folder. An ``rm`` example without ``--yes`` is answered ``y`` on a terminal.
The examples of all files run in order in one work folder, so they share one run store.

Standard library only: it runs under any Python 3.11, outside the venv it tests.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHELL_LANGS = {"sh", "bash", "shell", "console"}
SCALE = {"--epochs": "1", "--train-limit": "256"}
TRAINS = {"run", "ablate"}
TAKES_RUN_IDS = {"show", "rm", "predict", "export", "report", "pack"}
RUN_ID = re.compile(r"^(?=.*[a-f])(?=.*[0-9])[0-9a-f]{4,12}$")
COMMENT = re.compile(r"(?:^|\s)#(.*)$")  # as sh reads it: '#' only at a word's start
NEEDS = re.compile(r"needs (?:cnnbench\[(?P<extra>[a-z]+)\]|(?P<gpu>a GPU))")
EXITS = re.compile(r"exits (\d+)")
SHELL_SYNTAX = re.compile(r"[|;&<>`$]")
OTHER_REASONS = {
    "make": "a make target of the checkout (.ci/run runs `make test`; `make run` trains the "
            "whole study)",
    "pip": "an install (this smoke's venv is a plain `pip install .`)",
    "python": "a script of the checkout (the benchmarks take minutes to hours)",
    ".venv/bin/python": "a script of the checkout (the benchmarks take minutes to hours)",
}


@dataclass
class Example:
    """One command line of a document, or one file a block writes."""

    where: str  # FILE:LINE
    text: str  # the line as documented, comment included
    argv: list[str]
    skip: str | None = None  # the reason it is not run
    exits: int = 0
    file: tuple[str, str] | None = None  # (name, content): a block to write, not a command


def _command(where: str, line: str, shell_block: bool) -> Example | None:
    """The example a block's line is, or None when it is no command (output, a tree)."""
    stripped = line.strip()
    if stripped.startswith("$ "):
        stripped = stripped[2:]
    if not stripped or stripped.startswith("#"):
        return None
    m = COMMENT.search(stripped)
    comment = m.group(1).strip() if m else ""
    code = stripped[: m.start()].strip() if m else stripped
    first = code.split()[0]
    if first != "cnnbench" and not shell_block:
        return None
    ex = Example(where, stripped, [])
    exits = EXITS.search(comment)
    if exits:
        ex.exits = int(exits.group(1))
    needs = NEEDS.search(comment)
    if first != "cnnbench":
        ex.skip = OTHER_REASONS.get(first, f"not a cnnbench command ({first})")
    elif needs and needs.group("extra"):
        ex.skip = (f"needs the {needs.group('extra')} extra: pip install "
                   f"'cnnbench[{needs.group('extra')}]'")
    elif needs:
        ex.skip = "needs a GPU (CI has none)"
    elif SHELL_SYNTAX.search(code):
        raise SystemExit(f"{where}: an example is one cnnbench command, without pipes, "
                         f"redirections or variables (the runner does not use a shell). "
                         f"Got: {code}")
    else:
        ex.argv = shlex.split(code)
    return ex


def extract(path: Path, name: str | None = None) -> list[Example]:
    """The examples of one Markdown file, in order."""
    name = name or path.name
    out: list[Example] = []
    lines = path.read_text().splitlines()
    i = 0
    while i < len(lines):
        fence = re.match(r"^\s*(```+|~~~+)\s*([\w+-]*)", lines[i])
        if not fence:
            i += 1
            continue
        mark, lang, start = fence.group(1), fence.group(2).lower(), i + 1
        i += 1
        body: list[str] = []
        while i < len(lines) and not lines[i].strip().startswith(mark):
            body.append(lines[i])
            i += 1
        i += 1  # the closing fence
        target = re.match(r"^\s*#\s*file:\s*(\S+)\s*$", body[0]) if body else None
        if target:
            out.append(Example(f"{name}:{start + 1}", body[0].strip(), [],
                               file=(target.group(1), "\n".join(body[1:]) + "\n")))
            continue
        if lang and lang not in SHELL_LANGS:
            continue
        joined: list[tuple[int, str]] = []
        for n, line in enumerate(body, start=start + 1):
            if joined and joined[-1][1].endswith("\\"):
                joined[-1] = (joined[-1][0], joined[-1][1][:-1] + " " + line.strip())
            else:
                joined.append((n, line))
        for n, line in joined:
            ex = _command(f"{name}:{n}", line, lang in SHELL_LANGS)
            if ex is not None:
                out.append(ex)
    return out


def _seed_values(argv: list[str], i: int) -> list[str]:
    """The numbers after the --seeds at argv[i] (a study file after them is no seed)."""
    n = i + 1
    while n < len(argv) and argv[n].isdigit():
        n += 1
    return argv[i + 1: n]


def scaled(argv: list[str]) -> list[str]:
    """A run/ablate example at smoke size (the module docstring's one mechanism)."""
    if len(argv) < 2 or argv[1] not in TRAINS:
        return list(argv)
    out: list[str] = []
    i = 0
    while i < len(argv):
        tok = argv[i]
        opt = tok.split("=", 1)[0]
        if opt in SCALE:
            i += 1 if "=" in tok else 2
            continue
        if opt == "--seeds":
            auto = "=" not in tok and i + 1 < len(argv) and argv[i + 1] == "auto"
            values = [tok.split("=", 1)[1]] if "=" in tok else _seed_values(argv, i + auto)
            i += 1 if "=" in tok else 1 + auto + len(values)
            # One number is a count (--seeds K: 0..K-1), and so is 'auto [MIN] MAX' here;
            # several are the seeds themselves, and one seed of a list is --seed S (--seeds S
            # alone would mean S seeds).
            out += ["--seed", values[0]] if len(values) > 1 and not auto else ["--seeds", "1"]
            continue
        out.append(tok)
        i += 1
    for opt, value in SCALE.items():
        out += [opt, value]
    return out


def _store(argv: list[str], work: Path) -> Path:
    if "--store" in argv:
        return work / argv[argv.index("--store") + 1]
    return work / os.environ.get("CNNBENCH_STORE", "cnnbench-runs")


def with_home(argv: list[str], work: Path) -> list[str]:
    """'~' in an example is a home folder inside the work folder, never the real one."""
    home = str(work / "home")
    return [home + tok[1:] if tok == "~" or tok.startswith("~/") else tok for tok in argv]


def with_run_ids(argv: list[str], work: Path) -> list[str]:
    """Run ids of an example replaced by runs of the store that have weights: the first id
    named by the newest such run, a second one by the next newest, and so on."""
    if len(argv) < 2 or argv[1] not in TAKES_RUN_IDS:
        return list(argv)
    out, chosen = list(argv), {}
    for i, tok in enumerate(out[2:], start=2):
        if RUN_ID.match(tok) and not out[i - 1].startswith("-"):
            if tok not in chosen:
                runs = sorted(_store(argv, work).glob("runs/*/weights.safetensors"),
                              key=lambda p: p.stat().st_mtime, reverse=True)
                if len(runs) <= len(chosen):
                    raise RuntimeError(f"the example names run {tok}, but the store has no "
                                       f"{'other ' if chosen else ''}run with weights")
                chosen[tok] = runs[len(chosen)].parent.name
            out[i] = chosen[tok]
    return out


def _run(argv: list[str], work: Path, timeout: float) -> tuple[int, str]:
    """Exit status and output of one example. It runs in a session of its own, so a timeout
    ends its worker processes too (--jobs N), not only the command."""
    stdin, primary = subprocess.DEVNULL, None
    if argv[1] == "rm" and "--yes" not in argv:
        import pty
        primary, stdin = pty.openpty()
        os.write(primary, b"y\n")
    proc = subprocess.Popen(argv, cwd=work, stdin=stdin, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=timeout)
        return proc.returncode, output
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        return -1, f"{output}\ntimed out after {timeout:.0f} s"
    finally:
        if primary is not None:
            os.close(primary)
            os.close(stdin)


def run_all(examples: list[Example], cnnbench: str, work: Path, timeout: float) -> int:
    """Run the examples in order; the number that failed."""
    failed = 0
    started = time.monotonic()
    for ex in examples:
        if ex.file:
            (work / ex.file[0]).write_text(ex.file[1])
            print(f"[{ex.where}] wrote {ex.file[0]}", flush=True)
            continue
        if ex.skip:
            print(f"[{ex.where}] SKIPPED {ex.text}\n    reason: {ex.skip}", flush=True)
            continue
        t0 = time.monotonic()
        try:
            argv = with_run_ids(with_home(scaled(ex.argv), work), work)
        except RuntimeError as e:
            print(f"[{ex.where}] {ex.text}", end="", flush=True)
            rc, output = -1, str(e)
        else:
            print(f"[{ex.where}] {shlex.join(['cnnbench', *argv[1:]])}", end="", flush=True)
            rc, output = _run([cnnbench, *argv[1:]], work, timeout)
        ok = rc == ex.exits
        failed += not ok
        print(f"  -> {'ok' if ok else 'FAILED'}, {time.monotonic() - t0:.1f} s", flush=True)
        if not ok:
            tail = "\n".join(output.rstrip().splitlines()[-25:])
            print(f"    {ex.text}\n    exit {rc}, expected {ex.exits}; the output's end:\n"
                  f"{tail}\n", flush=True)
    ran = sum(1 for e in examples if not e.skip and not e.file)
    skipped = sum(1 for e in examples if e.skip)
    print(f"doc examples: {ran - failed} of {ran} passed, {skipped} skipped, "
          f"{time.monotonic() - started:.0f} s", flush=True)
    return failed


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cnnbench", required=True, help="the cnnbench executable to test")
    p.add_argument("--work", required=True, type=Path, help="folder the examples run in")
    p.add_argument("--timeout", type=float, default=600, help="seconds an example may take")
    p.add_argument("--list", action="store_true", help="print the examples; run nothing")
    p.add_argument("files", nargs="*", type=Path,
                   help="Markdown files (default: README.md and docs/*.md of this checkout)")
    args = p.parse_args(argv)
    files = args.files or [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    examples = []
    for f in files:
        label = str(f.resolve().relative_to(ROOT)) if f.resolve().is_relative_to(ROOT) \
            else f.name
        examples += extract(f, label)
    if args.list:
        for ex in examples:
            status = "file" if ex.file else f"skip: {ex.skip}" if ex.skip else \
                shlex.join(scaled(ex.argv))
            print(f"{ex.where}\t{status}")
        return 0
    args.work.mkdir(parents=True, exist_ok=True)
    return 1 if run_all(examples, args.cnnbench, args.work.resolve(), args.timeout) else 0


if __name__ == "__main__":
    sys.exit(main())
