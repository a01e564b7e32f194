/**
 * Real CURP replica processes: kill -9 of the leader under load loses no acknowledged write,
 * no quorum gives a bounded timeout error and recovery, a data directory of another cluster is
 * refused, and a malformed frame closes only its own connection.
 * @module
 */

import assert from "node:assert/strict";
import { CurpTimeoutError, openCurpKV } from "../../src/meta/curp/curp_kv.ts";
import { encodeFrame, MAX_FRAME_BYTES } from "../../src/meta/curp/wire.ts";
import { TestCluster } from "./_cluster.ts";

const MOD = new URL("../../mod.ts", import.meta.url).pathname;
const encoder = new TextEncoder();
const decoder = new TextDecoder();
const opts = { sanitizeResources: false, sanitizeOps: false };

Deno.test({
  name: "curp processes: kill -9 of the leader under load loses no acknowledged write",
  ...opts,
  fn: async () => {
    const cluster = await TestCluster.start("curp2-failover-");
    try {
      const kv = await openCurpKV(cluster.addressList, { timeoutMs: 15_000 });
      const acked = new Map<string, string>();
      let failures = 0;
      let stop = false;
      const writer = async (w: number) => {
        for (let i = 0; !stop; i++) {
          const key = `w${w}/k${i}`;
          try {
            await kv.put({ key: encoder.encode(key), value: encoder.encode(`v${i}`) });
            acked.set(key, `v${i}`);
          } catch {
            failures++; // unknown outcome: not acknowledged, so not checked
          }
        }
      };
      const writers = Array.from({ length: 8 }, (_, w) => writer(w));
      while (acked.size < 100) await new Promise((r) => setTimeout(r, 20));
      const leader = await cluster.waitForLeader();
      await cluster.kill(leader);
      const atKill = acked.size;
      const newLeader = await cluster.waitForLeader();
      assert.notEqual(newLeader, leader);
      while (acked.size < atKill + 100) await new Promise((r) => setTimeout(r, 20));
      stop = true;
      await Promise.all(writers);
      cluster.startReplica(leader); // the old leader rejoins and catches up
      const all = await kv.range({ key: encoder.encode("w"), rangeEnd: encoder.encode("x") });
      const stored = new Map(all.kvs.map((e) => [decoder.decode(e.key), decoder.decode(e.value)]));
      for (const [key, value] of acked) assert.equal(stored.get(key), value, `acked ${key} lost`);
      assert.equal(failures, 0, "writes failed although a quorum stayed up");
      await kv.close();
    } finally {
      await cluster.stop();
    }
  },
});

Deno.test({
  name: "curp processes: without quorum a write fails with a timeout, and works once it returns",
  ...opts,
  fn: async () => {
    const cluster = await TestCluster.start("curp2-quorum-");
    try {
      const kv = await openCurpKV(cluster.addressList, { timeoutMs: 1500 });
      await kv.put({ key: encoder.encode("q"), value: encoder.encode("1") });
      const [a, b] = cluster.ids;
      await cluster.kill(a);
      await cluster.kill(b);
      await assert.rejects(
        kv.put({ key: encoder.encode("q"), value: encoder.encode("2") }),
        (e: unknown) =>
          e instanceof CurpTimeoutError && /did not answer within 1500 ms/.test(e.message),
      );
      cluster.startReplica(a);
      await cluster.waitForLeader();
      const deadline = Date.now() + 20_000;
      while (true) {
        try {
          await kv.put({ key: encoder.encode("q"), value: encoder.encode("3") });
          break;
        } catch (error) {
          if (Date.now() > deadline) throw error;
        }
      }
      const got = await kv.range({ key: encoder.encode("q") });
      assert.equal(decoder.decode(got.kvs[0].value), "3");
      await kv.close();
    } finally {
      await cluster.stop();
    }
  },
});

Deno.test({
  name: "curp processes: a data directory of another cluster is refused with the fix",
  ...opts,
  fn: async () => {
    const cluster = await TestCluster.start("curp2-datadir-", 1);
    const [id] = cluster.ids;
    await cluster.kill(id);
    try {
      const other = `${id}=127.0.0.1:1,x=127.0.0.1:2,y=127.0.0.1:3`;
      const out = await new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "-A",
          MOD,
          "meta",
          "serve",
          "--id",
          id,
          "--peers",
          other,
          "--data",
          `${cluster.dir}/${id}`,
        ],
        stdout: "piped",
        stderr: "piped",
      }).output();
      const stderr = decoder.decode(out.stderr);
      assert.equal(out.code, 1, stderr);
      assert.match(
        stderr,
        /^skyfs: .*belongs to replica "a" of cluster ".*", not replica "a" of .*use an empty --data/m,
      );
      const bad = await new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "-A",
          MOD,
          "meta",
          "serve",
          "--id",
          "a",
          "--peers",
          "a=127.0.0.1:1,b=127.0.0.1:2",
          "--data",
          cluster.dir,
        ],
        stdout: "piped",
        stderr: "piped",
      }).output();
      assert.equal(bad.code, 1);
      assert.match(
        decoder.decode(bad.stderr),
        /^skyfs: .*names 2 replicas; a cluster needs an odd number/m,
      );
    } finally {
      await cluster.stop();
    }
  },
});

Deno.test({
  name: "curp processes: a malformed or oversized frame closes that connection only, logged",
  ...opts,
  fn: async () => {
    const cluster = await TestCluster.start("curp2-frames-", 1);
    try {
      const [host, port] = cluster.addressList[0].split(":");
      for (
        const frame of [
          encodeFrame({}), // no type
          new Uint8Array([0, 0, 0, 3, 1, 123, 125]), // {} as JSON: version 1, an earlier build
          new Uint8Array([0, 0, 0, 3, 2, 0x81, 0xa1]), // a MessagePack map cut short
          new Uint8Array([0xff, 0, 0, 0, 1]), // length beyond the limit
          new Uint8Array([0, 0, 0, 2, 9, 0]), // unknown version
          encodeFrame({ type: "append", from: "zz", to: "a", term: 1 }), // not a member
        ]
      ) {
        const conn = await Deno.connect({ hostname: host, port: Number(port) });
        await conn.write(frame);
        const buf = new Uint8Array(16);
        assert.equal(await conn.read(buf), null, "the replica should close the connection");
        conn.close();
      }
      const kv = await openCurpKV(cluster.addressList, { timeoutMs: 5000 });
      await kv.put({ key: encoder.encode("still"), value: encoder.encode("up") });
      await kv.close();
      const log = cluster.logs.get("a")!.join("");
      assert.match(
        log,
        /closing connection from 127\.0\.0\.1:\d+: frame body has no string "type"/,
      );
      assert.match(log, new RegExp(`frame length 4278190080 exceeds ${MAX_FRAME_BYTES}`));
      assert.match(log, /frame version 9, this build speaks 2/);
      assert.match(log, /frame version 1, this build speaks 2/);
      assert.match(log, /frame is not one MessagePack value \(.*\): 2 bytes starting 81a1/);
      assert.match(log, /peer message from non-member "zz"/);
    } finally {
      await cluster.stop();
    }
  },
});

Deno.test({
  name:
    "curp processes: reads go outside the log (no entry, no fsync) and the trace names each command's path",
  ...opts,
  fn: async () => {
    const cluster = await TestCluster.start("curp2-reads-");
    try {
      const lines: string[] = [];
      const kv = await openCurpKV(cluster.addressList, { trace: (line) => lines.push(line) });
      const key = encoder.encode("reads/a");
      await kv.txn({ success: [{ put: { key, value: encoder.encode("v") } }] });
      // Let the put commit everywhere, so the reads below meet no uncommitted entry.
      await new Promise((r) => setTimeout(r, 300));
      const leader = await cluster.waitForLeader();
      const before = await cluster.status(leader);
      for (let i = 0; i < 20; i++) {
        const got = await kv.range({ key });
        assert.equal(decoder.decode(got.kvs[0].value), "v");
        assert.ok(got.kvs[0].modRevision > 0, "a read outside the log has real revisions");
      }
      const after = await cluster.status(leader);
      assert.equal(after?.lastIndex, before?.lastIndex, "reads appended log entries");
      assert.equal(kv.readCount, 20);
      assert.match(lines[0], /^skyfs: meta @[\d.]+ slow [\d.]+ ms: put reads\/a; session [\w-]+$/);
      assert.ok(
        lines.slice(1).every((l) =>
          /^skyfs: meta @[\d.]+ read [\d.]+ ms: range reads\/a; session [\w-]+$/.test(l)
        ),
      );
      await kv.close();
    } finally {
      await cluster.stop();
    }
  },
});
