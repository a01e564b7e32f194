/**
 * The kernel caches of a cluster node follow changes made on other nodes: FUSE notifications
 * drop cached attributes of files changed elsewhere and (by an epoch bump) every cached name
 * when names changed elsewhere, and a node keeps a file's pages across opens while nothing
 * changed it (close-to-open otherwise). Node B runs with a 60 s kernel cache time, so only a
 * notification can make it see a change inside the test's deadlines. A node killed -9 while
 * names churn under its lookups exits and leaves the others serving. Needs root, /dev/fuse,
 * etcd-server and util-linux's fincore.
 * @module
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { freePort, isMounted, LocalCluster, waitFor } from "../../src/cluster/local_cluster.ts";

const ROOT = new URL("../../", import.meta.url).pathname;

function canRun(): boolean {
  try {
    Deno.statSync("/dev/fuse");
    Deno.statSync("/usr/bin/etcd");
    Deno.statSync("/usr/bin/fincore");
    return Deno.uid() === 0;
  } catch {
    return false;
  }
}

function filled(n: number, byte: number): Uint8Array {
  return new Uint8Array(n).fill(byte);
}

/** Pages of `path` in the page cache, by util-linux's fincore (which opens the file itself). */
async function residentPages(path: string): Promise<number> {
  const out = await new Deno.Command("fincore", {
    args: ["--bytes", "--noheadings", "--output", "PAGES", path],
  }).output();
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  return Number(new TextDecoder().decode(out.stdout).trim());
}

Deno.test({
  name: "cluster: kernel attributes follow other nodes; unchanged files keep their pages",
  ignore: !canRun(),
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const cluster = await LocalCluster.start("cluster-kcache-", 1);
    const [a] = cluster.nodes;
    const { bMount, b } = await startSlowNode(cluster);
    try {
      // 1. Attributes B caches go when A changes the file; B's next open sees the content
      // (close-to-open), even while B still holds the file open from before.
      const size = 1 << 20;
      await Deno.writeFile(join(a.mountpoint, "f"), filled(size, 1));
      const held = await Deno.open(join(bMount, "f"));
      try {
        assert.equal((await held.stat()).size, size);
        assert.ok((await Deno.readFile(join(bMount, "f"))).every((x) => x === 1));
        await Deno.writeFile(join(a.mountpoint, "f"), filled(2 * size, 2));
        await waitFor(
          async () => (await Deno.stat(join(bMount, "f"))).size === 2 * size,
          15_000,
          "B's stat showing the size A wrote (attribute notification)",
        );
        const again = await Deno.readFile(join(bMount, "f"));
        assert.equal(again.length, 2 * size);
        assert.ok(again.every((x) => x === 2));
      } finally {
        held.close();
      }

      // 2. A file nobody changed keeps its pages across B's opens (fincore opens it again).
      const g = await keptPages(a.mountpoint, bMount);
      // A change on A drops them, and B's next open sees the new content.
      await Deno.writeFile(join(a.mountpoint, g), filled(4 << 20, 4));
      await waitFor(
        async () => (await Deno.readFile(join(bMount, g))).every((x) => x === 4),
        15_000,
        "B reading A's new content of g",
      );
    } finally {
      await stopSlowNode(b, bMount);
      await cluster.stop();
    }
  },
});

/** The kernel's count of `echo 1|3 > /proc/sys/vm/drop_caches` since boot (bumped when one
 * finishes). Other test files (tests/fuse_test.ts, posix/handles_test.ts...) drop the machine's
 * caches, and so may suites run beside this one. */
function cacheDrops(): number {
  return Number(/^drop_pagecache (\d+)$/m.exec(Deno.readTextFileSync("/proc/vmstat"))?.[1] ?? 0);
}

/**
 * A writes a 4 MiB file, B reads it whole, and fincore's open on B finds every page still cached
 * (the open's KEEP_CACHE: ClusterData.opened saw the content unchanged). Returns the file's name.
 *
 * B first caches the name's absence (a negative entry, 60 s) and then waits to see the file, which
 * only the watch's INC_EPOCH for A's create can make it do. Without that, the epoch bump could
 * arrive after B's LOOKUP of the name had started: the kernel stamps a dentry with the epoch read
 * when its lookup began, so the next path walk (fincore's) finds it stale and drops it, and FUSE
 * evicts an inode whose last dentry goes (drop_inode is generic_delete_inode; FORGET), pages and
 * all: fincore's LOOKUP then made a new inode, with none cached (a loop of this step at load
 * 16-30: 5 of 80 rounds, each with a FORGET of the file's node id in fincore's walk; 0 of 80 with
 * the wait). A round during which the machine's page cache was dropped (`cacheDrops`) proves
 * nothing and is tried again with another file; any other shortfall fails.
 */
async function keptPages(aMount: string, bMount: string): Promise<string> {
  const pages = (4 << 20) / 4096;
  for (let round = 0;; round++) {
    const name = `g${round}`;
    assert.ok(!await exists(join(bMount, name)));
    const drops = cacheDrops();
    await Deno.writeFile(join(aMount, name), filled(4 << 20, 3));
    await waitFor(() => exists(join(bMount, name)), 15_000, `B seeing ${name} (A's create)`);
    assert.equal((await Deno.readFile(join(bMount, name))).length, 4 << 20);
    const resident = await residentPages(join(bMount, name));
    if (resident === pages) return name;
    // drop_pagecache counts a drop when it finishes: one still running when fincore counted may
    // show a moment later.
    const dropped = cacheDrops() !== drops || await waitFor(
      () => Promise.resolve(cacheDrops() !== drops),
      2_000,
      "",
    ).then(() => true, () => false);
    assert.ok(dropped && round < 4, `${resident} of ${pages} pages of ${name} kept on B`);
  }
}

/** Node "kb" beside `cluster`'s nodes, with a 60 s kernel cache time. */
async function startSlowNode(
  cluster: LocalCluster,
  extraArgs: string[] = [],
): Promise<{ bMount: string; b: Deno.ChildProcess }> {
  const bMount = join(cluster.dir, "mnt-kb");
  const bData = join(cluster.dir, "data-kb");
  await Deno.mkdir(bMount);
  await Deno.mkdir(bData);
  const b = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      join(ROOT, "mod.ts"),
      "mount",
      bMount,
      "--data",
      bData,
      "--meta",
      cluster.meta,
      "--backend",
      cluster.backend,
      "--node-id",
      "kb",
      "--peer-listen",
      `127.0.0.1:${freePort()}`,
      "--cache-seconds",
      "60",
      ...extraArgs,
    ],
    stdout: "null",
    stderr: "inherit",
  }).spawn();
  await waitFor(() => Promise.resolve(isMounted(bMount)), 60_000, "mount kb");
  return { bMount, b };
}

async function stopSlowNode(b: Deno.ChildProcess, bMount: string): Promise<void> {
  try {
    b.kill("SIGTERM");
  } catch { /* already gone */ }
  const timer = setTimeout(() => {
    try {
      b.kill("SIGKILL");
    } catch { /* already gone */ }
  }, 10_000);
  await b.status;
  clearTimeout(timer);
  if (isMounted(bMount)) {
    await new Deno.Command("umount", { args: ["-l", bMount], stderr: "null" }).output();
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return false;
    throw error;
  }
}

Deno.test({
  name: "cluster: names created, unlinked and renamed on another node leave the kernel's entries",
  ignore: !canRun(),
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const cluster = await LocalCluster.start("cluster-kentry-", 1);
    const [a] = cluster.nodes;
    const { bMount, b } = await startSlowNode(cluster);
    try {
      const onA = (name: string) => join(a.mountpoint, name);
      const onB = (name: string) => join(bMount, name);
      await Deno.writeTextFile(onA("gone"), "gone");
      await Deno.writeTextFile(onA("old"), "renamed");
      await Deno.writeTextFile(onA("t"), "first");
      await Deno.mkdir(onA("d"));
      // B caches each name: positive entries for these, negative ones for names not there yet.
      assert.ok(await exists(onB("gone")));
      assert.ok(await exists(onB("old")));
      assert.equal(await Deno.readTextFile(onB("t")), "first");
      const tIno = (await Deno.stat(onB("t"))).ino;
      assert.ok(!await exists(onB("new")));
      assert.ok(!await exists(onB("fresh")));
      assert.ok(!await exists(onB("d/inner")));

      // Each change is seen on B long before its 60 s entry time would run out.
      await Deno.writeTextFile(onA("fresh"), "fresh");
      await waitFor(() => exists(onB("fresh")), 15_000, "B seeing a name A created");
      assert.equal(await Deno.readTextFile(onB("fresh")), "fresh");

      await Deno.remove(onA("gone"));
      await waitFor(async () => !await exists(onB("gone")), 15_000, "B losing a name A unlinked");

      await Deno.rename(onA("old"), onA("new"));
      await waitFor(
        async () => !await exists(onB("old")) && await exists(onB("new")),
        15_000,
        "B seeing A's rename",
      );
      assert.equal(await Deno.readTextFile(onB("new")), "renamed");

      // Replaced by a rename over it: B's name now leads to the other inode.
      await Deno.writeTextFile(onA("t.tmp"), "second");
      await Deno.rename(onA("t.tmp"), onA("t"));
      await waitFor(
        async () => (await Deno.stat(onB("t"))).ino !== tIno,
        15_000,
        "B's name t leading to the inode A renamed over it",
      );
      assert.equal(await Deno.readTextFile(onB("t")), "second");

      // Inside a subdirectory B looked into.
      await Deno.writeTextFile(onA("d/inner"), "inner");
      await waitFor(() => exists(onB("d/inner")), 15_000, "B seeing d/inner");
      assert.deepEqual(
        [...Deno.readDirSync(onB("d"))].map((e) => e.name),
        ["inner"],
      );
    } finally {
      await stopSlowNode(b, bMount);
      await cluster.stop();
    }
  },
});

Deno.test({
  name: "cluster: names changed elsewhere in a directory a node never looked in leave its others",
  ignore: !canRun(),
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const cluster = await LocalCluster.start("cluster-kquiet-", 1);
    const [a] = cluster.nodes;
    const http = `127.0.0.1:${freePort()}`;
    const { bMount, b } = await startSlowNode(cluster, ["--http", http]);
    // B's LOOKUPs so far (its kernel asks one for each name it does not hold or holds stale).
    const lookups = async () => {
      const text = await (await fetch(`http://${http}/metrics`)).text();
      return Number(/^skyfs_fuse_requests_total\{op="lookup"[^}]*\} (\d+)/m.exec(text)?.[1] ?? 0);
    };
    try {
      const onA = (name: string) => join(a.mountpoint, name);
      const onB = (name: string) => join(bMount, name);
      await Deno.mkdir(onA("x"));
      await Deno.writeTextFile(onA("x/f"), "f");
      await Deno.mkdir(onA("y"));
      await waitFor(() => exists(onB("y")), 15_000, "B seeing y");
      await Deno.stat(onB("x/f")); // B's kernel holds x and x/f
      const before = await lookups();
      // A changes names in y only, then the mode of x/f: watch events come in commit order, so
      // once B's stat shows the mode, B has seen every create in y.
      for (let i = 0; i < 10; i++) await Deno.writeTextFile(onA(`y/g${i}`), `${i}`);
      await Deno.chmod(onA("x/f"), 0o600);
      await waitFor(
        async () => ((await Deno.stat(onB("x/f"))).mode! & 0o777) === 0o600,
        15_000,
        "B's stat showing the mode A set (attribute notification)",
      );
      // No epoch bump for names in a directory B's kernel holds none of: x and x/f were not
      // looked up again (each bump made the next walk ask for both).
      assert.equal(await lookups() - before, 0);
      // B looks into y: from now on A's changes there reach B's kernel.
      assert.ok(!await exists(onB("y/h")));
      await Deno.writeTextFile(onA("y/h"), "h");
      await waitFor(() => exists(onB("y/h")), 15_000, "B seeing y/h after its negative entry");
    } finally {
      await stopSlowNode(b, bMount);
      await cluster.stop();
    }
  },
});

Deno.test({
  name: "cluster: a node killed -9 while names churn under its lookups exits; the others serve",
  ignore: !canRun(),
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const cluster = await LocalCluster.start("cluster-kchurn-", 2);
    const [a, b] = cluster.nodes;
    const dirA = join(a.mountpoint, "churn");
    const dirB = join(b.mountpoint, "churn");
    await Deno.mkdir(dirA);
    await waitFor(() => exists(dirB), 15_000, "B seeing churn/");
    let stop = false;
    // A creates, renames and unlinks names; every batch of them bumps B's entry epoch.
    const churn = (async () => {
      let i = 0;
      while (!stop) {
        const name = join(dirA, `f${i % 50}`);
        await Deno.writeTextFile(name, `${i}`);
        await Deno.rename(name, `${name}.r`);
        await Deno.remove(`${name}.r`);
        i++;
      }
      return i;
    })();
    // B looks the same names up, from several callers at once, so requests holding the
    // directory's lock are in flight when it dies.
    const lookups = Array.from({ length: 8 }, async (_, k) => {
      let errors = 0;
      for (let i = 0; !stop; i++) {
        try {
          await Deno.lstat(join(dirB, `f${(i * 7 + k) % 50}`));
        } catch {
          errors++;
        }
        if (i % 16 === 0) {
          try {
            for await (const _ of Deno.readDir(dirB)) { /* list */ }
          } catch {
            errors++;
          }
        }
      }
      return errors;
    });
    try {
      await new Promise((r) => setTimeout(r, 2_000));
      const child = b.child!;
      child.kill("SIGKILL");
      // The bug this guards against left the daemon a zombie holding /dev/fuse forever.
      const exited = await Promise.race([
        child.status.then(() => true),
        new Promise<boolean>((r) => setTimeout(() => r(false), 30_000)),
      ]);
      assert.ok(exited, "node B did not exit within 30 s of kill -9 (stuck in a notification?)");
      await cluster.kill(b); // clears its dead mount
      stop = true;
      await Promise.all(lookups); // every lookup on the dead mount returned (an error or not)
      const rounds = await churn;
      assert.ok(rounds > 0);
      // A still serves.
      await Deno.writeTextFile(join(dirA, "after"), "after");
      assert.equal(await Deno.readTextFile(join(dirA, "after")), "after");
    } finally {
      stop = true;
      await cluster.stop();
    }
  },
});
