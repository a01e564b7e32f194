# Prints a JSON description of a directory tree (not following symlinks) for tests that compare
# trees: type, permissions, owner, size, mtime, content digest, link target, user xattrs, and the
# groups of paths that are hard links to one inode. Usage: python3 _tree.py DIR [--no-mtime]
import hashlib, json, os, stat, sys

root = sys.argv[1]
with_mtime = "--no-mtime" not in sys.argv
entries, by_ino = [], {}
for dirpath, dirnames, filenames in os.walk(root):
    dirnames.sort()
    for name in sorted(dirnames + filenames):
        full = os.path.join(dirpath, name)
        rel = os.path.relpath(full, root)
        s = os.lstat(full)
        e = {"type": stat.S_IFMT(s.st_mode), "perm": oct(stat.S_IMODE(s.st_mode)),
             "uid": s.st_uid, "gid": s.st_gid}
        if with_mtime:
            e["mtime"] = s.st_mtime_ns
        if not stat.S_ISDIR(s.st_mode):
            e["size"] = s.st_size
            e["nlink"] = s.st_nlink
        if stat.S_ISREG(s.st_mode):
            h = hashlib.sha1()
            with open(full, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
            e["sha1"] = h.hexdigest()
        elif stat.S_ISLNK(s.st_mode):
            e["target"] = os.readlink(full)
        if not stat.S_ISLNK(s.st_mode):
            e["xattrs"] = {k: os.getxattr(full, k).decode("latin-1")
                           for k in sorted(os.listxattr(full)) if k.startswith("user.")}
        if not stat.S_ISDIR(s.st_mode):
            by_ino.setdefault(s.st_ino, []).append(rel)
        entries.append([rel, e])
print(json.dumps({"entries": entries,
                  "hardlinks": sorted(g for g in by_ino.values() if len(g) > 1)}))
