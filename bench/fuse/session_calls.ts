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
import process from "node:process";
import { parseArgs } from "node:util";

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

interface Side {
  name: string;
  jobs: [string, () => void][];
  cleanup: () => void;
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

const median = (values: number[]) => [...values].sort((a, b) => a - b)[values.length >> 1];
const range = (values: number[]) =>
  `${Math.min(...values).toFixed(0)}-${Math.max(...values).toFixed(0)}`;

const sides: Side[] = [];
try {
  for (const tree of positionals) sides.push(await side(tree));
  const load = async () => (await Deno.readTextFile("/proc/loadavg")).split(" ").slice(0, 3);
  console.log(`load at start ${(await load()).join(" ")}; ${calls} calls x ${batches} batches`);
  for (let job = 0; job < sides[0].jobs.length; job++) {
    const wall = sides.map(() => [] as number[]);
    const cpu = sides.map(() => [] as number[]);
    for (const s of sides) for (let i = 0; i < 20000; i++) s.jobs[job][1](); // JIT, FFI fast path
    for (let b = 0; b < batches; b++) {
      for (let k = 0; k < sides.length; k++) {
        const at = (k + b) % sides.length;
        const call = sides[at].jobs[job][1];
        const c0 = process.cpuUsage();
        const t0 = performance.now();
        for (let i = 0; i < calls; i++) call();
        const t1 = performance.now();
        const c1 = process.cpuUsage();
        wall[at].push(((t1 - t0) * 1e6) / calls);
        cpu[at].push(((c1.user + c1.system - c0.user - c0.system) * 1e3) / calls);
      }
    }
    for (let at = 0; at < sides.length; at++) {
      const ratio = at === 0
        ? ""
        : `  cpu ratio to first ${median(cpu[at].map((v, b) => v / cpu[0][b])).toFixed(3)}, wall ${
          median(wall[at].map((v, b) => v / wall[0][b])).toFixed(3)
        }`;
      console.log(
        `${sides[0].jobs[job][0].padEnd(13)} ${sides[at].name.padEnd(12)} cpu ${
          median(cpu[at]).toFixed(0).padStart(5)
        } ns (${range(cpu[at])})  wall ${median(wall[at]).toFixed(0).padStart(5)} ns (${
          range(wall[at])
        })${ratio}`,
      );
    }
  }
  console.log(`load at end ${(await load()).join(" ")}`);
} finally {
  for (const s of sides) s.cleanup();
}
