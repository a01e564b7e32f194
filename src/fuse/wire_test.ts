/** Tests of the FUSE codec against request bytes captured from Linux 6.18 (protocol 7.45). */

import assert from "node:assert/strict";
import {
  attrReply,
  createReply,
  cstrings,
  decodeInitIn,
  decodeLkIn,
  decodeReadIn,
  decodeRequest,
  decodeSetattrIn,
  direntReply,
  ENTRY_OUT_SIZE,
  entryReply,
  Fattr,
  finishReply,
  InitFlag,
  initReply,
  listingPlusReply,
  listingReply,
  notifyIncEpoch,
  notifyInvalEntry,
  Opcode,
  OUT_HEADER_SIZE,
  readReplyBuffer,
  recycleReply,
  statusReply,
  u64,
  WRITE_IN_SIZE,
} from "./wire.ts";
import type { Attr, DirEntry } from "../vfs/types.ts";
import { DirListingBuilder } from "../vfs/listing.ts";

function hex(text: string): Uint8Array {
  return new Uint8Array(text.match(/../g)!.map((b) => parseInt(b, 16)));
}

// Captured with a spike daemon: `echo hello > mnt/a.txt; cat mnt/a.txt; ls mnt` as root.
const captured = {
  init: "680000001a0000000200000000000000000000000000000000000000000000000000000000000000" +
    "070000002d00000000000200fbffff73fd0500000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
  lookup: "2e000000010000000800000000000000010000000000000000000000000000002a1c000000000000" +
    "612e74787400",
  create: "3e000000230000000a00000000000000010000000000000000000000000000002a1c000000000000" +
    "41820000a48100001200000000000000612e74787400",
  write: "56000000100000001000000000000000020000000000000000000000000000002a1c000000000000" +
    "0200000000000000000000000000000006000000000000000000000000000000018000000000000068656c6c6f0a",
  read: "500000000f0000001c0000000000000002000000000000000000000000000000651c000000000000" +
    "02000000000000000000000000000000001000000000000000000000000000000080000000000000",
  readdirplus: "500000002c000000240000000000000001000000000000000000000000000000661c000000000000" +
    "01000000000000000000000000000000008000000000000000000000000000000088010000000000",
};

Deno.test("INIT request: version 7.45 and the kernel's offered flags", () => {
  const req = decodeRequest(hex(captured.init));
  assert.equal(req.header.opcode, Opcode.INIT);
  assert.equal(req.header.unique, 2n);
  const init = decodeInitIn(req.view);
  assert.deepEqual([init.major, init.minor], [7, 45]);
  assert.equal(init.maxReadahead, 0x20000);
  assert.ok(init.flags & InitFlag.INIT_EXT);
  assert.ok(init.flags & InitFlag.PARALLEL_DIROPS);
  assert.ok(init.flags2 & (1 << 5), "kernel offers passthrough");
});

Deno.test("LOOKUP request: parent and NUL-terminated name", () => {
  const req = decodeRequest(hex(captured.lookup));
  assert.equal(req.header.opcode, Opcode.LOOKUP);
  assert.equal(req.header.nodeid, 1);
  assert.equal(req.header.pid, 0x1c2a);
  assert.equal(new TextDecoder().decode(cstrings(req.body, 0, 1)[0]), "a.txt");
});

Deno.test("CREATE request: flags, mode, umask and name", () => {
  const req = decodeRequest(hex(captured.create));
  assert.equal(req.header.opcode, Opcode.CREATE);
  const v = req.view;
  assert.equal(v.getUint32(0, true), 0o101101); // O_WRONLY|O_CREAT|O_TRUNC|O_LARGEFILE...
  assert.equal(v.getUint32(4, true), 0o100644);
  assert.equal(v.getUint32(8, true), 0o22);
  assert.equal(new TextDecoder().decode(cstrings(req.body, 16, 1)[0]), "a.txt");
});

Deno.test("WRITE request: fh, offset, size and the data after fuse_write_in", () => {
  const req = decodeRequest(hex(captured.write));
  const args = decodeReadIn(req.view);
  assert.deepEqual([args.fh, args.offset, args.size], [2, 0, 6]);
  const data = req.body.subarray(WRITE_IN_SIZE, WRITE_IN_SIZE + args.size);
  assert.equal(new TextDecoder().decode(data), "hello\n");
});

Deno.test("READ and READDIRPLUS requests: fh, offset, size", () => {
  const read = decodeReadIn(decodeRequest(hex(captured.read)).view);
  assert.deepEqual([read.fh, read.offset, read.size], [2, 0, 4096]);
  const dir = decodeRequest(hex(captured.readdirplus));
  assert.equal(dir.header.opcode, Opcode.READDIRPLUS);
  assert.equal(decodeReadIn(dir.view).size, 32768);
});

Deno.test("decodeRequest rejects truncated and lying headers", () => {
  assert.throws(() => decodeRequest(new Uint8Array(10)), RangeError);
  const bytes = hex(captured.lookup);
  new DataView(bytes.buffer).setUint32(0, 4096, true);
  assert.throws(() => decodeRequest(bytes), RangeError);
});

Deno.test("SETATTR and LK bodies decode at the kernel's offsets", () => {
  const body = new Uint8Array(88);
  const v = new DataView(body.buffer);
  v.setUint32(0, Fattr.MODE | Fattr.MTIME_NOW, true);
  v.setBigUint64(16, 5n * 2n ** 32n, true);
  v.setUint32(68, 0o100600, true);
  const s = decodeSetattrIn(v);
  assert.equal(s.mode, 0o100600);
  assert.equal(s.size, 5 * 2 ** 32);
  const lk = new Uint8Array(48);
  const lv = new DataView(lk.buffer);
  lv.setBigUint64(16, 100n, true);
  lv.setBigUint64(24, 0x7fffffffffffffffn, true);
  lv.setUint32(32, 1, true);
  lv.setUint32(40, 1, true);
  const decoded = decodeLkIn(lv);
  assert.deepEqual([decoded.lock.start, decoded.lock.type, decoded.lkFlags], [100, 1, 1]);
});

const attr: Attr = {
  ino: 7,
  mode: 0o100644,
  nlink: 1,
  uid: 1000,
  gid: 100,
  rdev: 0,
  size: 5 * 2 ** 32,
  blocks: 8,
  blksize: 4096,
  atime: { sec: 1, nsec: 2 },
  mtime: { sec: 3, nsec: 4 },
  ctime: { sec: 5, nsec: 6 },
  btime: { sec: 0, nsec: 0 },
};

Deno.test("entry and create replies: layout of fuse_entry_out + fuse_open_out", () => {
  const reply = finishReply(
    createReply(attr, { entrySeconds: 1.5, attrSeconds: 2 }, { fh: 9, openFlags: 2 }),
    42n,
    0,
  );
  const v = new DataView(reply.buffer);
  assert.equal(v.getUint32(0, true), OUT_HEADER_SIZE + ENTRY_OUT_SIZE + 16);
  assert.equal(v.getBigUint64(8, true), 42n);
  const o = OUT_HEADER_SIZE;
  assert.equal(v.getBigUint64(o, true), 7n); // nodeid
  assert.equal(v.getBigUint64(o + 16, true), 1n); // entry_valid
  assert.equal(v.getUint32(o + 32, true), 500_000_000); // entry_valid_nsec
  assert.equal(v.getBigUint64(o + 40 + 8, true), 5n * 2n ** 32n); // attr.size
  assert.equal(v.getUint32(o + 40 + 60, true), 0o100644); // attr.mode
  assert.equal(v.getBigUint64(o + ENTRY_OUT_SIZE, true), 9n); // fh
  assert.equal(v.getUint32(o + ENTRY_OUT_SIZE + 8, true), 2); // FOPEN_KEEP_CACHE
});

Deno.test("negative entry: nodeid 0 with an entry timeout", () => {
  const v = new DataView(entryReply(null, { entrySeconds: 10, attrSeconds: 10 }).buffer);
  assert.equal(v.getBigUint64(OUT_HEADER_SIZE, true), 0n);
  assert.equal(v.getBigUint64(OUT_HEADER_SIZE + 16, true), 10n);
});

Deno.test("status reply carries the negative errno", () => {
  const v = new DataView(statusReply(5n, 2).buffer);
  assert.deepEqual([v.getUint32(0, true), v.getInt32(4, true)], [16, -2]);
});

Deno.test("INIT reply: 64-byte body with max_write, max_pages and max_stack_depth", () => {
  const reply = initReply({
    minor: 45,
    maxReadahead: 0x20000,
    flags: InitFlag.MAX_PAGES | InitFlag.INIT_EXT,
    flags2: 1 << 5,
    maxBackground: 128,
    congestionThreshold: 96,
    maxWrite: 1 << 20,
    timeGran: 1,
    maxPages: 256,
    maxStackDepth: 1,
  });
  assert.equal(reply.byteLength, OUT_HEADER_SIZE + 64);
  const v = new DataView(reply.buffer, OUT_HEADER_SIZE);
  assert.equal(v.getUint32(20, true), 1 << 20);
  assert.equal(v.getUint16(28, true), 256);
  assert.equal(v.getUint32(32, true), 1 << 5);
  assert.equal(v.getUint32(36, true), 1);
});

Deno.test("dirent packing stops at the size limit and aligns to 8 bytes", () => {
  const enc = new TextEncoder();
  const entries = ["a", "bbbbbbbbb", "c"].map((name, i) => ({
    ino: 10 + i,
    name: enc.encode(name),
    type: 0o100000,
    nextOffset: i + 1,
    attr: { ...attr, ino: 10 + i },
  }));
  const plain = direntReply(entries, 32 + 40, false, { entrySeconds: 1, attrSeconds: 1 });
  assert.equal(plain.packed, 2); // 32 + 40 bytes: "a" (32) and "bbbbbbbbb" (24+9 -> 40)
  const v = new DataView(plain.reply.buffer, OUT_HEADER_SIZE);
  assert.equal(v.getBigUint64(0, true), 10n);
  assert.equal(v.getBigUint64(8, true), 1n);
  assert.equal(v.getUint32(20, true), 8); // DT_REG
  const plus = direntReply(entries, 1000, true, { entrySeconds: 1, attrSeconds: 1 });
  assert.equal(plus.packed, 3);
  assert.equal(new DataView(plus.reply.buffer).getBigUint64(OUT_HEADER_SIZE, true), 10n);
});

Deno.test("listing replies: the same bytes as packing entry by entry, from any offset and size", () => {
  const enc = new TextEncoder();
  const types = [0o100000, 0o040000, 0o120000, 0o010000];
  const entries: DirEntry[] = [];
  // Names of 1 to 300 bytes (the byte-by-byte copy up to 32, set() beyond), some not ASCII, and
  // inode numbers above 2^32.
  for (let i = 0; i < 300; i++) {
    const name = i === 0 ? "." : i === 1 ? ".." : `${"é".repeat(i % 7)}n${i}${"x".repeat(i % 41)}` +
      (i % 50 === 3 ? "y".repeat(250) : "");
    entries.push({
      ino: i * 2 ** 33 + 7 * i + 1,
      name: enc.encode(name),
      type: types[i % 4],
      nextOffset: i + 1,
    });
  }
  for (let round = 0; round < 2; round++) {
    // The second round builds in a scratch an earlier listing left filled with other bytes
    // (padding must be zeroed).
    if (round === 1) {
      const other = new DirListingBuilder();
      for (let i = 0; i < 400; i++) {
        other.add(i, 0o100000, enc.encode("z".repeat(i % 60)), 0, i % 60);
      }
      other.finish();
    }
    const builder = new DirListingBuilder();
    for (const e of entries) builder.add(e.ino, e.type, e.name, 0, e.name.length);
    const listing = builder.finish();
    assert.equal(listing.count, entries.length);
    assert.deepEqual(listing.entries(0, listing.count), entries);
    for (const from of [0, 1, 2, 77, 299, 300]) {
      for (const size of [0, 31, 32, 100, 4096, 32768]) {
        const want = direntReply(entries.slice(from), size, false, noValidity);
        assert.deepEqual(
          listingReply(listing, from, size),
          want.reply,
          `from ${from} size ${size}`,
        );
        // READDIRPLUS: "." and ".." and known inodes without attributes, one entry left out.
        const plusEntries = entries.slice(from, from + 40);
        const attrs = plusEntries.map((e, k) =>
          from + k < 2 || k % 3 === 0 ? null : k === 5 ? undefined : { ...attr, ino: e.ino }
        );
        const kept = plusEntries.flatMap((e, k) =>
          attrs[k] === undefined ? [] : [{ ...e, attr: attrs[k] ?? undefined }]
        );
        const plus = listingPlusReply(listing, from, attrs, () => validity);
        const old = direntReply(kept, 1 << 20, true, validity);
        assert.equal(plus.byteLength, old.reply.byteLength);
        // The old packing wrote entry_valid for entries without attributes (node id 0, which the
        // kernel ignores); the listing leaves their entry_out zero. Compare all else.
        let at = OUT_HEADER_SIZE;
        for (const e of kept) {
          const o = new DataView(old.reply.buffer, at);
          if (!e.attr) o.setBigUint64(16, 0n, true), o.setUint32(32, 0, true);
          at += ENTRY_OUT_SIZE + ((24 + e.name.length + 7) & ~7);
        }
        assert.deepEqual(plus, old.reply, `plus from ${from}`);
      }
    }
  }
});

const noValidity = { entrySeconds: 0, attrSeconds: 0 };
const validity = { entrySeconds: 1, attrSeconds: 2 };

Deno.test("notify inval entry: code in the error field, unique 0, name NUL-terminated", () => {
  const msg = notifyInvalEntry(1, new TextEncoder().encode("x"));
  const v = new DataView(msg.buffer);
  assert.deepEqual([v.getUint32(0, true), v.getInt32(4, true), v.getBigUint64(8, true)], [
    msg.byteLength,
    3,
    0n,
  ]);
  assert.equal(msg[msg.byteLength - 1], 0);
});

Deno.test("notify inc epoch: a bare header with code 8 (FUSE_NOTIFY_INC_EPOCH, 7.44)", () => {
  const msg = notifyIncEpoch();
  const v = new DataView(msg.buffer);
  assert.equal(msg.byteLength, OUT_HEADER_SIZE);
  assert.deepEqual([v.getUint32(0, true), v.getInt32(4, true), v.getBigUint64(8, true)], [
    16,
    8,
    0n,
  ]);
});

Deno.test("READ reply buffers are reused with a zeroed header (the server finishes only those)", () => {
  const first = readReplyBuffer(4096);
  finishReply(first.subarray(0, OUT_HEADER_SIZE + 10), 7n, 0);
  first.fill(0xaa, OUT_HEADER_SIZE);
  recycleReply(first);
  const second = readReplyBuffer(1 << 20);
  assert.equal(second.buffer, first.buffer);
  assert.deepEqual([...second.subarray(0, OUT_HEADER_SIZE)], new Array(OUT_HEADER_SIZE).fill(0));
  // A buffer not from the pool (bigger than a read can be) is left alone.
  const other = readReplyBuffer((1 << 20) + 1);
  recycleReply(other);
  assert.notEqual(readReplyBuffer(16).buffer, other.buffer);
});

Deno.test("attributes: 64-bit fields written without BigInt match the BigInt encoding", () => {
  const big: Attr = {
    ...attr,
    ino: 2 ** 52 + 3,
    size: 2 ** 53 - 1,
    blocks: 2 ** 33 + 5,
    atime: { sec: -5, nsec: 7 },
    mtime: { sec: -(2 ** 40) - 1, nsec: 0 },
    ctime: { sec: 2 ** 35 + 9, nsec: 999_999_999 },
  };
  const v = new DataView(attrReply(big, 2.25).buffer);
  const o = OUT_HEADER_SIZE;
  assert.equal(v.getBigUint64(o, true), 2n); // attr_valid
  assert.equal(v.getUint32(o + 8, true), 250_000_000);
  const a = o + 16;
  assert.deepEqual(
    [0, 8, 16].map((at) => v.getBigUint64(a + at, true)),
    [2n ** 52n + 3n, 2n ** 53n - 1n, 2n ** 33n + 5n],
  );
  assert.deepEqual(
    [24, 32, 40].map((at) => v.getBigInt64(a + at, true)),
    [-5n, -(2n ** 40n) - 1n, 2n ** 35n + 9n],
  );
  assert.equal(v.getUint32(a + 56, true), 999_999_999);
});

Deno.test("u64 and the request's node id read above 32 bits without BigInt", () => {
  const bytes = new Uint8Array(48);
  const v = new DataView(bytes.buffer);
  v.setUint32(0, 48, true);
  v.setUint32(4, Opcode.GETATTR, true);
  v.setBigUint64(16, 2n ** 40n + 17n, true);
  v.setBigUint64(40, 2n ** 52n + 1n, true);
  const request = decodeRequest(bytes);
  assert.equal(request.header.nodeid, 2 ** 40 + 17);
  assert.equal(u64(request.view, 0), 2 ** 52 + 1);
});

Deno.test("small replies come from a pool, zeroed, once the server gave theirs back", () => {
  const first = entryReply(attr, { entrySeconds: 1, attrSeconds: 1 });
  finishReply(first, 9n, 0);
  first.fill(0xee);
  recycleReply(first);
  const second = statusReply(3n, 0);
  assert.equal(second.buffer, first.buffer, "the buffer given back is reused");
  assert.equal(second.byteLength, OUT_HEADER_SIZE);
  recycleReply(second);
  const third = entryReply(null, { entrySeconds: 1, attrSeconds: 1 });
  assert.equal(third.buffer, first.buffer);
  assert.deepEqual(
    [...third.subarray(OUT_HEADER_SIZE + 40)],
    new Array(ENTRY_OUT_SIZE - 40).fill(0),
    "a reused buffer is zeroed: a negative entry's attributes are zeros",
  );
  // Given back twice (a bug elsewhere): still handed out once.
  recycleReply(third);
  recycleReply(third);
  const a = statusReply(1n, 0);
  const b = statusReply(2n, 0);
  assert.notEqual(a.buffer, b.buffer);
});

Deno.test("cstrings: each string a copy (not a view of the request), also without a final NUL", () => {
  const body = new TextEncoder().encode("\0\0\0\0old\0new-name\0");
  const [a, b] = cstrings(body, 4, 2);
  body.fill(0x78);
  assert.equal(new TextDecoder().decode(a), "old");
  assert.equal(new TextDecoder().decode(b), "new-name");
  const open = new TextEncoder().encode("only");
  const [c, d] = cstrings(open, 0, 2);
  assert.equal(new TextDecoder().decode(c), "only");
  assert.equal(d.length, 0);
  assert.deepEqual(cstrings(new Uint8Array(0), 0, 1).map((x) => x.length), [0]);
});
