# Executes file operations sent as JSON lines (one reply line each) inside a root directory, so the
# differential test can apply the same sequence to two file systems and compare results and errnos.
# Usage: python3 _ops_server.py [uid gid [supplementary gids...]]   (drops privileges first)
import ctypes, errno, hashlib, json, mmap, os, stat, subprocess, sys

if len(sys.argv) > 2:
    os.setgroups([int(g) for g in sys.argv[3:]])
    os.setgid(int(sys.argv[2]))
    os.setuid(int(sys.argv[1]))
os.umask(0o022)

FLAGS = {
    "RDONLY": os.O_RDONLY, "WRONLY": os.O_WRONLY, "RDWR": os.O_RDWR, "CREAT": os.O_CREAT,
    "EXCL": os.O_EXCL, "TRUNC": os.O_TRUNC, "APPEND": os.O_APPEND, "DIRECTORY": os.O_DIRECTORY,
    "NOFOLLOW": os.O_NOFOLLOW,
}
# fallocate modes FUSE passes on (COLLAPSE_RANGE and INSERT_RANGE never reach a FUSE daemon:
# tests/posix/fallocate_test.ts, README).
FALLOC = {"ALLOC": 0, "KEEP_SIZE": 0x01, "PUNCH_HOLE": 0x03, "ZERO_RANGE": 0x10, "ZERO_KEEP": 0x11}
libc = ctypes.CDLL(None, use_errno=True)
libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]
slots = {}  # slot number -> fd; numbered per run in open order so both sides agree
next_slot = [0]
root = ["."]


def P(p):
    return os.path.join(root[0], p)


def pattern(seed, n):
    return bytes((seed + i * 7) % 251 for i in range(n))


def norm_stat(s):
    t = stat.S_IFMT(s.st_mode)
    r = {"type": t, "perm": stat.S_IMODE(s.st_mode), "nlink": s.st_nlink, "uid": s.st_uid,
         "gid": s.st_gid, "ino": s.st_ino}
    if not stat.S_ISDIR(s.st_mode):  # directory sizes are file-system specific
        r["size"] = s.st_size
    return r


def digest(b):
    return [len(b), hashlib.sha1(b).hexdigest()[:16]]


def do(op, a):
    if op == "root":
        root[0] = a["path"]
        return None
    if op == "reset":
        for fd in slots.values():
            try:
                os.close(fd)
            except OSError:
                pass
        slots.clear()
        next_slot[0] = 0
        return None
    if op == "publish":
        # A stat-family call: the LD_PRELOAD shim publishes its writes' sizes to the daemon at
        # the writer's next stat, fsync or close (src/intercept/README.md, coherence rule).
        for fd in slots.values():
            try:
                os.fstat(fd)
            except OSError:
                pass
        return None
    if op == "open":
        flags = 0
        for f in a["flags"]:
            flags |= FLAGS[f]
        fd = os.open(P(a["path"]), flags, a.get("mode", 0o644))
        slot = next_slot[0]
        next_slot[0] += 1
        slots[slot] = fd
        return slot
    if op in ("write", "read", "close", "ftruncate", "fsync", "fstat", "writecur", "readcur",
              "lseek", "dup", "fallocate", "mmapwrite"):
        # The slot number picks among the descriptors open now, so most picks hit one.
        if not slots:
            return "noslot"
        key = sorted(slots)[a["slot"] % len(slots)]
        fd = slots[key]
        if op == "write":
            return os.pwrite(fd, pattern(a["seed"], a["len"]), a["offset"])
        if op == "read":
            return digest(os.pread(fd, a["len"], a["offset"]))
        # At the file offset: the offset a dup or O_APPEND shares and moves.
        if op == "writecur":
            return [os.write(fd, pattern(a["seed"], a["len"])), os.lseek(fd, 0, os.SEEK_CUR)]
        if op == "readcur":
            return [digest(os.read(fd, a["len"])), os.lseek(fd, 0, os.SEEK_CUR)]
        if op == "lseek":
            if stat.S_ISDIR(os.fstat(fd).st_mode):
                return "dir"  # directory offsets are file-system specific cookies (ext4: hashes)
            whence = {"SET": os.SEEK_SET, "CUR": os.SEEK_CUR, "END": os.SEEK_END}[a["whence"]]
            return os.lseek(fd, a["offset"], whence)
        if op == "dup":
            slot = next_slot[0]
            next_slot[0] += 1
            slots[slot] = os.dup(fd)
            return slot
        if op == "close":
            del slots[key]
            os.close(fd)
            return None
        if op == "ftruncate":
            return os.ftruncate(fd, a["size"])
        if op == "fallocate":
            if libc.fallocate(fd, FALLOC[a["mode"]], a["offset"], a["len"]) != 0:
                e = ctypes.get_errno()
                raise OSError(e, os.strerror(e))
            return None
        if op == "mmapwrite":
            return mmap_write(fd, a["offset"], a["len"], a["seed"])
        if op == "fsync":
            return os.fsync(fd)
        return norm_stat(os.fstat(fd))
    if op == "mkexec":
        # A file only some class may run: created (or truncated) with an execute-only mode.
        os.close(os.open(P(a["path"]), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, a["mode"]))
        return None
    if op == "exec":
        # execve of a file: permission (an execute-only file runs for its class), ETXTBSY, and
        # ENOEXEC for the random bytes the sequences write; a file that runs gives its exit code.
        done = subprocess.run([os.path.abspath(P(a["path"]))], capture_output=True, timeout=10)
        return "exit %d" % done.returncode
    if op == "truncate":
        return os.truncate(P(a["path"]), a["size"])
    if op == "mkdir":
        return os.mkdir(P(a["path"]), a["mode"])
    if op == "rmdir":
        return os.rmdir(P(a["path"]))
    if op == "unlink":
        return os.unlink(P(a["path"]))
    if op == "rename":
        return os.rename(P(a["from"]), P(a["to"]))
    if op == "link":
        return os.link(P(a["from"]), P(a["to"]))
    if op == "symlink":
        return os.symlink(a["target"], P(a["path"]))
    if op == "readlink":
        return os.readlink(P(a["path"]))
    if op == "chmod":
        return os.chmod(P(a["path"]), a["mode"])
    if op == "stat":
        return norm_stat(os.stat(P(a["path"])))
    if op == "lstat":
        return norm_stat(os.lstat(P(a["path"])))
    if op == "readdir":
        return sorted(os.listdir(P(a["path"])))
    if op == "chown":
        return os.chown(P(a["path"]), a["uid"], a["gid"], follow_symlinks=False)
    if op == "access":
        return os.access(P(a["path"]), {"F": os.F_OK, "R": os.R_OK, "W": os.W_OK, "X": os.X_OK}[a["mode"]])
    if op == "setxattr":
        flags = {"": 0, "CREATE": os.XATTR_CREATE, "REPLACE": os.XATTR_REPLACE}[a["flags"]]
        return os.setxattr(P(a["path"]), a["name"], a["value"].encode(), flags)
    if op == "getxattr":
        return os.getxattr(P(a["path"]), a["name"]).decode()
    if op == "listxattr":
        return sorted(os.listxattr(P(a["path"])))
    if op == "removexattr":
        return os.removexattr(P(a["path"]), a["name"])
    if op == "readfile":
        with open(P(a["path"]), "rb") as f:
            return digest(f.read())
    if op == "tree":
        return tree()
    raise ValueError("unknown op %r" % op)


def mmap_write(fd, offset, length, seed):
    """Stores through a shared mapping of the bytes of [offset, offset + length) inside the file
    (a store past the end would be SIGBUS): the count stored, or an errno (EACCES unless O_RDWR)."""
    s = os.fstat(fd)
    if stat.S_ISDIR(s.st_mode):
        return "dir"  # directory sizes are file-system specific
    start = min(offset, s.st_size)
    end = min(offset + length, s.st_size)
    if end <= start:
        return 0
    base = start - start % mmap.ALLOCATIONGRANULARITY
    m = mmap.mmap(fd, end - base, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=base)
    try:
        m[start - base:end - base] = pattern(seed, end - start)
    finally:
        m.close()
    return end - start


def tree():
    """Every entry under the root (not following symlinks): path, stat, content or link target.
    Inode numbers become link groups (paths sharing an inode), since ext4 reuses freed numbers."""
    entries, by_ino = [], {}
    for dirpath, dirnames, filenames in os.walk(root[0]):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, root[0])
            s = os.lstat(full)
            ns = norm_stat(s)
            del ns["ino"]
            if stat.S_ISREG(s.st_mode):
                with open(full, "rb") as f:
                    ns["data"] = digest(f.read())
            elif stat.S_ISLNK(s.st_mode):
                ns["target"] = os.readlink(full)
            by_ino.setdefault(s.st_ino, []).append(rel)
            entries.append([rel, ns])
    groups = sorted(g for g in by_ino.values() if len(g) > 1)
    return {"entries": entries, "hardlinks": groups}


for line in sys.stdin:
    req = json.loads(line)
    try:
        reply = {"ok": do(req["op"], req)}
    except OSError as e:
        name = errno.errorcode.get(e.errno, str(e.errno))
        reply = {"err": {"ENOTSUP": "EOPNOTSUPP", "EWOULDBLOCK": "EAGAIN"}.get(name, name)}
    sys.stdout.write(json.dumps(reply) + "\n")
    sys.stdout.flush()
