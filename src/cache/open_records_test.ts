/** Open records' lease: a store that does not answer is retried on the same lease, and only a
 * lease that is really gone makes the records move to a new one. */

import assert from "node:assert/strict";
import { type MetaKV, MetaUnavailableError } from "../meta/kv.ts";
import { openEmbeddedKV } from "../meta/embedded.ts";
import { keys } from "../meta/namespace.ts";
import { openRecordKey, OpenRecords } from "./open_records.ts";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

Deno.test("open records: an unanswered renewal keeps the lease; a lost lease gets a new one", async () => {
  const store = await openEmbeddedKV(":memory:");
  let unavailable = false;
  let grants = 0;
  let renewals = 0;
  const kv: MetaKV = new Proxy(store, {
    get: (target, p) => {
      if (p === "leaseKeepAlive") {
        return (id: number) =>
          ++renewals && unavailable
            ? Promise.reject(new MetaUnavailableError("metadata store did not answer (test)"))
            : store.leaseKeepAlive(id);
      }
      if (p === "leaseGrant") {
        return (ttl: number) => {
          grants++;
          return store.leaseGrant(ttl);
        };
      }
      const value = Reflect.get(target, p);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
  const records = new OpenRecords(kv, "b", 1);
  const errors: string[] = [];
  const realError = console.error;
  console.error = (line: string) => errors.push(line);
  try {
    const ino = 42;
    await store.put({ key: keys.inode(ino), value: new Uint8Array([1]) });
    assert.ok(await records.hold(ino, keys.inode(ino)));
    const lease = records.leaseId!;
    assert.equal(grants, 1);
    // One renewal (every 333 ms here) goes unanswered, right after one that succeeded, so the
    // lease (1 s) is still alive at the next one.
    const next = async () => {
      const seen = renewals;
      while (renewals === seen) await sleep(10);
    };
    await next();
    unavailable = true;
    await next();
    unavailable = false;
    await next();
    await sleep(50);
    assert.equal(records.leaseId, lease, "same lease");
    assert.equal(grants, 1, "no new lease while the old one may live");
    assert.equal(errors.filter((e) => /cannot renew/.test(e)).length, 1, errors.join("\n"));
    assert.ok(!errors.some((e) => /expired/.test(e)), errors.join("\n"));
    // The lease really goes (expiry while unreachable): the record comes back on a new one.
    await store.leaseRevoke(lease);
    for (let i = 0; i < 50 && records.leaseId === lease; i++) await sleep(100);
    assert.notEqual(records.leaseId, lease);
    assert.equal((await store.range({ key: openRecordKey(ino, "b") })).kvs.length, 1);
    assert.ok(errors.some((e) => /expired/.test(e)), errors.join("\n"));
  } finally {
    console.error = realError;
    await records.close();
    await store.close();
  }
});
