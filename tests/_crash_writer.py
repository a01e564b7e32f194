# Writer and checker for tests/crash_test.ts.
#
#   write DIR LOG ROUND [--limit N] [--no-sync]
#                                       writes files under DIR until an error (the daemon was killed)
#                                       or N files; after each fsync'd step appends a record to LOG,
#                                       which lives outside the mount, and fsyncs LOG. --no-sync
#                                       calls no fsync at all (the clean-unmount check).
#   verify DIR LOG                      checks every recorded step against DIR; prints JSON.
#
# Records (tab-separated):  file PATH SIZE SHA1   the file at PATH has exactly this content
#                           unlinking PATH        PATH is being removed: it may be gone
#                           gone PATH             PATH was removed and the removal fsync'd
#                           cur ROUND VERSION     DIR/cur-ROUND holds VERSION or a later one
#                           journal ROUND COUNT   DIR/journal-ROUND starts with COUNT records
import errno, hashlib, json, os, random, sys


def content(tag, i):
    rnd = random.Random("%s-%d" % (tag, i))
    size = rnd.choice([0, 1, 100, 4096, 4097, rnd.randrange(1, 300_000)])
    return ("v%d\n" % i).encode() + rnd.randbytes(size)


def journal_record(rnd_round, i):
    return ("round %s record %06d %s\n" % (rnd_round, i, "x" * (i % 97))).encode()


def fsync_dir(path):
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write(root, log_path, rnd_round, limit, sync):
    log = open(log_path, "a")

    def record(*fields):
        log.write("\t".join(str(f) for f in fields) + "\n")
        log.flush()
        if sync:
            os.fsync(log.fileno())

    subdir = os.path.join(root, "r%s" % rnd_round)
    os.mkdir(subdir)
    if sync:
        fsync_dir(root)
    journal = os.open(os.path.join(root, "journal-%s" % rnd_round),
                      os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    if sync:
        fsync_dir(root)
    print("started", flush=True)
    for i in range(limit):
        if i % 40 == 39:  # a new directory now and then, fsync'd in its parent
            subdir = os.path.join(root, "r%s" % rnd_round, "d%d" % i)
            os.mkdir(subdir)
            if sync:
                fsync_dir(os.path.dirname(subdir))
        path = os.path.join(subdir, "f%d" % i)
        data = content(rnd_round, i)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.write(fd, data)
        if sync:
            os.fsync(fd)
        os.close(fd)
        if sync:
            fsync_dir(subdir)
        record("file", os.path.relpath(path, root), len(data), hashlib.sha1(data).hexdigest())
        if i % 3 == 0:  # atomic replace: write a temp file, fsync, rename over, fsync the dir
            tmp = os.path.join(root, "cur-%s.tmp" % rnd_round)
            data = content("cur" + str(rnd_round), i)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.write(fd, data)
            if sync:
                os.fsync(fd)
            os.close(fd)
            os.rename(tmp, os.path.join(root, "cur-%s" % rnd_round))
            if sync:
                fsync_dir(root)
            record("cur", rnd_round, i)
        os.write(journal, journal_record(rnd_round, i))
        if sync:
            os.fsync(journal)
        record("journal", rnd_round, i + 1)
        if i % 7 == 0:  # a hard link elsewhere, so link counts are checked after recovery
            os.link(path, os.path.join(root, "r%s" % rnd_round, "l%d" % i))
            if sync:
                fsync_dir(os.path.join(root, "r%s" % rnd_round))
            linked = content(rnd_round, i)
            record("file", os.path.relpath(os.path.join(root, "r%s" % rnd_round, "l%d" % i), root),
                   len(linked), hashlib.sha1(linked).hexdigest())
        if i % 10 == 9:  # delete an older file so the namespace also shrinks
            victim = os.path.join(os.path.dirname(path), "f%d" % (i - 5))
            if os.path.exists(victim):
                # Recorded first: from here until "gone" the file may or may not survive a crash.
                record("unlinking", os.path.relpath(victim, root))
                os.unlink(victim)
                if sync:
                    fsync_dir(os.path.dirname(victim))
                record("gone", os.path.relpath(victim, root))
    os.close(journal)
    print("finished", flush=True)


def verify(root, log_path):
    files, curs, journals, optional, gone = {}, {}, {}, set(), set()
    with open(log_path) as log:
        for line in log:
            if not line.endswith("\n"):
                continue  # a torn last line: the writer died before the record was complete
            f = line.rstrip("\n").split("\t")
            if f[0] == "file":
                files[f[1]] = (int(f[2]), f[3])
            elif f[0] == "gone":
                files.pop(f[1], None)
                optional.discard(f[1])
                gone.add(f[1])
            elif f[0] == "unlinking":
                optional.add(f[1])
            elif f[0] == "cur":
                curs[f[1]] = int(f[2])
            elif f[0] == "journal":
                journals[f[1]] = int(f[2])
    problems = ["%s: removed and fsync'd, but back after recovery" % rel
                for rel in sorted(gone) if os.path.lexists(os.path.join(root, rel))]
    for rel, (size, sha) in files.items():
        try:
            with open(os.path.join(root, rel), "rb") as fh:
                data = fh.read()
        except OSError as e:
            if not (rel in optional and e.errno == errno.ENOENT):
                problems.append("%s: %s" % (rel, e))
            continue
        if len(data) != size or hashlib.sha1(data).hexdigest() != sha:
            problems.append("%s: %d bytes, expected %d with sha1 %s" % (rel, len(data), size, sha))
    for rnd_round, version in curs.items():
        path = os.path.join(root, "cur-%s" % rnd_round)
        try:
            with open(path, "rb") as fh:
                data = fh.read()
            got = int(data.split(b"\n", 1)[0][1:])
            if got < version or data != content("cur" + rnd_round, got):
                problems.append("cur-%s: holds version %d, expected %d or later, intact" %
                                (rnd_round, got, version))
        except (OSError, ValueError) as e:
            problems.append("cur-%s: %s" % (rnd_round, e))
    for rnd_round, count in journals.items():
        expected = b"".join(journal_record(rnd_round, i) for i in range(count))
        try:
            with open(os.path.join(root, "journal-%s" % rnd_round), "rb") as fh:
                data = fh.read()
        except OSError as e:
            problems.append("journal-%s: %s" % (rnd_round, e))
            continue
        if not data.startswith(expected):
            problems.append("journal-%s: the first %d records are not intact (%d bytes)" %
                            (rnd_round, count, len(data)))
    # Everything left on the mount must be readable after recovery, logged or not, and the link
    # counts must match the names: 2 + subdirectories for a directory, names found for a file.
    walked, names_per_inode = 0, {}
    for dirpath, dirnames, filenames in os.walk(root, onerror=lambda e: problems.append(str(e))):
        s = os.lstat(dirpath)
        if s.st_nlink != 2 + len(dirnames):
            problems.append("%s: nlink %d with %d subdirectories" % (dirpath, s.st_nlink, len(dirnames)))
        for n in filenames:
            s = os.lstat(os.path.join(dirpath, n))
            entry = names_per_inode.setdefault(s.st_ino, [s.st_nlink, 0, n])
            entry[1] += 1
        for n in filenames:
            try:
                with open(os.path.join(dirpath, n), "rb") as fh:
                    while fh.read(1 << 20):
                        pass
                walked += 1
            except OSError as e:
                problems.append("%s: %s" % (os.path.join(dirpath, n), e))
    for ino, (nlink, found, name) in names_per_inode.items():
        if nlink != found:
            problems.append("inode %d (%s): nlink %d but %d names" % (ino, name, nlink, found))
    print(json.dumps({"files": len(files), "curs": len(curs), "journals": len(journals),
                      "walked": walked, "problems": problems[:50]}))


if __name__ == "__main__":
    if sys.argv[1] == "write":
        limit = 1_000_000
        if "--limit" in sys.argv:
            limit = int(sys.argv[sys.argv.index("--limit") + 1])
        sync = "--no-sync" not in sys.argv
        try:
            write(sys.argv[2], sys.argv[3], sys.argv[4], limit, sync)
        except OSError as e:  # expected when the daemon dies under us
            print("stopped: %s" % e, flush=True)
    else:
        verify(sys.argv[2], sys.argv[3])
