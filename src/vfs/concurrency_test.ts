/** Concurrent operations on one directory: every one commits exactly once, counts stay right. */

import assert from "node:assert/strict";
import { n, root, text, withVfs } from "./_testing.ts";
import type { FsError } from "../fs_error.ts";

Deno.test("parallel creates, mkdirs, renames and unlinks in one directory stay consistent", async () => {
  for (const validateReads of [false, true]) {
    await withVfs(async ({ vfs }) => {
      const d = await vfs.mkdir(root, 1, n("d"), 0o755, 0);
      await Promise.all(
        Array.from(
          { length: 40 },
          (_, i) =>
            i % 2
              ? vfs.mkdir(root, d.ino, n(`dir${i}`), 0o755, 0)
              : vfs.mknod(root, d.ino, n(`file${i}`), 0o100644, 0, 0),
        ),
      );
      assert.equal((await vfs.getattr(root, d.ino)).nlink, 2 + 20);
      // Everyone races for the same new name: exactly one wins.
      const results = await Promise.allSettled(
        Array.from({ length: 10 }, () => vfs.mkdir(root, d.ino, n("same"), 0o755, 0)),
      );
      assert.equal(results.filter((r) => r.status === "fulfilled").length, 1);
      for (const r of results) {
        if (r.status === "rejected") assert.equal((r.reason as FsError).errno, 17);
      }
      await Promise.all(
        Array.from(
          { length: 20 },
          (_, i) =>
            i % 2
              ? vfs.rename(root, d.ino, n(`dir${i}`), 1, n(`moved${i}`), 0)
              : vfs.unlink(root, d.ino, n(`file${i}`)),
        ),
      );
      assert.equal((await vfs.getattr(root, d.ino)).nlink, 2 + 10 + 1);
      const fh = await vfs.opendir(root, d.ino, 0);
      const names = (await vfs.readdir(root, d.ino, fh, 0, 1000, false)).map((e) => text(e.name));
      await vfs.releasedir(d.ino, fh);
      assert.equal(names.length, 2 + 10 + 10 + 1);
      assert.equal((await vfs.getattr(root, 1)).nlink, 3 + 10);
    }, { validateReads });
  }
});
