import assert from "node:assert/strict";
import { atimeRules, parseMountInfo, RuleHistory, TICK_MS } from "./mount_flags.ts";

// Lines as this kernel writes them (captured here after `mount -i -o remount,...`).
const RW = "45 27 0:40 / /tmp/a\\040b rw,nosuid,nodev,relatime - fuse.skyfs skyfs " +
  "rw,user_id=0,group_id=0,default_permissions,allow_other";
const SB_RO = "45 27 0:40 / /tmp/m ro,nosuid,nodev,relatime - fuse.skyfs skyfs " +
  "ro,user_id=0,group_id=0,default_permissions,allow_other";
const BIND_RO = "46 27 0:40 / /tmp/m ro,nosuid,nodev,relatime shared:1 - fuse.skyfs skyfs " +
  "rw,user_id=0,group_id=0";
const NOATIME = "47 27 0:40 / /tmp/m rw,nosuid,nodev,noatime - fuse.skyfs skyfs rw";
const STRICT_NODIR = "48 27 0:40 / /tmp/m rw,nosuid,nodev,nodiratime - fuse.skyfs skyfs rw";

Deno.test("mountinfo: fields, escapes and optional fields", () => {
  const [a, b] = parseMountInfo(`${RW}\n${BIND_RO}\n`);
  assert.equal(a.mountPoint, "/tmp/a b");
  assert.equal(a.fsType, "fuse.skyfs");
  assert.deepEqual(a.options, ["rw", "nosuid", "nodev", "relatime"]);
  assert.equal(b.mountId, 46);
  assert.equal(b.fsType, "fuse.skyfs");
  assert.deepEqual(b.superOptions, ["rw", "user_id=0", "group_id=0"]);
});

Deno.test("mountinfo: the atime rule of each kind of mount", () => {
  const rules = (line: string) => atimeRules(parseMountInfo(line)[0]);
  assert.deepEqual(rules(RW), { file: "relatime", dir: "relatime" });
  assert.deepEqual(rules(SB_RO), { file: "readonly", dir: "readonly" });
  assert.deepEqual(rules(BIND_RO), { file: "readonly", dir: "readonly" });
  assert.deepEqual(rules(NOATIME), { file: "noatime", dir: "noatime" });
  assert.deepEqual(rules(STRICT_NODIR), { file: "strictatime", dir: "noatime" });
});

Deno.test("rule history: an access is weighed by the rule when it happened, the least moving near a change", () => {
  const rw = { file: "relatime", dir: "relatime" } as const;
  const ro = { file: "readonly", dir: "readonly" } as const;
  const h = new RuleHistory(rw, 1000);
  h.quiet(2000); // a look saw relatime still
  h.changed(ro, 3000); // remount,ro somewhere in (2000, 3000]
  h.quiet(4000);
  h.changed(rw, 6000); // remount,rw somewhere in (4000, 6000]
  h.quiet(9000);
  assert.equal(h.now.file, "relatime");
  // Before the first change could have happened: relatime.
  assert.equal(h.at(false, 1500), "relatime");
  // Where the change to ro may have fallen, and during ro: never moves.
  assert.equal(h.at(false, 2500), "readonly");
  assert.equal(h.at(true, 3500), "readonly");
  // Where the change back may have fallen: still never (the read may have come before it).
  assert.equal(h.at(false, 5000), "readonly");
  assert.equal(h.at(false, 6000.5), "readonly"); // Date.now() truncates: the look was by 6001
  // After the look that saw rw: relatime again, now and later.
  assert.equal(h.at(false, 6001), "relatime");
  assert.equal(h.at(false, 20000), "relatime");
  // Before a change's earliest time by less than a tick: a coarse atime behind the read.
  assert.equal(h.at(false, 2000 - TICK_MS + 1), "readonly");
  assert.equal(h.at(false, 2000 - TICK_MS), "relatime");
  // The same rules found again record nothing.
  h.changed(rw, 10000);
  assert.equal(h.at(false, 9500), "relatime");
});

Deno.test("rule history: strictatime then relatime around one change gives relatime", () => {
  const h = new RuleHistory({ file: "strictatime", dir: "noatime" }, 0);
  h.changed({ file: "relatime", dir: "relatime" }, 100);
  assert.equal(h.at(false, 50), "relatime");
  assert.equal(h.at(true, 50), "noatime");
  assert.equal(h.at(false, -1000), "strictatime");
});
