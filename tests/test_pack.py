"""Packs: finished runs carried to another store, with real runs, real files and the real CLI.

A pack must arrive whole or not at all: every damaged, altered or hostile pack is refused
before any of its runs is written, and nothing a store has finished is ever replaced."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import sqlite3
import tarfile
from pathlib import Path

import pytest
from conftest import cnnbench_cli

from cnnbench.store.pack import MANIFEST, PackError, pack, read_pack, unpack
from cnnbench.store.run_store import IMPORTED, RunStore, StoreError

TINY = """name: {name}
input_shape: [28, 28, 1]
layers:
  - MaxPooling2D: {{}}
  - Conv2D: {{filters: 4, kernel_size: [3, 3], activation: relu}}
  - Flatten: {{}}
  - Dense: {{units: 16, activation: relu}}
  - Dense: {{units: 10, activation: softmax}}
"""
KEPT = ("config.json", "history.csv", "predictions.npy", "weights.safetensors",
        "probabilities.npy")


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    """A store with two tiny models trained for real (2 epochs on 512 MNIST images)."""
    d = tmp_path_factory.mktemp("trained")
    specs = []
    for name in ("PACK_A", "PACK_B"):
        (d / f"{name}.yaml").write_text(TINY.format(name=name))
        specs.append(str(d / f"{name}.yaml"))
    args = ("run", "--models", *specs, "--epochs", "2", "--train-limit", "512",
            "--out", str(d / "out"))
    p = cnnbench_cli(*args, store=d / "store")
    assert p.returncode == 0, p.stdout + p.stderr
    return {"store": d / "store", "args": args, "dir": d}


def ids(store: Path) -> list[str]:
    return sorted(r.id for r in RunStore(store, create=False).runs())


def rewrite(src: Path, dst: Path, change) -> None:
    """Copy the pack ``src`` to ``dst`` with ``change(members)`` applied to its
    name -> bytes dict, the manifest left exactly as it was."""
    with tarfile.open(src, "r:gz") as tar:
        members = {i.name: tar.extractfile(i).read() for i in tar}
    change(members)
    with tarfile.open(dst, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def manifest_fixed(members: dict, member: str) -> None:
    """Update the manifest's checksum of ``member`` after it was changed (a forger's pack)."""
    m = json.loads(members[MANIFEST])
    rid, name = member.split("/")[1:]
    entry = next(e for e in m["runs"] if e["id"] == rid)
    data = members[member]
    entry["files"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    members[MANIFEST] = json.dumps(m).encode()


def test_a_pack_lands_every_file_and_row_as_trained(trained, tmp_path):
    src = RunStore(trained["store"], create=False)
    path = tmp_path / "runs.tar.gz"
    assert sorted(pack(src, src.done_ids(), path)) == ids(trained["store"])
    dst = RunStore(tmp_path / "other")
    done = unpack(dst, path)
    assert sorted(u.run_id for u in done) == ids(trained["store"])
    assert {u.action for u in done} == {"added"} and all(u.weights for u in done)
    assert dst.verify() == []
    for rid in src.done_ids():
        for name in KEPT:
            assert (dst.folder(rid) / name).read_bytes() == \
                (src.folder(rid) / name).read_bytes(), name
        a, b = src.get(rid), dst.get(rid)
        for field in ("model", "dataset", "seed", "epochs_planned", "epochs_done", "status",
                      "test_loss", "test_accuracy", "train_seconds", "started", "finished",
                      "host"):
            assert getattr(a, field) == getattr(b, field), field
        ra, rb = src.record(rid), dst.record(rid)
        assert ra.history == rb.history and (ra.test_predictions == rb.test_predictions).all()
        assert dst.imported(rid)["weights"] is True and src.imported(rid) is None


def test_the_same_command_reuses_unpacked_runs_and_trains_nothing(trained, tmp_path):
    p = cnnbench_cli("pack", "--out", str(tmp_path / "r.tar.gz"), store=trained["store"])
    assert p.returncode == 0, p.stderr
    assert "Packed 2 run(s) with their weights" in p.stdout
    other = tmp_path / "other"
    p = cnnbench_cli("unpack", str(tmp_path / "r.tar.gz"), store=other)
    assert p.returncode == 0, p.stderr
    assert "2 of 2 run(s) added" in p.stdout
    args = [a if a != str(trained["dir"] / "out") else str(tmp_path / "out")
            for a in trained["args"]]
    p = cnnbench_cli(*args, store=other)
    assert p.returncode == 0, p.stderr
    log = p.stdout + p.stderr
    assert log.count("reused run") == 2 and "epoch 1/2" not in log.lower(), log
    ours = json.loads((tmp_path / "out" / "results.json").read_text())
    theirs = json.loads((trained["dir"] / "out" / "results.json").read_text())
    assert {k: m["test_accuracy_percent"] for k, m in ours["models"].items()} == \
        {k: m["test_accuracy_percent"] for k, m in theirs["models"].items()}


def test_without_weights_runs_are_reported_but_predict_says_why_it_cannot(trained, tmp_path):
    src = RunStore(trained["store"], create=False)
    full, light = tmp_path / "full.tar.gz", tmp_path / "light.tar.gz"
    pack(src, src.done_ids(), full)
    pack(src, src.done_ids(), light, weights=False)
    assert light.stat().st_size < full.stat().st_size / 2
    other = tmp_path / "other"
    dst = RunStore(other)
    assert all(not u.weights for u in unpack(dst, light))
    assert dst.verify() == []
    rid = dst.done_ids()[0]
    assert dst.final_files_complete(dst.get(rid)) and dst.weights_left_out(rid)
    assert not (dst.folder(rid) / "weights.safetensors").exists()
    p = cnnbench_cli("predict", rid, str(tmp_path / "any.png"), store=other)
    assert p.returncode == 2 and "without its weights" in p.stderr, p.stderr
    p = cnnbench_cli("show", rid, store=other)
    assert p.returncode == 0 and "weights were not packed" in p.stdout, p.stdout
    p = cnnbench_cli("report", "--out", str(tmp_path / "rep"), store=other)
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "rep" / "report.html").stat().st_size > 0
    # packed again from there: still without weights, and says so
    again = tmp_path / "again.tar.gz"
    pack(dst, dst.done_ids(), again)
    assert not any(e["weights"] for e in json.loads(_member(again, MANIFEST))["runs"])


def test_a_forced_retrain_of_an_unpacked_run_makes_it_this_stores_own(trained, tmp_path):
    src = RunStore(trained["store"], create=False)
    light = tmp_path / "light.tar.gz"
    rid = src.done_ids()[0]
    pack(src, [rid], light, weights=False)
    other = tmp_path / "other"
    unpack(RunStore(other), light)
    spec = next(a for a in trained["args"] if a.endswith(f"{src.get(rid).model}.yaml"))
    p = cnnbench_cli("run", "--models", spec, "--epochs", "2", "--train-limit", "512", "--force",
                     "--out", str(tmp_path / "out"), store=other)
    assert p.returncode == 0, p.stderr
    dst = RunStore(other, create=False)
    assert dst.imported(rid) is None and not dst.weights_left_out(rid)
    assert (dst.folder(rid) / "weights.safetensors").is_file() and dst.verify() == []


def test_a_run_finished_here_is_kept_untouched(trained, tmp_path):
    src = RunStore(trained["store"], create=False)
    path = tmp_path / "r.tar.gz"
    pack(src, src.done_ids(), path, weights=False)
    before = {p: (p.stat().st_mtime_ns, p.read_bytes())
              for p in src.runs_dir.rglob("*") if p.is_file()}
    done = unpack(src, path)
    assert {u.action for u in done} == {"kept"}
    assert all("already finished here" in u.reason for u in done)
    after = {p: (p.stat().st_mtime_ns, p.read_bytes())
             for p in src.runs_dir.rglob("*") if p.is_file()}
    assert after == before


def test_an_interrupted_run_of_the_same_id_is_replaced_by_the_finished_one(trained, tmp_path):
    src = RunStore(trained["store"], create=False)
    path = tmp_path / "r.tar.gz"
    pack(src, src.done_ids(), path)
    dst = RunStore(tmp_path / "other")
    unpack(dst, path)
    rid = dst.done_ids()[0]
    with sqlite3.connect(dst.db_path) as db:  # as a kill in epoch 2 leaves it
        db.execute("UPDATE runs SET status = 'interrupted', epochs_done = 1 WHERE id = ?",
                   (rid,))
    (dst.folder(rid) / "checkpoint.pt").write_bytes(b"partial")
    (dst.folder(rid) / "predictions.npy").unlink()
    done = {u.run_id: u.action for u in unpack(dst, path)}
    assert done[rid] == "replaced" and list(done.values()).count("kept") == 1
    assert dst.get(rid).status == "finished" and dst.verify() == []
    assert not (dst.folder(rid) / "checkpoint.pt").exists()
    assert (dst.folder(rid) / "predictions.npy").read_bytes() == \
        (src.folder(rid) / "predictions.npy").read_bytes()


def _member(path: Path, name: str) -> bytes:
    with tarfile.open(path, "r:gz") as tar:
        return tar.extractfile(name).read()


@pytest.fixture()
def good_pack(trained, tmp_path) -> Path:
    src = RunStore(trained["store"], create=False)
    path = tmp_path / "good.tar.gz"
    pack(src, src.done_ids(), path)
    return path


def _first_run_member(path: Path, name: str) -> str:
    rid = json.loads(_member(path, MANIFEST))["runs"][0]["id"]
    return f"runs/{rid}/{name}"


def flip_byte(member: str):
    def change(members):
        data = bytearray(members[member])
        data[len(data) // 2] ^= 0x01
        members[member] = bytes(data)
    return change


def edit_config_seed(member: str):
    def change(members):
        config = json.loads(members[member])
        config["key"]["training"]["batch_size"] += 1  # as if trained with other settings
        members[member] = json.dumps(config).encode()
        manifest_fixed(members, member)
    return change


@pytest.mark.parametrize("case, match", [
    ("flipped weights", "weights.safetensors does not match its checksum"),
    ("flipped predictions", "predictions.npy does not match its checksum"),
    ("config key edited", "run key hashes to"),
    ("unlisted member", "is not listed in pack.json"),
    ("missing member", "history.csv is listed but missing"),
    ("path outside", "is not listed in pack.json"),
    ("truncated", "damaged or truncated"),
    ("not a tar", "not a cnnbench pack"),
    ("row says other seed", "its row says seed"),
])
def test_a_damaged_or_altered_pack_writes_nothing_and_says_where(good_pack, tmp_path, case,
                                                                 match):
    bad = tmp_path / "bad.tar.gz"
    if case == "truncated":
        bad.write_bytes(good_pack.read_bytes()[: good_pack.stat().st_size // 2])
    elif case == "not a tar":
        bad.write_text("name: CNN_MNIST_1\n")
    else:
        member = {"flipped weights": "weights.safetensors", "flipped predictions":
                  "predictions.npy", "config key edited": "config.json"}.get(case, "history.csv")
        target = _first_run_member(good_pack, member)

        def change(members):
            if case.startswith("flipped"):
                flip_byte(target)(members)
            elif case == "config key edited":
                edit_config_seed(target)(members)
            elif case == "unlisted member":
                members[target.replace("history.csv", "notes.txt")] = b"hi"
            elif case == "missing member":
                del members[target]
            elif case == "path outside":
                members["../../escaped.txt"] = b"hi"
            elif case == "row says other seed":
                m = json.loads(members[MANIFEST])
                m["runs"][0]["row"]["seed"] = 7
                members[MANIFEST] = json.dumps(m).encode()
        rewrite(good_pack, bad, change)
    store_dir = tmp_path / "target"
    p = cnnbench_cli("unpack", str(good_pack), str(bad), store=store_dir)
    assert p.returncode == 2, p.stdout + p.stderr
    assert match in p.stderr and str(bad) in p.stderr, p.stderr
    assert p.stderr.count("\n") == 1  # one line, no traceback
    # the good pack before it landed whole; the bad one added nothing
    assert len(ids(store_dir)) == 2 and RunStore(store_dir).verify() == []
    assert not (tmp_path.parent / "escaped.txt").exists()
    assert not list(tmp_path.rglob("escaped.txt"))


def test_a_pack_with_a_link_or_a_folder_member_is_refused(good_pack, tmp_path):
    bad = tmp_path / "link.tar.gz"
    with tarfile.open(bad, "w:gz") as tar:
        info = tarfile.TarInfo("runs/aaaaaaaaaaaa/weights.safetensors")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(info)
    with pytest.raises(PackError, match="is not a plain file"):
        read_pack(bad)


def test_only_finished_runs_are_packed(trained, tmp_path):
    store_dir = tmp_path / "s"
    shutil.copytree(trained["store"], store_dir)
    store = RunStore(store_dir, create=False)
    rid = store.done_ids()[0]
    with sqlite3.connect(store.db_path) as db:
        db.execute("UPDATE runs SET status = 'interrupted' WHERE id = ?", (rid,))
    with pytest.raises(StoreError, match=f"run {rid} .* is interrupted, not finished"):
        pack(store, [rid], tmp_path / "x.tar.gz")
    assert not (tmp_path / "x.tar.gz").exists()
    p = cnnbench_cli("pack", "zzz", "--out", str(tmp_path / "x.tar.gz"), store=store_dir)
    assert p.returncode == 2 and "zzz" in p.stderr, p.stderr
    p = cnnbench_cli("pack", "--out", str(store_dir / "inside.tar.gz"), store=store_dir)
    assert p.returncode == 2 and "inside the run store" in p.stderr, p.stderr


def test_an_unpacked_run_keeps_its_marker_out_of_the_pack_files(trained, tmp_path):
    """imported.json is this store's note, not the run's: a pack made from an unpacked run
    carries the run's own files only."""
    src = RunStore(trained["store"], create=False)
    first, second = tmp_path / "1.tar.gz", tmp_path / "2.tar.gz"
    pack(src, src.done_ids(), first)
    mid = RunStore(tmp_path / "mid")
    unpack(mid, first)
    assert all((mid.folder(r) / IMPORTED).is_file() for r in mid.done_ids())
    pack(mid, mid.done_ids(), second)
    with tarfile.open(second, "r:gz") as tar:
        assert not any(n.endswith(IMPORTED) for n in tar.getnames())
    assert _member(first, _first_run_member(first, "weights.safetensors")) == \
        _member(second, _first_run_member(second, "weights.safetensors"))


# --- a pack is checked whole, contents included, before its first byte is written ----------

def rekeyed(members: dict, rid: str, edit) -> str:
    """A forger's run: ``edit(config, row)`` applied to run ``rid`` of the pack, which then
    moves to the id its edited run key hashes to, every checksum fixed. The new id."""
    from cnnbench.store.run_store import run_id
    m = json.loads(members[MANIFEST])
    entry = next(e for e in m["runs"] if e["id"] == rid)
    config = json.loads(members[f"runs/{rid}/config.json"])
    edit(config, entry["row"])
    new = run_id(config["key"])
    members[f"runs/{rid}/config.json"] = json.dumps(config).encode()
    for name in list(entry["files"]):
        members[f"runs/{new}/{name}"] = members.pop(f"runs/{rid}/{name}")
    entry["id"] = new
    members[MANIFEST] = json.dumps(m).encode()
    for name in entry["files"]:
        manifest_fixed(members, f"runs/{new}/{name}")
    return new


@pytest.mark.parametrize("edit, match", [
    ("key seed", "config.json's 'key.seed' is -1, its 'seed' 0: they must agree"),
    ("key dataset", "config.json's 'key.dataset' is 'other', its 'dataset.fingerprint'"),
    ("key epochs", "config.json's 'key.training.epochs' is 9, its 'training.epochs' 2"),
])
def test_a_run_key_that_disagrees_with_its_config_and_row_is_refused(good_pack, tmp_path, edit,
                                                                     match):
    def disagree(config, row):
        if edit == "key seed":
            config["key"]["seed"] = -1  # the row and config still say seed 0
        elif edit == "key dataset":
            config["key"]["dataset"] = "other"
        else:
            config["key"]["training"]["epochs"] = 9

    def change(members):
        rekeyed(members, json.loads(members[MANIFEST])["runs"][0]["id"], disagree)
    bad = tmp_path / "disagrees.tar.gz"
    rewrite(good_pack, bad, change)
    store = RunStore(tmp_path / "target")
    with pytest.raises(PackError, match=match):
        unpack(store, bad)
    assert store.runs() == [] and list(store.runs_dir.iterdir()) == []


def test_a_pack_whose_second_run_overflows_the_index_writes_nothing(good_pack, tmp_path):
    def huge_seed(config, row):
        config["seed"] = config["key"]["seed"] = config["training"]["seed"] = row["seed"] = \
            10**23

    def change(members):
        second = json.loads(members[MANIFEST])["runs"][1]["id"]
        rekeyed(members, second, huge_seed)
    bad = tmp_path / "huge-seed.tar.gz"
    rewrite(good_pack, bad, change)
    store = RunStore(tmp_path / "target")
    with pytest.raises(PackError, match=r"'seed' must be an integer in \[-9223372036854775808, "
                                        r"9223372036854775807\]. Got 100000000000000000000000"):
        unpack(store, bad)
    assert store.runs() == [] and list(store.runs_dir.iterdir()) == []
    p = cnnbench_cli("unpack", str(bad), store=tmp_path / "fresh")
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and str(bad) in p.stderr, p.stderr
    assert not (tmp_path / "fresh").exists()  # not even an empty store


def _npy_bytes(array) -> bytes:
    import numpy as np
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def _hostile(case: str):
    """change(members) for one hostile content of the pack's first run, checksums fixed."""
    import numpy as np

    def change(members):
        m = json.loads(members[MANIFEST])
        entry = m["runs"][0]
        rid, row = entry["id"], entry["row"]
        at = f"runs/{rid}/"
        member = None
        if case == "garbage history":
            member, members[at + "history.csv"] = at + "history.csv", b"epoch,loss\n1,abc\n2,x\n"
        elif case == "predictions too short":
            member, members[at + "predictions.npy"] = at + "predictions.npy", \
                _npy_bytes(np.zeros(5, np.uint8))
        elif case == "predictions as floats":
            n = len(np.load(io.BytesIO(members[at + "predictions.npy"])))
            member, members[at + "predictions.npy"] = at + "predictions.npy", \
                _npy_bytes(np.zeros(n, np.float32))
        elif case == "predictions out of class range":
            preds = np.load(io.BytesIO(members[at + "predictions.npy"])).copy()
            preds[0] = 10
            member, members[at + "predictions.npy"] = at + "predictions.npy", _npy_bytes(preds)
        elif case == "grad norms not JSON":
            member = at + "grad_norms.json"
            entry["files"].setdefault("grad_norms.json", {})
            members[member] = b"{not json"
        elif case == "config model lacks fields":
            config = json.loads(members[at + "config.json"])
            del config["model"]["spec_raw"], config["model"]["parameters"]
            member, members[at + "config.json"] = at + "config.json", json.dumps(config).encode()
        elif case == "files a list":
            entry["files"] = list(entry["files"])
        elif case == "file entries strings":
            entry["files"] = {k: v["sha256"] for k, v in entry["files"].items()}
        elif case == "negative epochs planned":
            row["epochs_planned"] = -2
        elif case == "infinite accuracy":
            row["test_accuracy"] = float("inf")
        elif case == "infinite val_acc in history":
            lines = members[at + "history.csv"].decode().splitlines()
            cells = lines[1].split(",")
            cells[4] = "inf"
            lines[1] = ",".join(cells)
            member, members[at + "history.csv"] = at + "history.csv", \
                ("\n".join(lines) + "\n").encode()
        elif case == "runs an object":
            m["runs"] = {"a": 1}
        elif case in ("status a list", "model a list", "seed null", "started an object"):
            field, value = {"status a list": ("status", []), "model a list": ("model", ["x"]),
                            "seed null": ("seed", None),
                            "started an object": ("started", {})}[case]
            row[field] = value
        elif case in ("empty weights", "weights a zip", "weights header past its end"):
            import zipfile
            member = at + "weights.safetensors"
            if case == "empty weights":
                members[member] = b""
            elif case == "weights a zip":
                buf = io.BytesIO()
                with zipfile.ZipFile(buf, "w") as z:
                    z.writestr("data.pkl", b"x" * 64)
                members[member] = buf.getvalue()
            else:
                members[member] = (1000).to_bytes(8, "little") + b"{}"
        members[MANIFEST] = json.dumps(m).encode()
        if member is not None:
            manifest_fixed(members, member)
    return change


@pytest.mark.parametrize("case, match", [
    ("garbage history", "history.csv must start with the line 'epoch,loss,acc,val_loss,"),
    ("predictions too short", "predictions.npy must hold .* integers .* Got shape \\(5,\\)"),
    ("predictions as floats", "predictions.npy must hold .* Got shape .*float32"),
    ("predictions out of class range", "in 0..9. Got shape .*values 0..10"),
    ("grad norms not JSON", "grad_norms.json is not JSON"),
    ("config model lacks fields", "config.json's 'model.parameters' is missing"),
    ("files a list", "its 'files' must be an object .* Got list"),
    ("file entries strings", "the entry of .* must be an object with 'sha256'"),
    ("negative epochs planned", "its row's 'epochs_planned' must be a positive integer.* "
                                "Got -2 instead"),
    ("infinite accuracy", "its row's 'test_accuracy' must be null or a number in \\[0, 1\\]. "
                          "Got inf"),
    ("infinite val_acc in history", "history.csv line 2: 'val_acc' must be a number in "
                                    "\\[0, 1\\]. Got inf"),
    ("runs an object", "'runs' must be a list of runs. Got dict"),
    ("status a list", "its row's 'status' must be a run status .*Got \\[\\] instead"),
    ("model a list", "its row's 'model' must be a string. Got \\['x'\\] instead"),
    ("seed null", "its row's 'seed' must be an integer .*Got None instead"),
    ("started an object", "its row's 'started' must be a string. Got \\{\\} instead"),
    ("empty weights", "weights.safetensors must be a safetensors file. Got 0 bytes"),
    ("weights a zip", "weights.safetensors must be a safetensors file. Got .* bytes: header "
                      "length .* is outside the file"),
    ("weights header past its end", "weights.safetensors must be a safetensors file. Got 10 "
                                    "bytes: header length 1000 is outside the file"),
])
def test_a_pack_with_valid_checksums_and_hostile_contents_writes_nothing(good_pack, tmp_path,
                                                                         case, match):
    bad = tmp_path / "hostile.tar.gz"
    rewrite(good_pack, bad, _hostile(case))
    store = RunStore(tmp_path / "target")
    with pytest.raises(PackError, match=match):
        unpack(store, bad)
    assert store.runs() == [] and list(store.runs_dir.iterdir()) == []


def test_a_hostile_pack_is_one_line_on_the_command_line(good_pack, tmp_path):
    bad = tmp_path / "hostile.tar.gz"
    rewrite(good_pack, bad, _hostile("predictions out of class range"))
    p = cnnbench_cli("unpack", str(bad), store=tmp_path / "target")
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
    (line,) = p.stderr.strip().splitlines()
    assert str(bad) in line and "predictions.npy must hold" in line, line
