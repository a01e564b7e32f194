/**
 * The cost of one synchronous call of src/io/libc.ts (src/io/README.md, "Synchronous system calls
 * and errno"), for one or more checkouts loaded into the same process: openC + close of an
 * existing file, pread of 4 KiB and of 0 bytes from the page cache, fstat, statC of an existing
 * path and statC of a missing one with `quiet` ENOENT (the failure path). Each batch of CALLS calls
 * runs every checkout in turn (the order rotating from batch to batch); prints, per call and
 * checkout, the median and range over BATCHES batches in ns per call of wall time and of process
 * CPU time, the median of the per-batch ratios to the first checkout, and the load average.
 *
 * Usage: deno run -A bench/io/libc_calls.ts [--calls 100000] [--batches 9] [--dir /var/tmp]
 *        CHECKOUT [CHECKOUT...]      (e.g. /work/base /work/hN: before, then after)
 * @module
 */
import { parseArgs } from "node:util";
import { runCallAb, type Side } from "../call_ab.ts";

const { values, positionals } = parseArgs({
  args: Deno.args,
  allowPositionals: true,
  options: {
    calls: { type: "string", default: "100000" },
    batches: { type: "string", default: "9" },
    dir: { type: "string", default: "/var/tmp" },
    help: { type: "boolean", short: "h" },
  },
});
const usage = "usage: libc_calls.ts [--calls N] [--batches N] [--dir DIR] CHECKOUT [CHECKOUT...]";
if (values.help || positionals.length === 0) {
  console.log(usage);
  Deno.exit(values.help ? 0 : 2);
}
const calls = Number(values.calls);
const batches = Number(values.batches);
if (!Number.isInteger(calls) || calls < 1 || !Number.isInteger(batches) || batches < 1) {
  console.error(`libc_calls: --calls and --batches must be whole numbers above 0; ${usage}`);
  Deno.exit(2);
}

const ENOENT = 2;
const dir = await Deno.makeTempDir({ dir: values.dir, prefix: "libc-calls-" });
const encode = (path: string) => new TextEncoder().encode(`${path}\0`);
const file = `${dir}/f`;
await Deno.writeFile(file, new Uint8Array(1 << 20).fill(1));

async function side(tree: string): Promise<Side> {
  const root = await Deno.realPath(tree).catch(() => {
    console.error(`libc_calls: no checkout at ${tree}: give the path of a skyfs worktree`);
    Deno.exit(2);
  });
  const libc = await import(`${root}/src/io/libc.ts`);
  const cFile = encode(file);
  const cMissing = encode(`${dir}/missing`);
  const fd = libc.open(file, libc.O_RDONLY);
  const page = new Uint8Array(4096);
  const none = new Uint8Array(0);
  return {
    name: tree,
    jobs: [
      ["openC+close", () => libc.close(libc.openC(cFile, libc.O_RDONLY))],
      ["pread 4 KiB", () => libc.pread(fd, page, 8192)],
      ["pread 0 B", () => libc.pread(fd, none, 0)],
      ["fstat", () => libc.fstat(fd)],
      ["statC", () => libc.statC(cFile)],
      ["statC ENOENT", () => libc.statC(cMissing, ENOENT)],
    ],
    cleanup: () => libc.close(fd),
  };
}

try {
  await runCallAb(
    async () => {
      const sides: Side[] = [];
      for (const tree of positionals) sides.push(await side(tree));
      return sides;
    },
    calls,
    batches,
  );
} finally {
  await Deno.remove(dir, { recursive: true });
}
