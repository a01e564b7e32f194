# Writer and checker for tests/kill_points_test.ts (kill -9 of the daemon between a reply and the
# next log write: every metadata operation whose reply reached the program must be there after).
#
#   write ROOT LOG ROUND SEED [--limit N]
#       runs a seeded random mix of metadata operations under ROOT/rROUND (created first) until a
#       syscall fails (the daemon was killed) or N operations; appends each operation as one JSON
#       line to LOG (outside the mount) only after its syscalls returned. Nothing is fsync'd, LOG
#       neither (the writer outlives the daemon). The operation that failed is appended as
#       {"inflight": OP, "errno": E}: it may or may not have taken effect.
#   verify ROOT LOG
#       replays LOG against a model and compares every rROUND directory under ROOT with it: names,
#       types, modes, sizes, data, link counts, hard links (same inode), symlink targets, user.*
#       xattrs, times set by utime; nothing else under ROOT. Prints JSON {"ops", "problems", ...};
#       "files" counts the regular files' inodes of the states found (a local data file each).
#
# The operations: mkdir, create with a few bytes (open O_CREAT|O_EXCL, write, close), rename
# (file or directory, to a new name or over an existing file, within or across directories),
# unlink, rmdir, chmod, utime (ns), symlink, link, setxattr, truncate.
import errno, json, os, random, stat, sys, time



class Model:
    """The tree of one round directory: paths ("" is the round directory) to inode ids."""

    def __init__(self):
        self.names = {"": 0}
        self.inodes = {0: {"type": "d", "mode": 0o755, "xattrs": {}, "times": None}}
        self.next_id = 1

    def copy(self):
        m = Model()
        m.names = dict(self.names)
        m.inodes = {k: {**v, "xattrs": dict(v["xattrs"])} for k, v in self.inodes.items()}
        m.next_id = self.next_id
        return m

    def node(self, path):
        return self.inodes[self.names[path]]

    def children(self, path):
        prefix = path + "/" if path else ""
        return [p for p in self.names if p != path and p.startswith(prefix) and
                "/" not in p[len(prefix):]]

    def of_type(self, kind):
        return sorted(p for p, i in self.names.items() if self.inodes[i]["type"] == kind)

    def touch_dir(self, path):
        """An entry of `path` changed: its mtime (and so what utime set) is gone."""
        self.node(path)["times"] = None

    def new(self, path, fields):
        ino = self.next_id
        self.next_id += 1
        self.inodes[ino] = {"xattrs": {}, "times": None, **fields}
        self.names[path] = ino
        self.touch_dir(parent(path))

    def drop_name(self, path):
        ino = self.names.pop(path)
        if ino not in self.names.values():
            del self.inodes[ino]
        self.touch_dir(parent(path))

    def apply(self, op, partial=False):
        """Applies `op`; `partial` for a create: the file exists, empty (the write never came)."""
        kind = op["op"]
        if kind == "mkdir":
            self.new(op["path"], {"type": "d", "mode": op["mode"]})
        elif kind == "create":
            data = b"" if partial else bytes.fromhex(op["data"])
            self.new(op["path"], {"type": "f", "mode": op["mode"], "data": data})
        elif kind == "symlink":
            self.new(op["path"], {"type": "l", "mode": 0o777, "target": op["target"]})
        elif kind == "link":
            self.names[op["path"]] = self.names[op["src"]]
            self.touch_dir(parent(op["path"]))
        elif kind == "rename":
            src, dst = op["src"], op["dst"]
            if dst in self.names:
                self.drop_name(dst)
            moved = {p: i for p, i in self.names.items() if p == src or p.startswith(src + "/")}
            for p in moved:
                del self.names[p]
            for p, i in moved.items():
                self.names[dst + p[len(src):]] = i
            self.touch_dir(parent(src))
            self.touch_dir(parent(dst))
            if self.inodes[moved[src]]["type"] == "d":
                self.inodes[moved[src]]["times"] = None  # its ".." may have changed
        elif kind in ("unlink", "rmdir"):
            self.drop_name(op["path"])
        elif kind == "chmod":
            self.node(op["path"])["mode"] = op["mode"]
        elif kind == "utime":
            self.node(op["path"])["times"] = [op["atime"], op["mtime"]]
        elif kind == "setxattr":
            self.node(op["path"])["xattrs"][op["name"]] = op["value"]
        elif kind == "truncate":
            node = self.node(op["path"])
            node["data"] = node["data"][:op["size"]].ljust(op["size"], b"\0")
            node["times"] = None
        else:
            raise ValueError("unknown operation %r" % kind)


def parent(path):
    return path.rsplit("/", 1)[0] if "/" in path else ""


def choose_op(model, rng, counter):
    """One valid operation for the model's state (the model is not changed)."""
    name = "n%d" % counter
    dirs = model.of_type("d")
    files = model.of_type("f")
    links = model.of_type("l")
    crowded = len(model.names) > 150
    kinds = ["mkdir"] * (2 if crowded else 8) + ["create"] * (4 if crowded else 16) + \
        ["symlink"] * 4 + ["rename"] * 14 + ["unlink"] * (16 if crowded else 7) + \
        ["rmdir"] * (10 if crowded else 5) + ["chmod"] * 7 + ["utime"] * 7 + ["link"] * 5 + \
        ["setxattr"] * 7 + ["truncate"] * 6
    while True:
        kind = rng.choice(kinds)
        where = rng.choice(dirs)
        path = (where + "/" if where else "") + name
        if kind == "mkdir":
            return {"op": kind, "path": path, "mode": rng.choice([0o755, 0o700, 0o775, 0o711])}
        if kind == "create":
            return {"op": kind, "path": path, "mode": rng.choice([0o644, 0o600, 0o640, 0o755]),
                    "data": rng.randbytes(rng.randrange(1, 48)).hex()}
        if kind == "symlink":
            target = rng.choice(["../" + name, "/nowhere/" + name, name + "-x", "a/b/c"])
            return {"op": kind, "path": path, "target": target}
        if kind == "link" and files:
            return {"op": kind, "src": rng.choice(files), "path": path}
        if kind == "rename":
            movable = [p for p in model.names if p != ""]
            if not movable:
                continue
            src = rng.choice(movable)
            node = model.node(src)
            if node["type"] == "d":
                # A directory moves to a new name anywhere but under itself.
                targets = [d for d in dirs if d != src and not d.startswith(src + "/")]
                where = rng.choice(targets)
                return {"op": kind, "src": src, "dst": (where + "/" if where else "") + name}
            # Over an existing file (not a link to the same inode) or to a new name.
            others = [f for f in files if model.names[f] != model.names[src]]
            if node["type"] == "f" and others and rng.random() < 0.4:
                return {"op": kind, "src": src, "dst": rng.choice(others)}
            return {"op": kind, "src": src, "dst": path}
        if kind == "unlink" and (files or links):
            return {"op": kind, "path": rng.choice(files + links)}
        if kind == "rmdir":
            empty = [d for d in dirs if d != "" and not model.children(d)]
            if empty:
                return {"op": kind, "path": rng.choice(empty)}
            continue
        targets = files + [d for d in dirs if d != ""]
        if kind == "chmod" and targets:
            return {"op": kind, "path": rng.choice(targets), "mode": rng.randrange(0o1000)}
        if kind == "utime" and targets:
            # atime ahead of every ctime, so relatime never moves it when the checker reads.
            now = time.time_ns()
            return {"op": kind, "path": rng.choice(targets),
                    "atime": now + rng.randrange(3600, 864000) * 10**9 + rng.randrange(10**9),
                    "mtime": rng.randrange(10**18, 1_700_000_000 * 10**9)}
        if kind == "setxattr" and targets:
            return {"op": kind, "path": rng.choice(targets), "name": "user.k%d" % rng.randrange(4),
                    "value": rng.randbytes(rng.randrange(0, 40)).hex()}
        if kind == "truncate" and files:
            path = rng.choice(files)
            size = len(model.node(path)["data"])
            return {"op": kind, "path": path,
                    "size": rng.choice([0, size // 2, size + rng.randrange(1, 5000)])}


def run_op(base, op):
    at = lambda p: os.path.join(base, p)
    kind = op["op"]
    if kind == "mkdir":
        os.mkdir(at(op["path"]), op["mode"])
    elif kind == "create":
        fd = os.open(at(op["path"]), os.O_WRONLY | os.O_CREAT | os.O_EXCL, op["mode"])
        try:
            os.write(fd, bytes.fromhex(op["data"]))
        finally:
            os.close(fd)
    elif kind == "symlink":
        os.symlink(op["target"], at(op["path"]))
    elif kind == "link":
        os.link(at(op["src"]), at(op["path"]))
    elif kind == "rename":
        os.rename(at(op["src"]), at(op["dst"]))
    elif kind == "unlink":
        os.unlink(at(op["path"]))
    elif kind == "rmdir":
        os.rmdir(at(op["path"]))
    elif kind == "chmod":
        os.chmod(at(op["path"]), op["mode"])
    elif kind == "utime":
        os.utime(at(op["path"]), ns=(op["atime"], op["mtime"]))
    elif kind == "setxattr":
        os.setxattr(at(op["path"]), op["name"], bytes.fromhex(op["value"]))
    elif kind == "truncate":
        os.truncate(at(op["path"]), op["size"])


def write(root, log_path, rnd, seed, limit):
    os.umask(0)
    rng = random.Random("%s-%s" % (seed, rnd))
    base = os.path.join(root, "r%s" % rnd)
    model = Model()
    log = open(log_path, "a")

    def record(entry):
        log.write(json.dumps(entry) + "\n")
        log.flush()  # to the kernel: the writer outlives the daemon, no fsync needed

    os.mkdir(base, 0o755)
    record({"round": rnd})
    print("started", flush=True)
    done = 0
    while done < limit:
        # Bursts of 1-40 operations back to back, then a pause of 0-3 ms: kills land in the
        # middle of bursts and right after a reply with nothing behind it.
        for _ in range(rng.randrange(1, 41)):
            op = choose_op(model, rng, done)
            op["round"] = rnd
            try:
                run_op(base, op)
            except OSError as e:
                record({"inflight": op, "errno": e.errno})
                print("stopped: %s (after %d operations)" % (e, done), flush=True)
                return
            model.apply(op)
            record(op)
            done += 1
            if done >= limit:
                break
        time.sleep(rng.choice([0, 0, 0.0005, 0.001, 0.003]))
    print("finished %d operations" % done, flush=True)


def describe(base, path):
    """What the checker sees at `path` (no read that could change what it looks at next)."""
    full = os.path.join(base, path)
    st = os.lstat(full)
    seen = {"st": st, "mode": stat.S_IMODE(st.st_mode), "xattrs": {}}
    if stat.S_ISDIR(st.st_mode):
        seen["type"] = "d"
    elif stat.S_ISREG(st.st_mode):
        seen["type"] = "f"
    elif stat.S_ISLNK(st.st_mode):
        seen["type"] = "l"
        seen["target"] = os.readlink(full)
    else:
        seen["type"] = "?"
    if seen["type"] in ("d", "f"):
        for name in os.listxattr(full, follow_symlinks=False):
            if name.startswith("user."):
                seen["xattrs"][name] = os.getxattr(full, name, follow_symlinks=False).hex()
    return seen


def compare(base, model, tree):
    """Problems of the tree `tree` (path -> what describe saw, data read) against `model`."""
    problems = []
    for path in sorted(set(model.names) | set(tree)):
        show = "/" + path
        if path not in tree:
            problems.append("%s: missing" % show)
            continue
        if path not in model.names:
            problems.append("%s: there, but no logged operation left it (a %s)" %
                            (show, tree[path]["type"]))
            continue
        want, got = model.node(path), tree[path]
        st = got["st"]
        if want["type"] != got["type"]:
            problems.append("%s: type %s, expected %s" % (show, got["type"], want["type"]))
            continue
        if want["type"] != "l" and got["mode"] != want["mode"]:
            problems.append("%s: mode %o, expected %o" % (show, got["mode"], want["mode"]))
        if want["type"] == "l" and got["target"] != want["target"]:
            problems.append("%s: target %r, expected %r" % (show, got["target"], want["target"]))
        if want["type"] == "f":
            names = sum(1 for i in model.names.values() if i == model.names[path])
            if st.st_nlink != names:
                problems.append("%s: nlink %d, expected %d" % (show, st.st_nlink, names))
            if got["data"] != want["data"]:
                problems.append("%s: %d bytes %s, expected %d bytes %s" % (
                    show, len(got["data"]), got["data"][:16].hex(), len(want["data"]),
                    want["data"][:16].hex()))
        if want["type"] == "d":
            subdirs = sum(1 for c in model.children(path) if model.node(c)["type"] == "d")
            if st.st_nlink != 2 + subdirs:
                problems.append("%s: nlink %d, expected %d" % (show, st.st_nlink, 2 + subdirs))
        if want["type"] in ("d", "f") and got["xattrs"] != want["xattrs"]:
            problems.append("%s: xattrs %s, expected %s" % (show, got["xattrs"], want["xattrs"]))
        if want["times"] is not None and [st.st_atime_ns, st.st_mtime_ns] != want["times"]:
            problems.append("%s: atime, mtime %d %d, expected %d %d" % (
                show, st.st_atime_ns, st.st_mtime_ns, *want["times"]))
    # Hard links: one inode number per model inode, and never shared between two.
    inos = {}
    for path, ino in model.names.items():
        if path in tree and path != "":
            inos.setdefault(ino, set()).add(tree[path]["st"].st_ino)
    for ino, numbers in inos.items():
        if len(numbers) != 1:
            problems.append("names of one inode have inode numbers %s" % sorted(numbers))
    numbers = [n for s in inos.values() for n in s]
    if len(numbers) != len(set(numbers)):
        problems.append("two inodes share an inode number")
    return problems


def scan(base):
    """Every name under `base` described: lstat, readlink, xattrs of all first (none of that moves
    a time), then the data of every regular file (a listing or a read may move an atime)."""
    tree, problems = {}, []
    pending = [""]
    while pending:
        path = pending.pop()
        try:
            tree[path] = describe(base, path)
        except OSError as e:
            problems.append("/%s: %s" % (path, e))
            continue
        if tree[path]["type"] == "d":
            try:
                names = os.listdir(os.path.join(base, path))
            except OSError as e:
                problems.append("/%s: listing: %s" % (path, e))
                continue
            pending.extend((path + "/" if path else "") + n for n in names)
    for path, seen in tree.items():
        if seen["type"] == "f":
            try:
                with open(os.path.join(base, path), "rb") as fh:
                    seen["data"] = fh.read()
            except OSError as e:
                seen["data"] = b""
                problems.append("/%s: reading: %s" % (path, e))
    return tree, problems


def verify(root, log_path):
    models, inflight, ops, dead = {}, {}, 0, []
    with open(log_path) as log:
        for line in log:
            entry = json.loads(line)
            if "inflight" in entry:
                inflight[entry["inflight"]["round"]] = entry["inflight"]
                dead.append(entry["errno"])
            elif "op" in entry:
                models[entry["round"]].apply(entry)
                ops += 1
            else:
                models[entry["round"]] = Model()
    problems = []
    for name in sorted(os.listdir(root)):
        if name.startswith("r") and name[1:] in models:
            continue
        problems.append("/%s: there, but no round made it" % name)
    outcome, files = {}, 0
    for rnd, model in models.items():
        base = os.path.join(root, "r%s" % rnd)
        # Before the scan: what is logged, and each way the operation in flight may have ended.
        # No logged byte may be missing: a file created, written and closed keeps its data even
        # where the daemon had not handled its RELEASE (tests/kill_points_test.ts says why).
        candidates = [("without the operation in flight", model)]
        op = inflight.get(rnd)
        if op is not None:
            after = model.copy()
            after.apply(op)
            candidates.append(("with the operation in flight", after))
            if op["op"] == "create":
                empty = model.copy()
                empty.apply(op, partial=True)
                candidates.append(("with the operation in flight's file empty", empty))
        tree, read_problems = scan(base)
        found = []
        for label, candidate in candidates:
            found.append((label, read_problems + compare(base, candidate, tree)))
            if not found[-1][1]:
                break
        if found[-1][1]:
            for label, p in found:
                problems.extend("r%s, %s: %s" % (rnd, label, x) for x in p[:20])
        else:
            outcome[rnd] = found[-1][0]
            matched = candidates[len(found) - 1][1]
            files += sum(1 for i in matched.inodes.values() if i["type"] == "f")
    print(json.dumps({"ops": ops, "rounds": len(models), "errnos": dead, "outcome": outcome,
                      "files": files, "problems": problems[:60]}))


if __name__ == "__main__":
    if sys.argv[1] == "write":
        limit = 1_000_000
        if "--limit" in sys.argv:
            limit = int(sys.argv[sys.argv.index("--limit") + 1])
        write(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], limit)
    else:
        verify(sys.argv[2], sys.argv[3])
