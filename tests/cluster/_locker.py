# A process that holds files and locks for tests/cluster/locks_test.ts: one JSON command per
# stdin line, one JSON answer per stdout line (a number, "OK", an errno name, or a lock).
#   {"op": "open", "path": P}                      -> fd
#   {"op": "lk", "fd": F, "cmd": "ofd_setlk" | "ofd_setlkw" | "ofd_getlk" | "setlk" | "setlkw"
#     | "getlk", "type": "r" | "w" | "u", "start": S, "len": L}
#                                                  -> "OK" / errno name / [type, start, len] / "unlocked"
#   {"op": "flock", "fd": F, "how": "ex" | "sh" | "un", "wait": bool} -> "OK" / errno name
#   {"op": "close", "fd": F}                       -> "OK"
import errno, fcntl, json, os, struct, sys

F_OFD_GETLK, F_OFD_SETLK, F_OFD_SETLKW = 36, 37, 38
CMDS = {"ofd_getlk": F_OFD_GETLK, "ofd_setlk": F_OFD_SETLK, "ofd_setlkw": F_OFD_SETLKW,
        "getlk": fcntl.F_GETLK, "setlk": fcntl.F_SETLK, "setlkw": fcntl.F_SETLKW}
TYPES = {"r": fcntl.F_RDLCK, "w": fcntl.F_WRLCK, "u": fcntl.F_UNLCK}
FLOCK = "hhxxxxqqixxxx"


def ename(e):
    return {"EWOULDBLOCK": "EAGAIN"}.get(errno.errorcode.get(e.errno, str(e.errno)), errno.errorcode.get(e.errno))


def handle(c):
    if c["op"] == "open":
        return os.open(c["path"], os.O_RDWR)
    if c["op"] == "close":
        os.close(c["fd"])
        return "OK"
    if c["op"] == "flock":
        how = {"ex": fcntl.LOCK_EX, "sh": fcntl.LOCK_SH, "un": fcntl.LOCK_UN}[c["how"]]
        fcntl.flock(c["fd"], how | (0 if c.get("wait") else fcntl.LOCK_NB))
        return "OK"
    if c["op"] == "lk":
        raw = struct.pack(FLOCK, TYPES[c["type"]], os.SEEK_SET, c.get("start", 0), c.get("len", 0), 0)
        t, _, s, l, _ = struct.unpack(FLOCK, fcntl.fcntl(c["fd"], CMDS[c["cmd"]], raw))
        if c["cmd"].endswith("getlk"):
            return "unlocked" if t == fcntl.F_UNLCK else [{0: "r", 1: "w"}[t], s, l]
        return "OK"
    raise ValueError("unknown op %r" % c["op"])


for line in sys.stdin:
    try:
        answer = handle(json.loads(line))
    except OSError as e:
        answer = ename(e)
    sys.stdout.write(json.dumps(answer) + "\n")
    sys.stdout.flush()
