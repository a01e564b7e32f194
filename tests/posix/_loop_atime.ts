/**
 * A loop, not a CI test (the name has no _test): the relatime case of times_test.ts ("reads move
 * atime by the relatime rule", its Python read from that file) LOOP_N times (default 20) on one
 * mount per variant, one "LOOP ok|FAIL {result}" line per run (FAIL: second_read_kept false).
 * `SKYFS_TEST_FUSE_TRANSPORT=uring SKYFS_FUSE_TRANSPORT=uring SKYFS_TEST_TARGET=skyfs deno test -A tests/posix/_loop_atime.ts`
 * @module
 */
import { suite } from "../_harness.ts";
import { py } from "./_py.ts";

const src = Deno.readTextFileSync(new URL("./times_test.ts", import.meta.url));
const start = src.indexOf("`", src.indexOf('"reads move atime by the relatime rule'));
const code = src.slice(start + 1, src.indexOf("`", start + 1));
const N = Number(Deno.env.get("LOOP_N") ?? "20");
const cases: Record<string, (ctx: { dir: string }) => Promise<void>> = {};
for (let i = 0; i < N; i++) {
  cases[`run ${i}`] = async ({ dir }) => {
    const r = await py(dir, code);
    console.log(`LOOP ${r.second_read_kept ? "ok" : "FAIL"} ${JSON.stringify(r)}`);
  };
}
suite("loop atime", cases, { passthroughModes: true });
