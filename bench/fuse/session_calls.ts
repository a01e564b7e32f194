/**
 * The cost of FuseDevice's system calls on /dev/fuse (src/fuse/session.ts; src/io/README.md,
 * "Synchronous system calls and errno"), for one or more checkouts loaded into the same process.
 * Each checkout mounts a scratch directory and reads the kernel's INIT, which it never answers,
 * so no request ever follows; then per call: `readRequest` of the empty queue (EAGAIN, reported
 * as 0: the read that ends every drain of the queue), `writeMessage` of a poll wake-up
 * notification for an unknown handle (the kernel accepts it: a successful write of 24 bytes), and
 * of a reply to a request that does not exist (ENOENT: the failure path). Each batch of CALLS
 * calls runs every checkout in turn (the order rotating from batch to batch); prints, per call and
 * checkout, the median and range over BATCHES batches in ns per call of wall time and of process
 * CPU time, the median of the per-batch ratios to the first checkout, and the load average.
 * A successful read is not measured: it needs requests, hence an answered INIT and a client
 * (bench/fuse/placement_cpu.py measures whole requests).
 *
 * Usage (root, /dev/fuse): deno run -A bench/fuse/session_calls.ts [--calls 100000]
 *        [--batches 9] CHECKOUT [CHECKOUT...]      (e.g. /work/base /work/hN: before, then after)
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
    help: { type: "boolean", short: "h" },
  },
});
const usage = "usage: session_calls.ts [--calls N] [--batches N] CHECKOUT [CHECKOUT...]";
if (values.help || positionals.length === 0) {
  console.log(usage);
  Deno.exit(values.help ? 0 : 2);
}
const calls = Number(values.calls);
const batches = Number(values.batches);
if (!Number.isInteger(calls) || calls < 1 || !Number.isInteger(batches) || batches < 1) {
  console.error(`session_calls: --calls and --batches must be whole numbers above 0; ${usage}`);
  Deno.exit(2);
}

async function side(tree: string): Promise<Side> {
  const root = await Deno.realPath(tree).catch(() => {
    console.error(`session_calls: no checkout at ${tree}: give the path of a skyfs worktree`);
    Deno.exit(2);
  });
  const { FuseDevice } = await import(`${root}/src/fuse/session.ts`);
  const mountpoint = await Deno.makeTempDir({ prefix: "session-calls-" });
  const device = FuseDevice.mount(mountpoint, {
    options: [],
    fsname: "session-calls",
    subtype: "session-calls",
  });
  const buffer = new Uint8Array(1 << 20);
  if (device.readRequest(buffer) <= 0) throw new Error("session_calls: no INIT from the kernel");
  const notify = new Uint8Array(24); // fuse_out_header + fuse_notify_poll_wakeup_out
  const n = new DataView(notify.buffer);
  n.setUint32(0, 24, true);
  n.setInt32(4, 1, true); // FUSE_NOTIFY_POLL; unique 0: a notification
  n.setBigUint64(16, 0xdeadn, true); // a handle nobody polls: accepted, nothing to wake
  const stray = new Uint8Array(16); // a reply to a request that does not exist
  const s = new DataView(stray.buffer);
  s.setUint32(0, 16, true);
  s.setBigUint64(8, 0x7fff_0000n, true);
  const expect = (got: number, want: number, what: string) => {
    if (got !== want) throw new Error(`session_calls: ${what} returned ${got}, not ${want}`);
  };
  return {
    name: tree,
    jobs: [
      ["read EAGAIN", () => expect(device.readRequest(buffer), 0, "readRequest")],
      ["write notify", () => expect(device.writeMessage(notify), 0, "notify")],
      ["write ENOENT", () => expect(device.writeMessage(stray), -2, "stray reply")],
    ],
    cleanup: () => {
      device.unmount();
      Deno.removeSync(mountpoint);
    },
  };
}

await runCallAb(
  async () => {
    const sides: Side[] = [];
    for (const tree of positionals) sides.push(await side(tree));
    return sides;
  },
  calls,
  batches,
);
