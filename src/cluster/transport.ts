/**
 * Peer transport: a TCP server answering chunk requests and a client with one multiplexed
 * connection per peer. The transport interface is what an RDMA implementation would provide
 * (rdma_probe.ts decides; no device here, so TCP is the only implementation).
 * @module
 */

import {
  decodeGetChunk,
  decodeText,
  encodeFrame,
  encodeGetChunk,
  encodeText,
  type Frame,
  frameAround,
  FrameReader,
  FrameType,
  type GetChunk,
  HEADER_BYTES,
  MalformedFrameError,
  parseHeader,
} from "./peer_wire.ts";
import { recycleBuffer, takeBuffer } from "../cache/buffer_pool.ts";

export interface PeerTransport {
  readonly kind: string;
  getChunk(address: string, request: GetChunk): Promise<Uint8Array>;
  close(): void;
}

/**
 * Answers one request with the chunk's bytes. The transport owns what it returns: it sends it
 * (without a copy when there is header room before it) and then recycles it
 * (src/cache/buffer_pool.ts), so return a buffer nothing else will touch.
 */
export type ChunkServer = (request: GetChunk) => Promise<Uint8Array>;

/** Listen on `hostname:port` (port 0: any) and answer GET_CHUNK with `serve`. */
export function listenPeers(
  hostname: string,
  port: number,
  serve: ChunkServer,
  log: (line: string) => void = (line) => console.error(line),
): { address: string; close: () => void } {
  const listener = Deno.listen({ hostname, port, transport: "tcp" });
  const connections = new Set<Deno.TcpConn>();
  (async () => {
    for await (const conn of listener) {
      connections.add(conn);
      serveConnection(conn, serve, log).finally(() => connections.delete(conn));
    }
  })().catch(() => {/* listener closed */});
  const addr = listener.addr as Deno.NetAddr;
  return {
    address: `${addr.hostname}:${addr.port}`,
    close: () => {
      listener.close();
      for (const conn of connections) {
        try {
          conn.close();
        } catch { /* already closed */ }
      }
    },
  };
}

async function serveConnection(conn: Deno.TcpConn, serve: ChunkServer, log: (l: string) => void) {
  const reader = new FrameReader();
  const remote = `${(conn.remoteAddr as Deno.NetAddr).hostname}:${
    (conn.remoteAddr as Deno.NetAddr).port
  }`;
  const send = async (bytes: Uint8Array) => {
    for (let done = 0; done < bytes.length;) done += await conn.write(bytes.subarray(done));
  };
  let writes = Promise.resolve();
  const buffer = new Uint8Array(1 << 20);
  try {
    for (;;) {
      const n = await conn.read(buffer);
      if (n === null) break;
      for (const frame of reader.push(buffer.subarray(0, n))) {
        if (frame.type !== FrameType.GET_CHUNK) {
          throw new MalformedFrameError(`frame type ${frame.type} sent to a server`);
        }
        const request = decodeGetChunk(frame.payload);
        serve(request).then(
          (data) => [frameAround(FrameType.CHUNK, frame.requestId, data), data],
          (error) => [encodeFrame(FrameType.ERROR, frame.requestId, encodeText(String(error)))],
        ).then(([reply, data]) =>
          writes = writes.then(() => send(reply)).catch(() => {}).then(() => {
            if (data) recycleBuffer(data);
          })
        );
      }
    }
  } catch (error) {
    if (error instanceof MalformedFrameError) {
      log(`skyfs: peer ${remote}: malformed frame (${error.message}); closing the connection`);
    }
  } finally {
    try {
      conn.close();
    } catch { /* already closed */ }
  }
}

interface Connection {
  conn: Deno.TcpConn;
  pending: Map<number, { resolve: (f: Frame) => void; reject: (e: Error) => void }>;
  nextId: number;
  writes: Promise<void>;
}

/** TCP client: one connection per peer address, requests multiplexed by id. */
export class TcpTransport implements PeerTransport {
  readonly kind = "tcp";
  readonly #connections = new Map<string, Promise<Connection>>();
  readonly #timeoutMs: number;

  constructor(options: { timeoutMs?: number } = {}) {
    this.#timeoutMs = options.timeoutMs ?? 10_000;
  }

  #connect(address: string): Promise<Connection> {
    let found = this.#connections.get(address);
    if (found) return found;
    const [hostname, port] = [
      address.slice(0, address.lastIndexOf(":")),
      address.slice(address.lastIndexOf(":") + 1),
    ];
    found = Deno.connect({ hostname, port: Number(port) }).then((conn) => {
      conn.setNoDelay(true);
      const connection: Connection = {
        conn,
        pending: new Map(),
        nextId: 1,
        writes: Promise.resolve(),
      };
      this.#readLoop(address, connection);
      return connection;
    });
    found.catch(() => this.#connections.delete(address));
    this.#connections.set(address, found);
    return found;
  }

  /**
   * Replies are read header first, then straight into a payload buffer of the announced size:
   * one copy out of the socket, no reassembly buffer (that copied each 4 MiB chunk twice).
   */
  async #readLoop(address: string, connection: Connection) {
    const conn = connection.conn;
    const scratch = new Uint8Array(1 << 16);
    let start = 0;
    let end = 0;
    let failure: Error = new Error(`peer ${address} closed the connection`);
    try {
      for (;;) {
        if (end - start < HEADER_BYTES) {
          scratch.copyWithin(0, start, end);
          end -= start;
          start = 0;
          while (end < HEADER_BYTES) {
            const n = await conn.read(scratch.subarray(end));
            if (n === null) throw failure;
            end += n;
          }
        }
        const header = parseHeader(scratch.subarray(start, start + HEADER_BYTES));
        start += HEADER_BYTES;
        // The caller of getChunk owns the payload and may recycle it once stored.
        const payload = header.type === FrameType.CHUNK
          ? takeBuffer(header.length)
          : new Uint8Array(header.length);
        const buffered = Math.min(end - start, header.length);
        payload.set(scratch.subarray(start, start + buffered));
        start += buffered;
        for (let filled = buffered; filled < header.length;) {
          const n = await conn.read(payload.subarray(filled));
          if (n === null) throw new Error(`peer ${address} closed the connection mid-frame`);
          filled += n;
        }
        const waiter = connection.pending.get(header.requestId);
        connection.pending.delete(header.requestId);
        if (waiter) waiter.resolve({ type: header.type, requestId: header.requestId, payload });
        else recycleBuffer(payload); // its request timed out
      }
    } catch (error) {
      failure = error as Error;
      if (error instanceof MalformedFrameError) {
        console.error(`skyfs: peer ${address}: malformed frame (${error.message}); closing`);
      }
    }
    this.#connections.delete(address);
    try {
      conn.close();
    } catch { /* already closed */ }
    for (const waiter of connection.pending.values()) waiter.reject(failure);
    connection.pending.clear();
  }

  /** The chunk's bytes, owned by the caller (recycleBuffer them when done, or drop them). */
  async getChunk(address: string, request: GetChunk): Promise<Uint8Array> {
    const connection = await this.#connect(address);
    const id = connection.nextId++;
    const frame = await new Promise<Frame>((resolve, reject) => {
      const timer = setTimeout(() => {
        connection.pending.delete(id);
        reject(new Error(`peer ${address} did not answer in ${this.#timeoutMs} ms`));
      }, this.#timeoutMs);
      connection.pending.set(id, {
        resolve: (f) => (clearTimeout(timer), resolve(f)),
        reject: (e) => (clearTimeout(timer), reject(e)),
      });
      const bytes = encodeFrame(FrameType.GET_CHUNK, id, encodeGetChunk(request));
      connection.writes = connection.writes.then(async () => {
        for (let done = 0; done < bytes.length;) {
          done += await connection.conn.write(bytes.subarray(done));
        }
      }).catch((error) => reject(error));
    });
    if (frame.type === FrameType.ERROR) {
      throw new Error(`peer ${address}: ${decodeText(frame.payload)}`);
    }
    return frame.payload;
  }

  close(): void {
    for (const pending of this.#connections.values()) {
      pending.then((c) => c.conn.close()).catch(() => {});
    }
    this.#connections.clear();
  }
}
