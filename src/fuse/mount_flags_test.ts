import assert from "node:assert/strict";
import { atimeRules, parseMountInfo } from "./mount_flags.ts";

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
