/**
 * A suite run on every variant of the targets: ext4, skyfs with FUSE passthrough (the default as
 * root) and skyfs with `--passthrough off`. A cluster node (SKYFS_TEST_META) never has
 * passthrough, so there skyfs runs once.
 * @module
 */

import { join } from "node:path";
import { openTarget, type Target, type TargetKind, targetKinds, testMeta } from "../_harness.ts";

/** Removes the indentation common to every non-blank line of a snippet. */
export function dedent(code: string): string {
  const lines = code.replace(/^\n/, "").split("\n");
  const cut = Math.min(...lines.filter((l) => l.trim()).map((l) => l.match(/^ */)![0].length));
  return lines.map((l) => l.slice(cut)).join("\n");
}

/** Every variant a case runs on: ext4, skyfs with passthrough (the default as root), and skyfs
 * with `--passthrough off`; a cluster node never has passthrough, so only one skyfs variant. */
function variants(): { name: string; kind: TargetKind; args: string[] }[] {
  const all: { name: string; kind: TargetKind; args: string[] }[] = [];
  for (const kind of targetKinds()) {
    if (kind === "ext4") all.push({ name: "ext4", kind, args: [] });
    else {
      all.push({ name: "skyfs", kind, args: [] });
      if (testMeta() === undefined) {
        all.push({ name: "skyfs passthrough off", kind, args: ["--passthrough", "off"] });
      }
    }
  }
  return all;
}

type Case = (dir: string, target: Target) => Promise<void>;

/** One Deno test per variant, one step per case, each case in a fresh directory. */
export function suiteOnVariants(name: string, cases: Record<string, Case>): void {
  for (const variant of variants()) {
    Deno.test({
      name: `${name} [${variant.name}]`,
      sanitizeOps: false,
      sanitizeResources: false,
      sanitizeExit: false,
      async fn(t) {
        const target = await openTarget(variant.kind, { extraArgs: variant.args });
        try {
          let index = 0;
          for (const [caseName, body] of Object.entries(cases)) {
            const dir = join(target.dir, `c${index++}`);
            await t.step(caseName, async () => {
              await Deno.mkdir(dir);
              await Deno.chmod(dir, 0o755);
              await body(dir, target);
            });
          }
        } finally {
          await target.close();
        }
      },
    });
  }
}
