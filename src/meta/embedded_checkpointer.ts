/**
 * Worker thread for EmbeddedKV: checkpoints the SQLite write-ahead log on its own connection, so
 * copying the log into the database file and the two fsyncs that go with it never stall the JS
 * thread serving FUSE requests (measured: 30-140 ms stalls every few hundred commits when SQLite
 * checkpoints inline).
 *
 * Protocol (node:worker_threads, so the store can unref the thread): `workerData` is
 * `{ path, intervalMs }`; the store posts "close" and the worker answers "closed" once its
 * connection is closed. Failures are posted as `{ error: string }`.
 * @module
 */

import { DatabaseSync } from "node:sqlite";
import { parentPort, workerData } from "node:worker_threads";

/** What the store passes as workerData. */
export interface CheckpointerData {
  path: string;
  intervalMs: number;
}
/** The messages the worker posts back. */
export type CheckpointerReply = "closed" | { error: string };

const port = parentPort!;
const { path, intervalMs } = workerData as CheckpointerData;
let db: DatabaseSync | undefined;
let timer: ReturnType<typeof setInterval> | undefined;

function reply(message: CheckpointerReply): void {
  port.postMessage(message);
}

try {
  db = new DatabaseSync(path);
  db.exec("PRAGMA busy_timeout=0; PRAGMA synchronous=NORMAL");
  timer = setInterval(() => {
    try {
      // PASSIVE: copies what no reader still needs, never waits for or blocks the writer. With
      // synchronous=NORMAL SQLite fsyncs the log before copying and the database after.
      db?.exec("PRAGMA wal_checkpoint(PASSIVE)");
    } catch (error) {
      reply({ error: `checkpoint failed: ${(error as Error).message}` });
    }
  }, intervalMs);
} catch (error) {
  reply({ error: `cannot open "${path}": ${(error as Error).message}` });
}

port.on("message", (message: unknown) => {
  if (message !== "close") return;
  clearInterval(timer);
  db?.close();
  db = undefined;
  reply("closed"); // the store then terminates this thread
});
