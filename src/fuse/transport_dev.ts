/**
 * The /dev/fuse transport: requests are read from the non-blocking fd with synchronous `read()`s
 * and each reply is one synchronous `write()`. When the queue is empty the reader spins for up to
 * `fuse.spin_us`: it gives the event loop a turn and reads again, and when no handler is pending
 * it waits for the rest of the spin in one `ppoll()` of /dev/fuse and the event loop's epoll fds
 * on the JS thread (with one pending it keeps giving turns). Then, with no handler pending and
 * `fuse.park_us` set (default 0), it blocks the JS thread for up to that long in one `poll()` of
 * the same fds; then it parks in one `nonblocking` `poll()` (src/fuse/README.md, "How requests
 * cross into JavaScript", "Parking on the JS thread").
 * @module
 */

import { Errno } from "../fs_error.ts";
import { setImmediate } from "node:timers";
import type { FuseServer, ReplySink } from "./server.ts";
import type { FuseDevice } from "./session.ts";

/** Largest WRITE payload we accept (1 MiB, MAX_PAGES) plus room for its headers. */
export const REQUEST_BUFFER_SIZE = (1 << 20) + 4096;
/** Requests handled concurrently; reading pauses at the limit (back-pressure on the kernel). */
const MAX_IN_FLIGHT = 64;

/** One turn of the event loop: microtasks, then timers and I/O that are ready, then this. */
export function nextTurn(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

export class DevTransport {
  #device: FuseDevice;
  #server: FuseServer;
  #pool: Uint8Array<ArrayBuffer>[] = [];
  /** Replies go back as one write() each; ENOENT means the kernel dropped the request
   * (interrupted), nothing to do. */
  readonly send: ReplySink = (reply) => {
    if (reply !== null) this.#device.writeMessage(reply as Uint8Array<ArrayBuffer>);
  };

  constructor(device: FuseDevice, server: FuseServer) {
    this.#device = device;
    this.#server = server;
  }

  /**
   * Serve /dev/fuse until the file system is unmounted ("unmounted"), or, with `handOver`, until
   * an INIT took FUSE over io_uring ("switch"): the ring then carries requests.
   */
  async run(handOver: boolean): Promise<"unmounted" | "switch"> {
    const server = this.#server;
    for (;;) {
      if (handOver && server.uringNegotiated) return "switch";
      if (server.inFlight >= MAX_IN_FLIGHT) {
        await server.requestFinished();
        continue;
      }
      const buffer = this.#pool.pop() ?? new Uint8Array(REQUEST_BUFFER_SIZE);
      let n = this.#device.readRequest(buffer);
      // Before parking in the poll hop, give the event loop a few turns (handlers finish, their
      // replies go out, other I/O runs) and read again: a client that waits for each reply
      // sends its next request within microseconds (see README "Idle spin").
      if (n === 0 && server.idleSpinMs > 0) n = await this.#spin(buffer, handOver);
      // Then, when no handler is waiting for anything, park on this thread: one blocking poll of
      // /dev/fuse and the event loop's own epoll fds, so a request wakes this thread without the
      // thread-pool hop (README "Parking on the JS thread"). Anything else that comes first gets
      // one event-loop turn and one more read; after that, or a timeout, the usual park.
      if (n === 0 && server.parkSyncMs > 0 && server.inFlight === 0) {
        if (handOver && server.uringNegotiated) {
          this.#pool.push(buffer);
          return "switch";
        }
        const woke = this.#device.parkSync(server.parkSyncMs);
        if (woke === "other") await nextTurn();
        if (woke !== "timeout") n = this.#device.readRequest(buffer);
        if (n > 0) server.loopStats.parkedOnThread++;
      }
      if (n === 0) {
        this.#pool.push(buffer);
        if (handOver && server.uringNegotiated) return "switch";
        server.loopStats.wakeups++;
        await this.#device.waitReadable(1000);
        continue;
      }
      if (n < 0) {
        this.#pool.push(buffer);
        if (n === -Errno.ENODEV || n === -Errno.EBADF) return "unmounted";
        throw new Error(`Reading /dev/fuse failed: errno ${-n}`);
      }
      this.#dispatch(buffer, n);
    }
  }

  /** Read whatever is queued now without waiting and dispatch it; the ring transport calls this
   * when /dev/fuse turns readable (FORGET, INTERRUPT). Returns false once unmounted. */
  drain(): boolean {
    for (;;) {
      const buffer = this.#pool.pop() ?? new Uint8Array(REQUEST_BUFFER_SIZE);
      const n = this.#device.readRequest(buffer);
      if (n <= 0) {
        this.#pool.push(buffer);
        if (n === 0) return true;
        if (n === -Errno.ENODEV || n === -Errno.EBADF) return false;
        throw new Error(`Reading /dev/fuse failed: errno ${-n}`);
      }
      this.#dispatch(buffer, n);
    }
  }

  #dispatch(buffer: Uint8Array<ArrayBuffer>, n: number): void {
    this.#server.handleRequest(buffer.subarray(0, n), (reply, unique) => {
      this.send(reply, unique);
      this.#pool.push(buffer);
    });
  }

  /** Turns of the event loop, each followed by a non-blocking read into `buffer`, until one
   * reads a request (its length, or a negative errno) or the idle spin is over (0). */
  async #spin(buffer: Uint8Array<ArrayBuffer>, handOver: boolean): Promise<number> {
    const server = this.#server;
    const until = performance.now() + server.idleSpinMs;
    do {
      await nextTurn();
      if (handOver && server.uringNegotiated) return 0;
      let n = this.#device.readRequest(buffer);
      // No handler waiting for anything: wait for the rest of the spin in one ppoll of /dev/fuse
      // and the event loop's epoll fds instead of turning the loop (README "Idle spin").
      if (n === 0 && server.inFlight === 0) {
        const left = until - performance.now();
        if (left <= 0) return 0;
        server.loopStats.spinParks++;
        const woke = this.#device.parkSyncUs(left * 1000);
        if (woke === "timeout") return 0;
        if (woke === "request") {
          n = this.#device.readRequest(buffer);
          if (n > 0) server.loopStats.spinParkHits++;
        }
      }
      if (n !== 0) {
        if (n > 0) server.loopStats.spinHits++;
        return n;
      }
    } while (performance.now() < until);
    return 0;
  }
}
