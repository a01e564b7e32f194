/**
 * Locks across cluster nodes (issue 18 point 8): two mounts on one cluster (three CURP replicas,
 * or one etcd member with SKYFS_TEST_META=etcd): the locks live in the store. An OFD, POSIX or
 * flock lock taken through node A blocks the same lock through node B; it is released for B
 * when A closes (OFD: the last close of the open file description; POSIX: any close by the
 * owner; flock: the last close), a blocked F_OFD_SETLKW on B wakes then, and a lock held by a
 * mount that is killed (kill -9) goes with its metadata lease. Each process holding locks is a
 * python3 `_locker.py` driven over stdin. Needs root and /dev/fuse.
 * @module
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { LocalCluster } from "../../src/cluster/local_cluster.ts";
import { PYTHON } from "../_harness.ts";
import { canRunCluster, clusterStore, sleep, until } from "./_cluster_util.ts";

const LOCKER = join(import.meta.dirname!, "_locker.py");
const STORE = clusterStore();

/** One python3 process holding files and locks, one command at a time. */
class Locker {
  readonly #child: Deno.ChildProcess;
  readonly #writer: WritableStreamDefaultWriter<Uint8Array>;
  readonly #lines: AsyncIterator<string>;

  constructor() {
    this.#child = new Deno.Command(PYTHON, {
      args: [LOCKER],
      cwd: "/",
      stdin: "piped",
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    this.#writer = this.#child.stdin.getWriter();
    this.#lines = this.#child.stdout.pipeThrough(new TextDecoderStream()).pipeThrough(
      new LineSplitter(),
    )[Symbol.asyncIterator]();
  }

  // deno-lint-ignore no-explicit-any
  async ask(command: Record<string, unknown>): Promise<any> {
    await this.#writer.write(new TextEncoder().encode(JSON.stringify(command) + "\n"));
    const line = await this.#lines.next();
    if (line.done) throw new Error(`locker exited before answering ${JSON.stringify(command)}`);
    return JSON.parse(line.value);
  }

  open(path: string): Promise<number> {
    return this.ask({ op: "open", path });
  }

  lk(fd: number, cmd: string, type: string, start = 0, len = 0): Promise<unknown> {
    return this.ask({ op: "lk", fd, cmd, type, start, len });
  }

  flock(fd: number, how: string, wait = false): Promise<unknown> {
    return this.ask({ op: "flock", fd, how, wait });
  }

  close(fd: number): Promise<unknown> {
    return this.ask({ op: "close", fd });
  }

  async kill(): Promise<void> {
    try {
      this.#child.kill("SIGKILL");
    } catch { /* already gone */ }
    await this.#child.status;
    await this.#writer.close().catch(() => {});
  }
}

class LineSplitter extends TransformStream<string, string> {
  constructor() {
    let rest = "";
    super({
      transform(chunk, controller) {
        const parts = (rest + chunk).split("\n");
        rest = parts.pop()!;
        for (const part of parts) controller.enqueue(part);
      },
    });
  }
}

/** "pending" if `promise` has not settled after `ms` (it keeps running). */
function stillPending<T>(promise: Promise<T>, ms: number): Promise<T | "pending"> {
  return Promise.race([promise, sleep(ms).then(() => "pending" as const)]);
}

Deno.test({
  name: `cluster locks on ${STORE}: a lock through A blocks B until A closes or dies (OFD, ` +
    "POSIX, flock)",
  ignore: !canRunCluster(STORE === "etcd"),
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async (t) => {
    const cluster = await LocalCluster.start("cluster-locks-", { nodes: 2, meta: STORE });
    const lockers: Locker[] = [];
    const locker = () => {
      const made = new Locker();
      lockers.push(made);
      return made;
    };
    try {
      const [a, b] = cluster.nodes;
      const onA = join(a.mountpoint, "f");
      const onB = join(b.mountpoint, "f");
      await Deno.writeFile(onA, new Uint8Array(100));
      await until(async () => (await Deno.stat(onB).catch(() => null))?.size === 100, "f on B");
      const pa = locker();
      const pb = locker();
      const fb = await pb.open(onB);

      await t.step("OFD: A's lock blocks B; A's last close releases it and wakes B", async () => {
        const fa = await pa.open(onA);
        assert.equal(await pa.lk(fa, "ofd_setlk", "w", 0, 10), "OK");
        assert.equal(await pb.lk(fb, "ofd_setlk", "w", 5, 10), "EAGAIN");
        assert.equal(await pb.lk(fb, "setlk", "r", 0, 1), "EAGAIN", "POSIX against OFD");
        assert.equal(await pb.lk(fb, "ofd_setlk", "w", 10, 10), "OK", "a range beside it");
        assert.equal(await pb.lk(fb, "ofd_setlk", "u", 10, 10), "OK");
        assert.deepEqual(await pb.lk(fb, "ofd_getlk", "w", 0, 0), ["w", 0, 10]);
        assert.equal(await pa.lk(fa, "ofd_setlk", "r", 0, 10), "OK", "A converts its own lock");
        assert.equal(await pb.lk(fb, "ofd_setlk", "r", 0, 10), "OK", "read beside read");
        assert.equal(await pb.lk(fb, "ofd_setlk", "u", 0, 10), "OK");
        assert.equal(await pa.lk(fa, "ofd_setlk", "w", 0, 10), "OK");
        const pw = locker();
        const fw = await pw.open(onB);
        const waiting = pw.lk(fw, "ofd_setlkw", "w", 0, 10);
        assert.equal(await stillPending(waiting, 500), "pending", "B's SETLKW waits for A");
        assert.equal(await pa.close(fa), "OK");
        assert.equal(await waiting, "OK", "B's SETLKW woke when A closed");
        const fa2 = await pa.open(onA);
        assert.equal(await pa.lk(fa2, "ofd_setlk", "w", 0, 10), "EAGAIN", "now B holds it");
        await pw.close(fw);
        assert.equal(await pa.lk(fa2, "ofd_setlkw", "w", 0, 10), "OK");
        await pa.close(fa2);
      });

      await t.step("POSIX: any close by A's owner releases its locks for B", async () => {
        const fa = await pa.open(onA);
        assert.equal(await pa.lk(fa, "setlk", "w", 0, 0), "OK");
        assert.equal(await pb.lk(fb, "setlk", "w", 50, 10), "EAGAIN");
        assert.deepEqual(await pb.lk(fb, "getlk", "r", 50, 10), ["w", 0, 0]);
        const other = await pa.open(onA);
        await pa.close(other); // FLUSH: drops all of this process's POSIX locks on the file
        assert.equal(await pb.lk(fb, "setlk", "w", 50, 10), "OK");
        assert.equal(await pa.lk(fa, "setlk", "w", 55, 1), "EAGAIN", "B's lock blocks A");
        assert.equal(await pb.lk(fb, "setlk", "u", 0, 0), "OK");
        assert.equal(await pa.lk(fa, "setlk", "w", 55, 1), "OK");
        await pa.close(fa);
      });

      await t.step(
        "flock: A's blocks B's, not B's POSIX locks; A's close releases it",
        async () => {
          const fa = await pa.open(onA);
          assert.equal(await pa.flock(fa, "ex"), "OK");
          assert.equal(await pb.flock(fb, "sh"), "EAGAIN");
          assert.equal(await pb.lk(fb, "setlk", "w", 0, 0), "OK", "flock and POSIX are separate");
          assert.equal(await pb.lk(fb, "setlk", "u", 0, 0), "OK");
          await pa.close(fa);
          assert.equal(await pb.flock(fb, "ex", true), "OK");
          assert.equal(await pb.flock(fb, "un"), "OK");
        },
      );

      await t.step("a lock of a mount killed with -9 goes with its lease", async () => {
        const fa = await pa.open(onA);
        assert.equal(await pa.lk(fa, "ofd_setlk", "w", 0, 0), "OK");
        assert.equal(await pa.flock(fa, "ex"), "OK");
        assert.equal(await pb.lk(fb, "ofd_setlk", "w", 0, 0), "EAGAIN");
        assert.equal(await pb.flock(fb, "ex"), "EAGAIN");
        await cluster.kill(a);
        await pa.kill();
        await until(
          async () => await pb.lk(fb, "ofd_setlk", "w", 0, 0) === "OK",
          "B takes the OFD lock once A's lease expired",
        );
        assert.equal(await pb.flock(fb, "ex"), "OK");
      });
    } finally {
      for (const one of lockers) await one.kill();
      await cluster.stop();
    }
  },
});
