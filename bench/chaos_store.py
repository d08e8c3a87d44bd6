"""Chaos for the run store: SIGKILL a small study at random moments, and hammer one store
from several processes with rm and --force in between. Prints a table; not a timed test.

(a) Random kills. A study (2 tiny models x 2 seeds x 3 epochs on a subset, one thread) is
trained once uninterrupted (the reference), then again in another store, SIGKILLed at N
moments and re-run after each kill until it completes; then again from an empty store while
kills remain. Each kill lands at one of:

- ``step``: a random time into the run (mostly inside training steps);
- ``checkpoint``: 0-3 ms after the K-th checkpoint temp file is opened (inside its write);
- ``index``: 0-3 ms after the K-th connection to index.sqlite (inside its transaction);
- ``report``: 0-3 ms after the K-th temp file of results.json/history.csv/report.* opens.

Counted: kills done; epochs lost (epochs the store recorded as done before a kill that a
later run had to train again, goal 0); mismatches of each completed study against the
reference (histories less wall seconds, test metrics, predictions, probabilities, weights'
tensors and metadata: goal 0); the store's ``verify`` problems and runs left "running".

(b) Concurrency. P processes each run a study of R runs (one tiny model, R seeds drawn from
an overlapping pool, 1 epoch), half of them with --force, on one store, while a thread
deletes random runs with ``cnnbench rm --yes``. At the end the index and the folders must
agree (``verify``), no run may be "running", and nothing may print a traceback.

    python bench/chaos_store.py                      # N=50 kills, 4 processes x 10 runs
    python bench/chaos_store.py --kills 3 --procs 2 --runs 2   # the suite's small version
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
sys.path.insert(0, str(SRC))

from cnnbench.atomic import roll_forward  # noqa: E402
from cnnbench.store.run_store import RunStore  # noqa: E402

TINY = """name: {name}
input_shape: [28, 28, 1]
layers:
  - MaxPooling2D: {{}}
  - Conv2D: {{filters: {filters}, kernel_size: [3, 3], activation: relu}}
  - BatchNormalization: {{}}
  - Flatten: {{}}
  - Dense: {{units: 32, activation: relu}}
  - Dropout: {{rate: 0.5}}
  - Dense: {{units: 10, activation: softmax}}
"""
MODES = ("step", "checkpoint", "index", "report")
# The child: an audit hook arms a SIGKILL 0-3 ms after the K-th event of its mode, then
# cnnbench runs as `cnnbench run` would.
CHILD = """
import os, random, signal, sys, threading
mode, nth, out = os.environ["CHAOS_MODE"], int(os.environ["CHAOS_NTH"]), os.environ["CHAOS_OUT"]
seen = [0]
def matches(event, args):
    if mode == "index":
        return event == "sqlite3.connect"
    if event != "open" or not isinstance(args[0], str) or not args[0].endswith(".tmp"):
        return False
    if mode == "checkpoint":
        return os.path.basename(args[0]).startswith("checkpoint.pt.")
    return mode == "report" and args[0].startswith(out)
def hook(event, args):
    if mode != "step" and matches(event, args):
        seen[0] += 1
        if seen[0] == nth:
            t = threading.Timer(random.uniform(0, 0.003), os.kill, (os.getpid(), signal.SIGKILL))
            t.daemon = True
            t.start()
sys.addaudithook(hook)
from cnnbench.cli import main
sys.exit(main(sys.argv[1:]))
"""


def env() -> dict[str, str]:
    e = dict(os.environ, PYTHONPATH=str(SRC), PYTHONUNBUFFERED="1")
    e.pop("CNNBENCH_STORE", None)
    return e


def out_of(store: Path) -> Path:
    """A study's --out beside its store: the store refuses an --out inside it."""
    return store.parent / f"{store.name}-out"


def study_args(specs: list[Path], store: Path, seeds: list[int], epochs: int, limit: int,
               extra: tuple[str, ...] = ()) -> list[str]:
    return ["run", "--models", *map(str, specs), "--seeds", *map(str, seeds), "--epochs",
            str(epochs), "--train-limit", str(limit), "--threads", "1", "--store", str(store),
            "--out", str(out_of(store)), *extra]


def recorded_epochs(store: Path) -> dict[str, tuple[str, int]]:
    """Each run's status and the epochs the store records as done (index row)."""
    if not (store / "index.sqlite").exists():
        return {}
    try:
        return {r.id: (r.status, r.epochs_done) for r in RunStore(store, create=False).runs()}
    except OSError:
        return {}


def lost_epochs(before: dict[str, tuple[str, int]], log: str, epochs: int) -> int:
    """Epochs recorded before this start that it trains again (from its log lines)."""
    lost = 0
    for rid, (status, done) in before.items():
        m = re.search(rf"resuming run {rid} after epoch (\d+)/", log)
        if status in ("finished", "diverged"):
            if f"run {rid} is marked" in log and "incomplete" in log:
                lost += epochs
        elif m:
            lost += max(0, done - int(m.group(1)))
        elif f"no usable checkpoint for run {rid}" in log:
            lost += done
    return lost


def weights_content(path: Path) -> tuple[dict, dict]:
    from safetensors import safe_open
    from safetensors.torch import load_file
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    return meta, {k: v.numpy().tobytes() for k, v in load_file(str(path)).items()}


def mismatches(ref: Path, got: Path) -> list[str]:
    """What differs between two completed stores of the same study (wall seconds aside)."""
    a, b = RunStore(ref, create=False), RunStore(got, create=False)
    out = []
    rows_b = {r.id: r for r in b.runs()}
    for ra in a.runs():
        rb = rows_b.get(ra.id)
        if rb is None:
            out.append(f"{ra.id}: missing")
            continue
        if (ra.status, ra.epochs_done, ra.test_loss, ra.test_accuracy) != (
                rb.status, rb.epochs_done, rb.test_loss, rb.test_accuracy):
            out.append(f"{ra.id}: index row differs")
        ha, hb = a.read_history(ra.id), b.read_history(ra.id)
        if any(ha[k] != hb[k] for k in ("loss", "acc", "val_loss", "val_acc")):
            out.append(f"{ra.id}: history differs")
        for name in ("predictions.npy", "probabilities.npy"):
            if (a.folder(ra.id) / name).read_bytes() != (b.folder(ra.id) / name).read_bytes():
                out.append(f"{ra.id}: {name} differs")
        try:
            if weights_content(a.folder(ra.id) / "weights.safetensors") != weights_content(
                    b.folder(ra.id) / "weights.safetensors"):
                out.append(f"{ra.id}: weights differ")
        except OSError as e:
            out.append(f"{ra.id}: weights unreadable ({e})")
    return out


def out_consistent(store: Path) -> list[str]:
    """results.json and history.csv in each --out folder tell the same histories."""
    import csv
    problems = []
    for results in out_of(store).rglob("results.json"):
        folder = results.parent
        roll_forward(folder)  # what the next write there does first
        doc = json.loads(results.read_text())
        rows = list(csv.DictReader((folder / "history.csv").open()))
        for name, m in doc["models"].items():
            mine = [float(r["loss"]) for r in rows if r["model"] == name]
            if mine != [float(x) for x in m["history"]["loss"]]:
                problems.append(f"{folder}: results.json and history.csv disagree on {name}")
    return problems


def random_kills(work: Path, kills: int, rng: random.Random, epochs: int = 3,
                 limit: int = 512) -> dict:
    specs = []
    for name, filters in (("CHAOS_A", 4), ("CHAOS_B", 6)):
        (work / f"{name}.yaml").write_text(TINY.format(name=name, filters=filters))
        specs.append(work / f"{name}.yaml")
    ref = work / "reference"
    start = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "cnnbench",
                        *study_args(specs, ref, [0, 1], epochs, limit)],
                       capture_output=True, text=True, env=env())
    if p.returncode != 0:
        raise SystemExit(f"the reference study failed:\n{p.stderr[-2000:]}")
    wall = time.monotonic() - start
    total_epochs = 2 * 2 * epochs
    stats = {"kills": 0, "by_mode": {m: 0 for m in MODES}, "epochs_lost": 0, "rounds": 0,
             "mismatches": [], "verify": [], "running": 0, "other_exits": [],
             "tracebacks": 0, "reference_seconds": round(wall, 1)}
    round_no, store = 0, work / "chaos-0"
    while True:
        before = recorded_epochs(store)
        left = total_epochs - sum(d for s, d in before.values() if s != "finished") - sum(
            epochs for s, _ in before.values() if s == "finished")
        mode = rng.choice(MODES) if stats["kills"] < kills else "none"
        nth = {"checkpoint": rng.randint(1, max(1, left)), "index": rng.randint(1, 3 * left + 6),
               "report": rng.randint(1, 6)}.get(mode, 0)
        args = study_args(specs, store, [0, 1], epochs, limit)
        child_env = env() | {"CHAOS_MODE": mode if mode != "none" else "step",
                             "CHAOS_NTH": str(nth), "CHAOS_OUT": str(out_of(store))}
        with tempfile.TemporaryFile("w+") as log:
            proc = subprocess.Popen([sys.executable, "-c", CHILD, *args], stdout=log,
                                    stderr=subprocess.STDOUT, text=True, env=child_env)
            if mode == "step":  # a random moment of what is left of the study
                try:
                    proc.wait(timeout=rng.uniform(0.5, wall * max(left, 1) / total_epochs + 2))
                except subprocess.TimeoutExpired:
                    proc.send_signal(signal.SIGKILL)
            rc = proc.wait()
            log.seek(0)
            text = log.read()
        stats["tracebacks"] += text.count("Traceback")
        stats["epochs_lost"] += lost_epochs(before, text, epochs)
        if rc == -signal.SIGKILL:
            stats["kills"] += 1
            stats["by_mode"][mode] += 1
            continue
        if rc != 0:
            stats["other_exits"].append((rc, text.strip().splitlines()[-1:] or [""]))
            continue
        # The study completed: compare it with the reference, check the store.
        stats["rounds"] += 1
        stats["mismatches"] += mismatches(ref, store)
        s = RunStore(store, create=False)
        stats["verify"] += s.verify() + out_consistent(store)
        stats["running"] += sum(r.status == "running" for r in s.runs())
        if stats["kills"] >= kills:
            return stats
        round_no += 1
        store = work / f"chaos-{round_no}"


def concurrency(work: Path, procs: int, runs: int, rng: random.Random) -> dict:
    spec = work / "CONC.yaml"
    spec.write_text(TINY.format(name="CONC", filters=4))
    store = work / "shared"
    RunStore(store)
    pool = list(range(runs + runs // 2 + 1))  # overlapping seeds: processes meet on runs
    children, union = [], set()
    for i in range(procs):
        seeds = rng.sample(pool, runs)
        union |= set(seeds)
        extra = ("--force",) if i % 2 else ()
        args = ["run", "--models", str(spec), "--seeds", *map(str, seeds), "--epochs", "1",
                "--train-limit", "256", "--threads", "1", "--store", str(store), "--out",
                str(out_of(store) / f"{i}"), *extra]
        log = tempfile.TemporaryFile("w+")
        children.append((subprocess.Popen([sys.executable, "-m", "cnnbench", *args],
                                          stdout=log, stderr=subprocess.STDOUT, text=True,
                                          env=env()), log))
    rm = {"tried": 0, "deleted": 0, "refused": 0, "other": []}
    stop = threading.Event()

    def remover() -> None:
        while not stop.wait(rng.uniform(1.0, 3.0)):
            ids = list(recorded_epochs(store))
            if not ids:
                continue
            p = subprocess.run([sys.executable, "-m", "cnnbench", "rm", rng.choice(ids),
                                "--yes", "--store", str(store)], capture_output=True,
                               text=True, env=env())
            rm["tried"] += 1
            if p.returncode == 0:
                rm["deleted"] += 1
            elif "being trained" in p.stderr:
                rm["refused"] += 1
            else:
                rm["other"].append(p.stderr.strip()[-200:])

    t = threading.Thread(target=remover, daemon=True)
    t.start()
    codes, tracebacks, last_lines = [], 0, []
    for proc, log in children:
        codes.append(proc.wait())
        log.seek(0)
        text = log.read()
        tracebacks += text.count("Traceback")
        if codes[-1] != 0:
            last_lines.append(text.strip().splitlines()[-1][:200])
    stop.set()
    t.join()
    s = RunStore(store, create=False)
    problems = s.verify()  # index and folders agree after the storm
    running = sum(r.status == "running" for r in s.runs())
    # Then every seed once more, quietly: the store completes, each run once.
    final = subprocess.run([sys.executable, "-m", "cnnbench", "run", "--models", str(spec),
                            "--seeds", *map(str, sorted(union)), "--epochs", "1",
                            "--train-limit", "256", "--threads", "1", "--store", str(store),
                            "--out", str(out_of(store) / "final")], capture_output=True,
                           text=True, env=env())
    tracebacks += (final.stdout + final.stderr).count("Traceback")
    rows = s.runs()
    return {"processes": procs, "runs_each": runs, "exit_codes": codes, "rm": rm,
            "tracebacks": tracebacks, "verify": problems + s.verify(), "rows": len(rows),
            "expected_rows": len(union), "final_exit": final.returncode,
            "finished": sum(r.status == "finished" for r in rows),
            "running": running + sum(r.status == "running" for r in rows),
            "folders": len([p for p in s.runs_dir.iterdir() if p.is_dir()]),
            "failed_lines": last_lines}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=50, help="SIGKILLs of the study (default 50)")
    ap.add_argument("--procs", type=int, default=4, help="processes on one store (default 4)")
    ap.add_argument("--runs", type=int, default=10, help="runs each process trains (default 10)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the random moments")
    ap.add_argument("--work", type=Path, help="folder for the stores (default: a temp folder)")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args(argv)
    rng = random.Random(args.seed)
    work = args.work or Path(tempfile.mkdtemp(prefix="cnnbench-chaos-"))
    work.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    try:
        a = random_kills(work, args.kills, rng)
        b = concurrency(work, args.procs, args.runs, rng)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    modes = ", ".join(f"{m} {n}" for m, n in a["by_mode"].items())
    rows = [
        ("random kills", f"{a['kills']} ({modes})", f"{args.kills}"),
        ("studies completed after kills", str(a["rounds"]), ">= 1"),
        ("epochs lost", str(a["epochs_lost"]), "0"),
        ("mismatches vs uninterrupted", str(len(a["mismatches"])), "0"),
        ("verify problems after kills", str(len(a["verify"])), "0"),
        ("runs left running", str(a["running"]), "0"),
        ("other exits / tracebacks", f"{len(a['other_exits'])} / {a['tracebacks']}", "0 / 0"),
        (f"concurrency: {b['processes']} processes x {b['runs_each']} runs",
         f"exit codes {b['exit_codes']}", "0 or a one-line refusal"),
        ("concurrency: rm tried / deleted / refused (locked)",
         f"{b['rm']['tried']} / {b['rm']['deleted']} / {b['rm']['refused']}", "-"),
        ("concurrency: index rows / folders / running", f"{b['rows']} / {b['folders']} / "
                                                        f"{b['running']}", "equal / 0"),
        ("concurrency: then all seeds again: exit, finished runs",
         f"{b['final_exit']}, {b['finished']} of {b['expected_rows']}", "0, all"),
        ("concurrency: verify problems / tracebacks",
         f"{len(b['verify'])} / {b['tracebacks']}", "0 / 0"),
    ]
    print(f"\ncnnbench store chaos (seed {args.seed}, {time.monotonic() - start:.0f} s; "
          f"reference study {a['reference_seconds']} s)\n")
    print("| figure | measured | goal |\n|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]} |")
    for label, items in (("mismatch", a["mismatches"]), ("verify", a["verify"] + b["verify"]),
                         ("exit", a["other_exits"] + b["failed_lines"] + b["rm"]["other"])):
        for item in items[:10]:
            print(f"{label}: {item}")
    if args.json:
        args.json.write_text(json.dumps({"kills": a, "concurrency": b}, indent=1, default=str))
    ok = (a["epochs_lost"] == 0 and not a["mismatches"] and not a["verify"] and not a["running"]
          and not a["tracebacks"] and not b["verify"] and not b["running"]
          and not b["tracebacks"] and b["rows"] == b["folders"] and b["final_exit"] == 0
          and b["finished"] == b["expected_rows"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
