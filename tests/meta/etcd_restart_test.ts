/**
 * EtcdKV across a kill -9 and restart of its etcd member (same data dir and ports): while it is
 * down, a read and a write fail with MetaUnavailableError naming etcd (the mount's one EIO line);
 * a write issued while it is down and the member back within the timeout succeeds (never sent,
 * so retried); a watch made before the kill delivers every event after the restart, none twice.
 * Skipped with a reason when etcd is missing.
 * @module
 */

import assert from "node:assert/strict";
import { openEtcdKV } from "../../src/meta/etcd.ts";
import { MetaUnavailableError, type WatchEvent } from "../../src/meta/kv.ts";
import { freePort } from "./_cluster.ts";

const enc = (s: string) => new TextEncoder().encode(s);
const dec = (b: Uint8Array) => new TextDecoder().decode(b);

function etcdInstalled(): boolean {
  try {
    return Deno.statSync("/usr/bin/etcd").isFile;
  } catch {
    return false;
  }
}

Deno.test({
  name: "etcd restarted under an EtcdKV: MetaUnavailableError naming etcd while down, an unsent " +
    "write retried, a watch resumes without loss or repeat",
  ignore: !etcdInstalled(),
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "skyfs-etcd-restart-" });
    const client = `127.0.0.1:${freePort()}`;
    const peer = `127.0.0.1:${freePort()}`;
    let child: Deno.ChildProcess | undefined;
    const start = () => {
      child = new Deno.Command("/usr/bin/etcd", {
        args: [
          "--name=t",
          `--data-dir=${dir}`,
          `--listen-client-urls=http://${client}`,
          `--advertise-client-urls=http://${client}`,
          `--listen-peer-urls=http://${peer}`,
          `--initial-advertise-peer-urls=http://${peer}`,
          `--initial-cluster=t=http://${peer}`,
        ],
        stdout: "null",
        stderr: "null",
      }).spawn();
    };
    const kill = async () => {
      child?.kill("SIGKILL");
      await child?.status;
      child = undefined;
    };
    start();
    let kv: Awaited<ReturnType<typeof openEtcdKV>> | undefined;
    for (const deadline = Date.now() + 30_000; kv === undefined;) {
      kv = await openEtcdKV([client], { timeoutMs: 5000 }).catch((error) => {
        if (Date.now() > deadline) throw error;
        return undefined;
      });
    }
    try {
      const seen: string[] = [];
      const prefix = enc("r/");
      const watcher = kv.watch(
        { key: prefix, rangeEnd: enc("r0") },
        {},
        (events: WatchEvent[]) => seen.push(...events.map((e) => dec(e.kv.key))),
      );
      await kv.put({ key: enc("r/1"), value: enc("one") });
      await kill();
      const unavailable = (error: unknown) =>
        error instanceof MetaUnavailableError &&
        error.message.startsWith(`etcd at ${client} did not answer`);
      await assert.rejects(kv.range({ key: enc("r/1") }), unavailable);
      // A write whose connection is refused was never sent: it waits for etcd, up to the timeout.
      const during = kv.put({ key: enc("r/2"), value: enc("two") });
      await new Promise((r) => setTimeout(r, 500));
      start();
      await during;
      await kv.put({ key: enc("r/3"), value: enc("three") });
      assert.equal(dec((await kv.range({ key: enc("r/2") })).kvs[0].value), "two");
      const deadline = Date.now() + 10_000;
      while (seen.length < 3 && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 50));
      }
      await new Promise((r) => setTimeout(r, 300)); // a repeat would arrive by now
      assert.deepEqual(seen, ["r/1", "r/2", "r/3"]);
      watcher.cancel();
    } finally {
      await kv.close();
      await kill();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
