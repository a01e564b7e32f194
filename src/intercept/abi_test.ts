/** Checks src/intercept/abi.ts against lib/preload/skyfs_abi.h, compiled by gcc. */

import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import {
  ABI_MAGIC,
  ABI_VERSION,
  decodeRequest,
  encodeReply,
  Op,
  PreloadStats,
  Reply,
  Request,
  SOCKET_PREFIX,
} from "./abi.ts";

const header = fileURLToPath(new URL("../../lib/preload/skyfs_abi.h", import.meta.url));

function cFieldName(name: string): string {
  return name.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
}

Deno.test("abi: TypeScript offsets, sizes and constants match skyfs_abi.h", async () => {
  const lines: string[] = [];
  const emit = (label: string, expr: string) =>
    lines.push(`printf("%s %llu\\n", "${label}", (unsigned long long)(${expr}));`);
  const structs: [string, Record<string, number>][] = [
    ["skyfs_request", Request],
    ["skyfs_reply", Reply],
    ["skyfs_preload_stats", PreloadStats],
  ];
  const expected = new Map<string, number>();
  for (const [struct, layout] of structs) {
    for (const [field, value] of Object.entries(layout)) {
      const label = `${struct}.${field}`;
      expected.set(label, value);
      emit(
        label,
        field === "size"
          ? `sizeof(struct ${struct})`
          : `offsetof(struct ${struct}, ${cFieldName(field)})`,
      );
    }
  }
  for (
    const [label, expr, value] of [
      ["version", "SKYFS_ABI_VERSION", ABI_VERSION],
      ["magic", "SKYFS_ABI_MAGIC", ABI_MAGIC],
      ["GET_FD", "SKYFS_OP_GET_FD", Op.GET_FD],
      ["WROTE", "SKYFS_OP_WROTE", Op.WROTE],
      ["COUNTS", "SKYFS_OP_COUNTS", Op.COUNTS],
      ["prefix_length", "sizeof(SKYFS_SHIM_SOCKET_PREFIX) - 1", SOCKET_PREFIX.length],
    ] as const
  ) {
    expected.set(label, value);
    emit(label, expr);
  }
  const dir = await Deno.makeTempDir({ prefix: "skyfs-abi-" });
  try {
    const source = `${dir}/abi.c`;
    await Deno.writeTextFile(
      source,
      `#include <stddef.h>\n#include <stdio.h>\n#include "${header}"\nint main(void) {\n${
        lines.join("\n")
      }\nreturn 0;\n}\n`,
    );
    const compile = await new Deno.Command("gcc", {
      args: ["-Wall", "-Werror", "-o", `${dir}/abi`, source],
    }).output();
    assert.equal(compile.code, 0, new TextDecoder().decode(compile.stderr));
    const run = await new Deno.Command(`${dir}/abi`).output();
    const actual = new Map(
      new TextDecoder().decode(run.stdout).trim().split("\n").map((line) => {
        const [label, value] = line.split(" ");
        return [label, Number(value)] as const;
      }),
    );
    assert.deepEqual(actual, expected);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

function request(fields: Partial<Record<keyof typeof Request, number | bigint>>): Uint8Array {
  const bytes = new Uint8Array(Request.size);
  const view = new DataView(bytes.buffer);
  view.setUint32(Request.magic, Number(fields.magic ?? ABI_MAGIC), true);
  view.setUint16(Request.version, Number(fields.version ?? ABI_VERSION), true);
  view.setUint16(Request.op, Number(fields.op ?? Op.GET_FD), true);
  view.setInt32(Request.fd, Number(fields.fd ?? 3), true);
  view.setUint32(Request.reserved, Number(fields.reserved ?? 0), true);
  view.setBigUint64(Request.ino, BigInt(fields.ino ?? 42), true);
  view.setBigUint64(Request.seq, BigInt(fields.seq ?? 7), true);
  return bytes;
}

Deno.test("abi: a well-formed request decodes", () => {
  assert.deepEqual(decodeRequest(request({ op: Op.WROTE, fd: 9, ino: 1234, seq: 99 })), {
    op: Op.WROTE,
    fd: 9,
    ino: 1234,
    seq: 99n,
    reserved: 0,
  });
  // COUNTS: reads in `ino` (0 allowed), writes in `reserved`, fd 0.
  assert.deepEqual(
    decodeRequest(request({ op: Op.COUNTS, fd: 0, ino: 0, reserved: 17, seq: 5 })),
    { op: Op.COUNTS, fd: 0, ino: 0, seq: 5n, reserved: 17 },
  );
  assert.throws(() => decodeRequest(request({ op: Op.COUNTS, fd: 3 })), /COUNTS with fd 3/);
});

Deno.test("abi: malformed requests are rejected with the reason", () => {
  assert.throws(() => decodeRequest(new Uint8Array(31)), /31 bytes/);
  assert.throws(() => decodeRequest(request({ magic: 1 })), /magic/);
  assert.throws(() => decodeRequest(request({ version: 2 })), /version 2/);
  assert.throws(() => decodeRequest(request({ op: 77 })), /unknown op 77/);
  assert.throws(() => decodeRequest(request({ fd: -1 })), /negative fd/);
  assert.throws(() => decodeRequest(request({ reserved: 5 })), /reserved/);
  assert.throws(() => decodeRequest(request({ ino: 0 })), /bad ino/);
});

Deno.test("abi: replies carry status, flags and the request's seq", () => {
  const view = new DataView(encodeReply(Op.GET_FD, 5n, -13, 0o2002).buffer);
  assert.equal(view.getUint32(Reply.magic, true), ABI_MAGIC);
  assert.equal(view.getInt32(Reply.status, true), -13);
  assert.equal(view.getUint32(Reply.openFlags, true), 0o2002);
  assert.equal(view.getBigUint64(Reply.seq, true), 5n);
});
