/**
 * A suite run on every variant of the targets: ext4, skyfs with FUSE passthrough (the default as
 * root) and skyfs with `--passthrough off` (the harness's `suite` with `passthroughModes`). On a
 * cluster node (SKYFS_TEST_META) skyfs runs once (no passthrough unless
 * cluster.passthrough_writes, off by default, is on).
 * @module
 */

import { suite, type Target } from "../_harness.ts";

export { dedent } from "./_py.ts";

type Case = (dir: string, target: Target) => Promise<void>;

/** One Deno test per variant, one step per case, each case in a fresh directory. */
export function suiteOnVariants(name: string, cases: Record<string, Case>): void {
  suite(
    name,
    Object.fromEntries(
      Object.entries(cases).map(([caseName, body]) => [
        caseName,
        ({ dir, target }) => body(dir, target),
      ]),
    ),
    { passthroughModes: true },
  );
}
