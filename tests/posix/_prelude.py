# Helpers prepended to every POSIX-suite snippet: run syscalls, report results as JSON, switch uids.
import ctypes, errno, fcntl, json, mmap, os, signal, socket, stat, struct, sys, time

os.umask(0o022)
libc = ctypes.CDLL(None, use_errno=True)


def ename(e):
    """Errno name of an OSError, the value the TypeScript side asserts on."""
    name = errno.errorcode.get(e.errno, str(e.errno))
    # One spelling per value, the one the kernel headers use for the FUSE refusal paths.
    return {"ENOTSUP": "EOPNOTSUPP", "EWOULDBLOCK": "EAGAIN"}.get(name, name)


def E(f, *a, **k):
    """'OK' when f(*a) succeeds, else its errno name."""
    try:
        f(*a, **k)
        return "OK"
    except OSError as e:
        return ename(e)


def V(f, *a, **k):
    """f(*a)'s value when it succeeds, else its errno name."""
    try:
        return f(*a, **k)
    except OSError as e:
        return ename(e)


def st(p, follow=True):
    s = os.stat(p, follow_symlinks=follow)
    return dict(mode=s.st_mode, perm=stat.S_IMODE(s.st_mode), type=stat.S_IFMT(s.st_mode),
                ino=s.st_ino, nlink=s.st_nlink, uid=s.st_uid, gid=s.st_gid, size=s.st_size,
                blocks=s.st_blocks, atime=s.st_atime_ns, mtime=s.st_mtime_ns,
                ctime=s.st_ctime_ns, rdev=s.st_rdev)


def write_file(p, data=b"", mode=0o644):
    if isinstance(data, str):
        data = data.encode()
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def read_file(p):
    with open(p, "rb") as f:
        return f.read()


def fork_child(fn, uid=None, gid=None, groups=()):
    """Runs fn() in a forked child (optionally as uid/gid); returns a wait() giving its JSON result."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            if uid is not None:
                os.setgroups(list(groups))
                os.setgid(gid)
                os.setuid(uid)
            data = json.dumps({"ok": fn()})
        except BaseException as e:  # report, the parent raises
            data = json.dumps({"exc": repr(e)})
        os.write(w, data.encode())
        os._exit(0)
    os.close(w)

    def wait():
        chunks = []
        while True:
            b = os.read(r, 65536)
            if not b:
                break
            chunks.append(b)
        os.close(r)
        os.waitpid(pid, 0)
        d = json.loads(b"".join(chunks))
        if "exc" in d:
            raise RuntimeError("child (uid %s) failed: %s" % (uid, d["exc"]))
        return d["ok"]

    wait.pid = pid
    return wait


def as_user(uid, gid, fn, groups=()):
    """Runs fn() in a forked child with the given real+effective ids; returns its JSON result."""
    return fork_child(fn, uid, gid, groups)()


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


UTIME_NOW = (1 << 30) - 1
UTIME_OMIT = (1 << 30) - 2
AT_FDCWD = -100
AT_SYMLINK_NOFOLLOW = 0x100


def _ts(v):
    if v == "NOW":
        return _Timespec(0, UTIME_NOW)
    if v == "OMIT":
        return _Timespec(0, UTIME_OMIT)
    return _Timespec(v // 1_000_000_000, v % 1_000_000_000)


def utimensat(path, atime, mtime, follow=True):
    """utimensat(2) with ns integers or the strings 'NOW' / 'OMIT'; raises OSError."""
    times = (_Timespec * 2)(_ts(atime), _ts(mtime))
    flags = 0 if follow else AT_SYMLINK_NOFOLLOW
    if libc.utimensat(AT_FDCWD, path.encode(), times, flags) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e), path)


RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2


def renameat2(a, b, flags):
    if libc.renameat2(AT_FDCWD, a.encode(), AT_FDCWD, b.encode(), ctypes.c_uint(flags)) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e), a)


FALLOC_FL_KEEP_SIZE = 1
FALLOC_FL_PUNCH_HOLE = 2


def fallocate(fd, mode, offset, length):
    libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]
    if libc.fallocate(fd, mode, offset, length) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


def names(d):
    return sorted(os.listdir(d))


def out(x):
    sys.stdout.write("\n@@RESULT@@" + json.dumps(x) + "\n")
    sys.stdout.flush()

