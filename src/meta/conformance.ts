/**
 * The MetaKV conformance suite: one set of Deno tests that every backend (embedded, CURP, etcd)
 * must pass unchanged, so the file system can rely on etcd v3 semantics whatever stores them.
 *
 * The cases do not assume an empty store: each uses its own random key prefix and checks
 * revisions relative to the revision it starts from, so they also run against a shared etcd
 * (one test at a time: "advances by exactly one" needs no other writer during a case).
 * @module
 */

import assert from "node:assert/strict";
import {
  CompactedError,
  type KeyRange,
  type KeyValue,
  type MetaKV,
  prefixEnd,
  type WatchEvent,
  type WatchOptions,
} from "./kv.ts";

export interface MetaKVConformanceOptions {
  /** Cases not to run, each with the reason written out (shown in the test name). */
  skip?: Record<string, string>;
  /** Passed to Deno.test: backends holding sockets may need false. Default true. */
  sanitizeResources?: boolean;
  /** Passed to Deno.test. Default true. */
  sanitizeOps?: boolean;
}

/** Register the suite's cases as Deno tests named "<name>: <case>"; `open` gives a store for
 * one case (closed by the case). */
export function runMetaKVConformance(
  name: string,
  open: () => Promise<MetaKV>,
  options: MetaKVConformanceOptions = {},
): void {
  const skip = options.skip ?? {};
  for (const unknown of Object.keys(skip)) {
    if (!(unknown in CASES)) {
      throw new RangeError(`Cannot skip unknown conformance case "${unknown}"`);
    }
  }
  for (const [caseName, body] of Object.entries(CASES)) {
    const reason = skip[caseName];
    Deno.test({
      name: reason === undefined
        ? `${name}: ${caseName}`
        : `${name}: ${caseName} (skipped: ${reason})`,
      ignore: reason !== undefined,
      sanitizeResources: options.sanitizeResources ?? true,
      sanitizeOps: options.sanitizeOps ?? true,
      fn: async () => {
        const kv = await open();
        try {
          await body(kv, newPrefix());
        } finally {
          await kv.close();
        }
      },
    });
  }
}

// ---- helpers ----

const encoder = new TextEncoder();
const decoder = new TextDecoder();
/** Every key the suite writes starts with this, near the top of the key space, so that cases
 * ranging "to the end" only meet the suite's own keys. */
const SUITE_PREFIX = new Uint8Array([0xff, 0xff, 0xff, 0xf0]);
const TO_END = new Uint8Array([0]);
const WAIT_MS = 10_000;

function newPrefix(): Uint8Array {
  const id = crypto.getRandomValues(new Uint32Array(2)).join("");
  return concat(SUITE_PREFIX, encoder.encode(`mkv/${id}/`));
}

function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** `prefix` + the UTF-8 of `name`. */
function key(prefix: Uint8Array, name: string): Uint8Array {
  return concat(prefix, encoder.encode(name));
}

function bytes(text: string): Uint8Array {
  return encoder.encode(text);
}

function text(value: Uint8Array): string {
  return decoder.decode(value);
}

/** Key names relative to the prefix, for readable assertions. */
function names(prefix: Uint8Array, kvs: { key: Uint8Array }[]): string[] {
  return kvs.map((kv) => text(kv.key.subarray(prefix.length)));
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

async function waitFor(what: string, done: () => boolean | Promise<boolean>): Promise<void> {
  const deadline = Date.now() + WAIT_MS;
  while (!(await done())) {
    if (Date.now() > deadline) throw new Error(`Timed out after ${WAIT_MS} ms waiting for ${what}`);
    await delay(5);
  }
}

interface Recorded {
  batches: { revision: number; events: WatchEvent[] }[];
  cancel(): void;
  /** Wait until a batch of `revision` has arrived. */
  until(revision: number): Promise<void>;
}

function record(kv: MetaKV, range: KeyRange, options: Omit<WatchOptions, "rangeEnd">): Recorded {
  const batches: Recorded["batches"] = [];
  const watcher = kv.watch(range, options, (events, revision) => {
    batches.push({ revision, events });
  });
  return {
    batches,
    cancel: () => watcher.cancel(),
    until: (revision) =>
      waitFor(
        `a watch batch at revision ${revision}`,
        () => batches.some((b) => b.revision >= revision),
      ),
  };
}

/** One line per event: "put a=1" / "delete a", with "(prev x)" when prevKv is present. */
function describeEvents(prefix: Uint8Array, events: WatchEvent[]): string[] {
  return events.map((e) => {
    const name = text(e.kv.key.subarray(prefix.length));
    const body = e.type === "put" ? `put ${name}=${text(e.kv.value)}` : `delete ${name}`;
    return e.prevKv === undefined ? body : `${body} (prev ${text(e.prevKv.value)})`;
  });
}

async function get(kv: MetaKV, k: Uint8Array): Promise<KeyValue | undefined> {
  const response = await kv.range({ key: k });
  assert.ok(response.kvs.length <= 1, "a single-key range returned several keys");
  return response.kvs[0];
}

async function putAll(kv: MetaKV, prefix: Uint8Array, nameList: string[]): Promise<number> {
  let revision = 0;
  for (const n of nameList) {
    revision = (await kv.put({ key: key(prefix, n), value: bytes(n) })).revision;
  }
  return revision;
}

type Case = (kv: MetaKV, prefix: Uint8Array) => Promise<void>;

// ---- the cases ----

const CASES: Record<string, Case> = {
  "revision: read-only operations do not advance it": async (kv, p) => {
    const start = await kv.revision();
    assert.ok(Number.isSafeInteger(start) && start >= 1, `revision ${start} should be >= 1`);
    const range = await kv.range({ key: key(p, "a") });
    assert.equal(range.revision, start);
    const txn = await kv.txn({
      compare: [{ key: key(p, "a"), target: "version", result: ">", value: 0 }],
      success: [{ put: { key: key(p, "a"), value: bytes("x") } }],
      failure: [{ range: { key: key(p, "a") } }],
    });
    assert.equal(txn.succeeded, false);
    assert.equal(txn.revision, start);
    assert.equal((await kv.txn({})).revision, start);
    const deleted = await kv.deleteRange({ key: key(p, "missing") });
    assert.equal(deleted.deleted, 0);
    assert.equal(deleted.revision, start, "deleting nothing must not create a revision");
    assert.equal(await kv.revision(), start);
  },

  "put: each put advances the revision by one and sets the key's fields": async (kv, p) => {
    const start = await kv.revision();
    const first = await kv.put({ key: key(p, "a"), value: bytes("1") });
    assert.equal(first.revision, start + 1);
    assert.deepEqual(await get(kv, key(p, "a")), {
      key: key(p, "a"),
      value: bytes("1"),
      createRevision: start + 1,
      modRevision: start + 1,
      version: 1,
      lease: 0,
    });
    const second = await kv.put({ key: key(p, "a"), value: bytes("2") });
    assert.equal(second.revision, start + 2);
    const kv2 = await get(kv, key(p, "a"));
    assert.equal(kv2?.createRevision, start + 1);
    assert.equal(kv2?.modRevision, start + 2);
    assert.equal(kv2?.version, 2);
    assert.equal(text(kv2!.value), "2");
    assert.equal(await kv.revision(), start + 2);
  },

  "put: prevKv is returned only when asked and the key existed": async (kv, p) => {
    const created = await kv.put({ key: key(p, "a"), value: bytes("1"), prevKv: true });
    assert.equal(created.prevKv, undefined);
    const overwritten = await kv.put({ key: key(p, "a"), value: bytes("2"), prevKv: true });
    assert.equal(text(overwritten.prevKv!.value), "1");
    assert.equal(overwritten.prevKv!.version, 1);
    assert.equal(overwritten.prevKv!.modRevision, created.revision);
    const silent = await kv.put({ key: key(p, "a"), value: bytes("3") });
    assert.equal(silent.prevKv, undefined);
  },

  "put: empty and binary values round-trip": async (kv, p) => {
    await kv.put({ key: key(p, "empty"), value: new Uint8Array(0) });
    const binary = new Uint8Array(256).map((_, i) => i);
    await kv.put({ key: key(p, "binary"), value: binary });
    assert.deepEqual((await get(kv, key(p, "empty")))?.value, new Uint8Array(0));
    assert.deepEqual((await get(kv, key(p, "binary")))?.value, binary);
    // A view into a larger buffer stores only its own bytes.
    const view = new Uint8Array([9, 9, 1, 2, 9]).subarray(2, 4);
    await kv.put({ key: key(p, "view"), value: view });
    assert.deepEqual((await get(kv, key(p, "view")))?.value, new Uint8Array([1, 2]));
  },

  "put: an empty key is rejected": async (kv) => {
    const start = await kv.revision();
    await assert.rejects(kv.put({ key: new Uint8Array(0), value: bytes("x") }));
    await assert.rejects(kv.range({ key: new Uint8Array(0) }));
    assert.equal(await kv.revision(), start);
  },

  "delete: version and createRevision restart after a delete": async (kv, p) => {
    await kv.put({ key: key(p, "a"), value: bytes("1") });
    await kv.put({ key: key(p, "a"), value: bytes("2") });
    const deleted = await kv.deleteRange({ key: key(p, "a") });
    assert.equal(deleted.deleted, 1);
    assert.equal(await get(kv, key(p, "a")), undefined);
    const again = await kv.put({ key: key(p, "a"), value: bytes("3") });
    const kv3 = await get(kv, key(p, "a"));
    assert.equal(kv3?.version, 1);
    assert.equal(kv3?.createRevision, again.revision);
    assert.equal(kv3?.modRevision, again.revision);
  },

  "deleteRange: single key, range, prefix and prevKvs": async (kv, p) => {
    await putAll(kv, p, ["a", "b", "c", "d", "e", "f"]);
    const start = await kv.revision();
    const one = await kv.deleteRange({ key: key(p, "a"), prevKv: true });
    assert.equal(one.deleted, 1);
    assert.deepEqual(names(p, one.prevKvs), ["a"]);
    assert.equal(text(one.prevKvs[0].value), "a");
    assert.equal(one.revision, start + 1);
    const range = await kv.deleteRange({ key: key(p, "b"), rangeEnd: key(p, "d") });
    assert.equal(range.deleted, 2);
    assert.deepEqual(range.prevKvs, [], "prevKvs stays empty unless asked");
    assert.equal(range.revision, start + 2, "one revision for the whole range");
    const rest = await kv.range({ key: p, rangeEnd: prefixEnd(p) });
    assert.deepEqual(names(p, rest.kvs), ["d", "e", "f"]);
    const all = await kv.deleteRange({ key: p, rangeEnd: prefixEnd(p), prevKv: true });
    assert.equal(all.deleted, 3);
    assert.deepEqual(names(p, all.prevKvs), ["d", "e", "f"]);
    assert.equal((await kv.range({ key: p, rangeEnd: prefixEnd(p) })).count, 0);
  },

  "deleteRange: rangeEnd [0] deletes to the end of the key space": async (kv, p) => {
    await kv.deleteRange({ key: SUITE_PREFIX, rangeEnd: TO_END }); // earlier runs' leftovers
    await putAll(kv, p, ["a", "b", "c"]);
    const deleted = await kv.deleteRange({ key: key(p, "b"), rangeEnd: TO_END });
    assert.equal(deleted.deleted, 2);
    assert.deepEqual(names(p, (await kv.range({ key: p, rangeEnd: prefixEnd(p) })).kvs), ["a"]);
  },

  "range: a missing key gives no kvs and count 0": async (kv, p) => {
    const response = await kv.range({ key: key(p, "nothing") });
    assert.deepEqual(response.kvs, []);
    assert.equal(response.count, 0);
    assert.equal(response.more, false);
  },

  "range: rangeEnd, limit, more and count": async (kv, p) => {
    await putAll(kv, p, ["e", "c", "a", "d", "b"]);
    const all = await kv.range({ key: p, rangeEnd: prefixEnd(p) });
    assert.deepEqual(names(p, all.kvs), ["a", "b", "c", "d", "e"]);
    assert.equal(all.count, 5);
    assert.equal(all.more, false);
    const limited = await kv.range({ key: p, rangeEnd: prefixEnd(p), limit: 2 });
    assert.deepEqual(names(p, limited.kvs), ["a", "b"]);
    assert.equal(limited.more, true);
    assert.equal(limited.count, 5, "count is every key in the range, not only those returned");
    const exact = await kv.range({ key: p, rangeEnd: prefixEnd(p), limit: 5 });
    assert.equal(exact.kvs.length, 5);
    assert.equal(exact.more, false);
    const zero = await kv.range({ key: p, rangeEnd: prefixEnd(p), limit: 0 });
    assert.equal(zero.kvs.length, 5, "limit 0 means no limit");
    const half = await kv.range({ key: key(p, "b"), rangeEnd: key(p, "d") });
    assert.deepEqual(names(p, half.kvs), ["b", "c"], "rangeEnd is exclusive");
    const empty = await kv.range({ key: key(p, "d"), rangeEnd: key(p, "b") });
    assert.deepEqual(empty.kvs, [], "rangeEnd before key selects nothing");
    assert.equal(empty.count, 0);
  },

  "range: keysOnly and countOnly": async (kv, p) => {
    await putAll(kv, p, ["a", "b", "c"]);
    const keys = await kv.range({ key: p, rangeEnd: prefixEnd(p), keysOnly: true });
    assert.deepEqual(names(p, keys.kvs), ["a", "b", "c"]);
    for (const k of keys.kvs) {
      assert.equal(k.value.length, 0);
      assert.equal(k.version, 1);
      assert.ok(k.modRevision > 0);
    }
    const counted = await kv.range({ key: p, rangeEnd: prefixEnd(p), countOnly: true });
    assert.deepEqual(counted.kvs, []);
    assert.equal(counted.count, 3);
    const countedLimited = await kv.range({
      key: p,
      rangeEnd: prefixEnd(p),
      countOnly: true,
      limit: 1,
    });
    assert.equal(countedLimited.count, 3);
  },

  "range: keys order as unsigned bytes and prefixEnd bounds a prefix": async (kv, p) => {
    const raw = [[0x01], [0x7f], [0x80], [0xff], [0x80, 0x00], [0xff, 0xff]];
    for (const suffix of raw) {
      await kv.put({ key: concat(p, new Uint8Array(suffix)), value: bytes("v") });
    }
    const all = await kv.range({ key: p, rangeEnd: prefixEnd(p) });
    assert.deepEqual(
      all.kvs.map((k) => [...k.key.subarray(p.length)]),
      [[0x01], [0x7f], [0x80], [0x80, 0x00], [0xff], [0xff, 0xff]],
    );
    const under80 = concat(p, new Uint8Array([0x80]));
    const sub = await kv.range({ key: under80, rangeEnd: prefixEnd(under80) });
    assert.deepEqual(sub.kvs.map((k) => [...k.key.subarray(p.length)]), [[0x80], [0x80, 0x00]]);
    const underFF = concat(p, new Uint8Array([0xff]));
    const ff = await kv.range({ key: underFF, rangeEnd: prefixEnd(underFF) });
    assert.deepEqual(ff.kvs.map((k) => [...k.key.subarray(p.length)]), [[0xff], [0xff, 0xff]]);
  },

  "range: rangeEnd [0] means from key to the end": async (kv, p) => {
    await kv.deleteRange({ key: SUITE_PREFIX, rangeEnd: TO_END }); // earlier runs' leftovers
    await putAll(kv, p, ["a", "b", "c"]);
    const fromB = await kv.range({ key: key(p, "b"), rangeEnd: TO_END });
    assert.deepEqual(names(p, fromB.kvs), ["b", "c"]);
    const limited = await kv.range({ key: key(p, "a"), rangeEnd: TO_END, limit: 1 });
    assert.equal(limited.more, true);
    assert.equal(limited.count, 3);
    assert.deepEqual(prefixEnd(new Uint8Array([0xff, 0xff])), TO_END);
  },

  "compare: numeric targets on an existing key, every result": async (kv, p) => {
    const a = key(p, "a");
    await kv.put({ key: a, value: bytes("1") });
    const second = await kv.put({ key: a, value: bytes("2") });
    const row = (await get(kv, a))!;
    const targets = {
      version: 2,
      createRevision: row.createRevision,
      modRevision: second.revision,
      lease: 0,
    } as const;
    for (const [target, actual] of Object.entries(targets)) {
      for (
        const [result, value, expected] of [
          ["==", actual, true],
          ["==", actual + 1, false],
          ["!=", actual, false],
          ["!=", actual + 1, true],
          ["<", actual + 1, true],
          ["<", actual, false],
          [">", actual - 1, true],
          [">", actual, false],
        ] as const
      ) {
        const response = await kv.txn({
          compare: [{ key: a, target: target as "version", result, value }],
        });
        assert.equal(response.succeeded, expected, `${target} ${actual} ${result} ${value}`);
      }
    }
  },

  "compare: a missing key has version, revisions and lease 0": async (kv, p) => {
    const missing = key(p, "missing");
    for (const target of ["version", "createRevision", "modRevision", "lease"] as const) {
      for (
        const [result, value, expected] of [
          ["==", 0, true],
          ["!=", 0, false],
          ["<", 1, true],
          [">", -1, true],
          [">", 0, false],
        ] as const
      ) {
        const response = await kv.txn({ compare: [{ key: missing, target, result, value }] });
        assert.equal(response.succeeded, expected, `missing ${target} ${result} ${value}`);
      }
    }
  },

  "compare: every value comparison of a missing key is false": async (kv, p) => {
    const missing = key(p, "missing");
    for (const result of ["==", "!=", "<", ">"] as const) {
      for (const value of [new Uint8Array(0), bytes("x")]) {
        const response = await kv.txn({
          compare: [{ key: missing, target: "value", result, value }],
        });
        assert.equal(response.succeeded, false, `missing value ${result} "${text(value)}"`);
      }
    }
  },

  "compare: values compare as bytes": async (kv, p) => {
    const a = key(p, "a");
    await kv.put({ key: a, value: bytes("abc") });
    for (
      const [result, value, expected] of [
        ["==", "abc", true],
        ["==", "abd", false],
        ["!=", "abd", true],
        ["!=", "abc", false],
        ["<", "abd", true],
        ["<", "abcd", true],
        ["<", "abc", false],
        [">", "abb", true],
        [">", "ab", true],
        [">", "abc", false],
      ] as const
    ) {
      const response = await kv.txn({
        compare: [{ key: a, target: "value", result, value: bytes(value) }],
      });
      assert.equal(response.succeeded, expected, `"abc" ${result} "${value}"`);
    }
    await kv.put({ key: a, value: new Uint8Array([0x80]) });
    const unsigned = await kv.txn({
      compare: [{ key: a, target: "value", result: ">", value: new Uint8Array([0x7f]) }],
    });
    assert.equal(unsigned.succeeded, true, "0x80 > 0x7f: bytes are unsigned");
  },

  "compare: lease target sees the attached lease": async (kv, p) => {
    const { id } = await kv.leaseGrant(60);
    try {
      await kv.put({ key: key(p, "a"), value: bytes("1"), lease: id });
      const same = await kv.txn({
        compare: [{ key: key(p, "a"), target: "lease", result: "==", value: id }],
      });
      assert.equal(same.succeeded, true);
      assert.equal((await get(kv, key(p, "a")))?.lease, id);
    } finally {
      await kv.leaseRevoke(id);
    }
  },

  "txn: all writes of a transaction share one revision": async (kv, p) => {
    await putAll(kv, p, ["old"]);
    const start = await kv.revision();
    const response = await kv.txn({
      success: [
        { put: { key: key(p, "a"), value: bytes("1") } },
        { put: { key: key(p, "b"), value: bytes("2") } },
        { deleteRange: { key: key(p, "old") } },
        { range: { key: p, rangeEnd: prefixEnd(p) } },
      ],
    });
    assert.equal(response.succeeded, true);
    assert.equal(response.revision, start + 1);
    assert.equal(await kv.revision(), start + 1);
    const all = await kv.range({ key: p, rangeEnd: prefixEnd(p) });
    assert.deepEqual(names(p, all.kvs), ["a", "b"]);
    for (const k of all.kvs) assert.equal(k.modRevision, start + 1);
    assert.equal(response.responses.length, 4);
    assert.ok("deleteRange" in response.responses[2]);
    const inner = response.responses[3];
    assert.ok("range" in inner);
    assert.deepEqual(names(p, inner.range.kvs), ["a", "b"], "a range sees the txn's own writes");
  },

  "txn: the failure branch runs when any compare fails": async (kv, p) => {
    await kv.put({ key: key(p, "a"), value: bytes("1") });
    const response = await kv.txn({
      compare: [
        { key: key(p, "a"), target: "version", result: "==", value: 1 },
        { key: key(p, "a"), target: "value", result: "==", value: bytes("2") },
      ],
      success: [{ put: { key: key(p, "s"), value: bytes("success") } }],
      failure: [
        { put: { key: key(p, "f"), value: bytes("failure"), prevKv: true } },
        { range: { key: key(p, "a") } },
      ],
    });
    assert.equal(response.succeeded, false);
    assert.equal(response.responses.length, 2);
    assert.ok("put" in response.responses[0]);
    const range = response.responses[1];
    assert.ok("range" in range);
    assert.equal(text(range.range.kvs[0].value), "1");
    assert.equal(await get(kv, key(p, "s")), undefined);
    assert.equal(text((await get(kv, key(p, "f")))!.value), "failure");
  },

  "txn: a rejected operation leaves no trace": async (kv, p) => {
    const start = await kv.revision();
    await assert.rejects(kv.txn({
      success: [
        { put: { key: key(p, "a"), value: bytes("1") } },
        { put: { key: key(p, "b"), value: bytes("2"), lease: 987654321 } },
      ],
    }));
    assert.equal(await get(kv, key(p, "a")), undefined);
    assert.equal(await kv.revision(), start);
  },

  "txn: writing one key twice in a branch is refused, as etcd does": async (kv, p) => {
    const start = await kv.revision();
    await assert.rejects(kv.txn({
      success: [
        { put: { key: key(p, "a"), value: bytes("1") } },
        { put: { key: key(p, "a"), value: bytes("2") } },
      ],
    }));
    await assert.rejects(kv.txn({
      success: [
        { deleteRange: { key: p, rangeEnd: prefixEnd(p) } },
        { put: { key: key(p, "a"), value: bytes("1") } },
      ],
    }));
    // Checked in the branch that does not run, too.
    await assert.rejects(kv.txn({
      compare: [{ key: key(p, "a"), target: "version", result: "==", value: 0 }],
      failure: [
        { put: { key: key(p, "a"), value: bytes("1") } },
        { put: { key: key(p, "a"), value: bytes("2") } },
      ],
    }));
    assert.equal(await kv.revision(), start);
    // Deletes may overlap, and a put may follow a read of the same key.
    await kv.put({ key: key(p, "b"), value: bytes("1") });
    const ok = await kv.txn({
      success: [
        { deleteRange: { key: key(p, "a"), rangeEnd: key(p, "c") } },
        { deleteRange: { key: key(p, "b") } },
        { range: { key: key(p, "c") } },
        { put: { key: key(p, "c"), value: bytes("1") } },
      ],
    });
    assert.equal(ok.succeeded, true);
  },

  "put: an unknown lease is rejected and nothing changes": async (kv, p) => {
    const start = await kv.revision();
    await assert.rejects(kv.put({ key: key(p, "a"), value: bytes("1"), lease: 987654321 }));
    assert.equal(await get(kv, key(p, "a")), undefined);
    assert.equal(await kv.revision(), start);
  },

  "lease: revoke deletes every attached key in one revision": async (kv, p) => {
    const { id, ttlSeconds } = await kv.leaseGrant(60);
    assert.ok(ttlSeconds >= 60);
    await kv.put({ key: key(p, "a"), value: bytes("1"), lease: id });
    await kv.put({ key: key(p, "b"), value: bytes("2"), lease: id });
    await kv.put({ key: key(p, "c"), value: bytes("3") });
    const start = await kv.revision();
    const watch = record(kv, { key: p, rangeEnd: prefixEnd(p) }, {});
    try {
      await kv.leaseRevoke(id);
      assert.equal(await kv.revision(), start + 1);
      assert.deepEqual(names(p, (await kv.range({ key: p, rangeEnd: prefixEnd(p) })).kvs), ["c"]);
      await watch.until(start + 1);
      assert.equal(watch.batches.length, 1);
      assert.deepEqual(describeEvents(p, watch.batches[0].events).sort(), [
        "delete a",
        "delete b",
      ]);
    } finally {
      watch.cancel();
    }
    await assert.rejects(kv.leaseKeepAlive(id), "keepAlive of a revoked lease");
    await assert.rejects(kv.leaseRevoke(id), "revoke of a revoked lease");
  },

  "lease: keepAlive returns the TTL; a missing lease rejects": async (kv) => {
    const { id, ttlSeconds } = await kv.leaseGrant(30);
    try {
      assert.equal(await kv.leaseKeepAlive(id), ttlSeconds);
    } finally {
      await kv.leaseRevoke(id);
    }
    await assert.rejects(kv.leaseKeepAlive(987654321));
    await assert.rejects(kv.leaseRevoke(987654321));
  },

  "lease: a put without lease detaches the key": async (kv, p) => {
    const { id } = await kv.leaseGrant(60);
    await kv.put({ key: key(p, "a"), value: bytes("1"), lease: id });
    await kv.put({ key: key(p, "a"), value: bytes("2") });
    assert.equal((await get(kv, key(p, "a")))?.lease, 0);
    await kv.leaseRevoke(id);
    assert.equal(text((await get(kv, key(p, "a")))!.value), "2");
  },

  "lease: expiry deletes the attached keys": async (kv, p) => {
    const { id, ttlSeconds } = await kv.leaseGrant(1);
    await kv.put({ key: key(p, "a"), value: bytes("1"), lease: id });
    await kv.put({ key: key(p, "b"), value: bytes("2"), lease: id });
    const deadline = Date.now() + ttlSeconds * 1000 + WAIT_MS;
    while ((await kv.range({ key: p, rangeEnd: prefixEnd(p), countOnly: true })).count > 0) {
      if (Date.now() > deadline) throw new Error(`Lease ${id} (TTL ${ttlSeconds} s) never expired`);
      await delay(50);
    }
    await assert.rejects(kv.leaseKeepAlive(id), "keepAlive of an expired lease");
  },

  "watch: live events, one batch per revision, prevKv when asked": async (kv, p) => {
    await kv.put({ key: key(p, "a"), value: bytes("0") });
    const plain = record(kv, { key: p, rangeEnd: prefixEnd(p) }, {});
    const withPrev = record(kv, { key: p, rangeEnd: prefixEnd(p) }, { prevKv: true });
    try {
      const r1 = (await kv.put({ key: key(p, "a"), value: bytes("1") })).revision;
      const r2 = (await kv.txn({
        success: [
          { put: { key: key(p, "b"), value: bytes("2") } },
          { deleteRange: { key: key(p, "a") } },
        ],
      })).revision;
      await plain.until(r2);
      await withPrev.until(r2);
      assert.deepEqual(plain.batches.map((b) => b.revision), [r1, r2]);
      assert.deepEqual(describeEvents(p, plain.batches[0].events), ["put a=1"]);
      assert.deepEqual(describeEvents(p, plain.batches[1].events).sort(), ["delete a", "put b=2"]);
      assert.deepEqual(describeEvents(p, withPrev.batches[0].events), ["put a=1 (prev 0)"]);
      assert.deepEqual(describeEvents(p, withPrev.batches[1].events).sort(), [
        "delete a (prev 1)",
        "put b=2",
      ]);
      const put = plain.batches[0].events[0].kv;
      assert.equal(put.modRevision, r1);
      assert.equal(put.version, 2);
    } finally {
      plain.cancel();
      withPrev.cancel();
    }
  },

  "watch: a delete event carries the key, an empty value and the deleting revision": async (
    kv,
    p,
  ) => {
    await kv.put({ key: key(p, "a"), value: bytes("1") });
    const watch = record(kv, { key: key(p, "a") }, {});
    try {
      const { revision } = await kv.deleteRange({ key: key(p, "a") });
      await watch.until(revision);
      const event = watch.batches[0].events[0];
      assert.equal(event.type, "delete");
      assert.deepEqual(event.kv.key, key(p, "a"));
      assert.equal(event.kv.value.length, 0);
      assert.equal(event.kv.modRevision, revision);
      assert.equal(event.kv.version, 0);
      assert.equal(event.kv.createRevision, 0);
      assert.equal(event.prevKv, undefined);
    } finally {
      watch.cancel();
    }
  },

  "watch: only keys in the range are delivered": async (kv, p) => {
    const single = record(kv, { key: key(p, "b") }, {});
    const ranged = record(kv, { key: key(p, "b"), rangeEnd: key(p, "d") }, {});
    try {
      for (const n of ["a", "b", "bb", "c", "d", "e"]) {
        await kv.put({ key: key(p, n), value: bytes(n) });
      }
      // A marker in both ranges, written last: once it arrives, everything before has too.
      const { revision } = await kv.put({ key: key(p, "b"), value: bytes("end") });
      await single.until(revision);
      await ranged.until(revision);
      assert.deepEqual(single.batches.flatMap((b) => describeEvents(p, b.events)), [
        "put b=b",
        "put b=end",
      ]);
      assert.deepEqual(ranged.batches.flatMap((b) => describeEvents(p, b.events)), [
        "put b=b",
        "put bb=bb",
        "put c=c",
        "put b=end",
      ]);
    } finally {
      single.cancel();
      ranged.cancel();
    }
  },

  "watch: from a past revision delivers history, then live events": async (kv, p) => {
    const r1 = (await kv.put({ key: key(p, "a"), value: bytes("1") })).revision;
    const r2 = (await kv.put({ key: key(p, "a"), value: bytes("2") })).revision;
    const r3 = (await kv.deleteRange({ key: key(p, "a") })).revision;
    const watch = record(kv, { key: p, rangeEnd: prefixEnd(p) }, {
      startRevision: r2,
      prevKv: true,
    });
    try {
      await watch.until(r3);
      const r4 = (await kv.put({ key: key(p, "b"), value: bytes("live") })).revision;
      await watch.until(r4);
      assert.deepEqual(watch.batches.map((b) => b.revision), [r2, r3, r4]);
      assert.deepEqual(watch.batches.flatMap((b) => describeEvents(p, b.events)), [
        "put a=2 (prev 1)",
        "delete a (prev 2)",
        "put b=live",
      ]);
      assert.ok(r1 < r2);
    } finally {
      watch.cancel();
    }
  },

  "watch: history and live writes interleaved arrive in order, once each": async (kv, p) => {
    const first = (await kv.put({ key: key(p, "k"), value: bytes("0") })).revision;
    for (let i = 1; i < 20; i++) await kv.put({ key: key(p, "k"), value: bytes(String(i)) });
    const watch = record(kv, { key: key(p, "k") }, { startRevision: first });
    let last = 0;
    try {
      for (let i = 20; i < 40; i++) {
        last = (await kv.put({ key: key(p, "k"), value: bytes(String(i)) })).revision;
      }
      await watch.until(last);
      const values = watch.batches.flatMap((b) => b.events.map((e) => text(e.kv.value)));
      assert.deepEqual(values, Array.from({ length: 40 }, (_, i) => String(i)));
      const revisions = watch.batches.map((b) => b.revision);
      assert.deepEqual(revisions, [...revisions].sort((a, b) => a - b));
    } finally {
      watch.cancel();
    }
  },

  "watch: a future startRevision skips earlier events": async (kv, p) => {
    const now = await kv.revision();
    const watch = record(kv, { key: p, rangeEnd: prefixEnd(p) }, { startRevision: now + 2 });
    try {
      await kv.put({ key: key(p, "a"), value: bytes("skipped") });
      const { revision } = await kv.put({ key: key(p, "a"), value: bytes("seen") });
      assert.equal(revision, now + 2);
      await watch.until(revision);
      assert.deepEqual(watch.batches.flatMap((b) => describeEvents(p, b.events)), ["put a=seen"]);
    } finally {
      watch.cancel();
    }
  },

  "watch: delivery happens after the write returns, never during it": async (kv, p) => {
    let delivered = false;
    const watcher = kv.watch({ key: key(p, "a") }, {}, () => {
      delivered = true;
    });
    try {
      const pending = kv.put({ key: key(p, "a"), value: bytes("1") });
      assert.equal(delivered, false, "callback ran inside put()");
      await pending;
      await waitFor("the event", () => delivered);
    } finally {
      watcher.cancel();
    }
  },

  "watch: cancel stops delivery": async (kv, p) => {
    const cancelled = record(kv, { key: p, rangeEnd: prefixEnd(p) }, {});
    const control = record(kv, { key: p, rangeEnd: prefixEnd(p) }, {});
    try {
      const r1 = (await kv.put({ key: key(p, "a"), value: bytes("1") })).revision;
      await cancelled.until(r1);
      cancelled.cancel();
      const r2 = (await kv.put({ key: key(p, "a"), value: bytes("2") })).revision;
      await control.until(r2);
      assert.deepEqual(cancelled.batches.map((b) => b.revision), [r1]);
    } finally {
      cancelled.cancel();
      control.cancel();
    }
  },

  "compact: history before the compacted revision is gone": async (kv, p) => {
    const r1 = (await kv.put({ key: key(p, "a"), value: bytes("1") })).revision;
    const r2 = (await kv.put({ key: key(p, "a"), value: bytes("2") })).revision;
    const r3 = (await kv.put({ key: key(p, "a"), value: bytes("3") })).revision;
    await kv.compact(r2);
    assert.throws(
      () => kv.watch({ key: key(p, "a") }, { startRevision: r1 }, () => {}),
      (error: unknown) => error instanceof CompactedError && error.compactRevision === r2,
    );
    const watch = record(kv, { key: key(p, "a") }, { startRevision: r2 });
    try {
      await watch.until(r3);
      assert.deepEqual(watch.batches.map((b) => b.revision), [r2, r3]);
    } finally {
      watch.cancel();
    }
    // Compaction drops history, not current keys.
    assert.equal(text((await get(kv, key(p, "a")))!.value), "3");
    await assert.rejects(kv.compact(r3 + 1000), "compacting a future revision");
  },

  "concurrency: compare-and-swap increments from concurrent clients add up": async (kv, p) => {
    const counter = key(p, "counter");
    await kv.put({ key: counter, value: bytes("0") });
    const workers = 4;
    const increments = 10;
    const increment = async () => {
      for (let attempt = 0; attempt < 1000; attempt++) {
        const current = (await get(kv, counter))!;
        const next = Number(text(current.value)) + 1;
        const response = await kv.txn({
          compare: [{
            key: counter,
            target: "modRevision",
            result: "==",
            value: current.modRevision,
          }],
          success: [{ put: { key: counter, value: bytes(String(next)) } }],
        });
        if (response.succeeded) return;
      }
      throw new Error("compare-and-swap did not succeed in 1000 attempts");
    };
    await Promise.all(
      Array.from({ length: workers }, async () => {
        for (let i = 0; i < increments; i++) await increment();
      }),
    );
    const final = (await get(kv, counter))!;
    assert.equal(text(final.value), String(workers * increments));
    assert.equal(final.version, workers * increments + 1);
  },
};
