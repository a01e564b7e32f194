/**
 * Peer transport: a TCP server answering chunk requests and a client with one multiplexed
 * connection per peer. The transport interface is what an RDMA implementation would provide
 * (rdma_probe.ts decides; no device here, so TCP is the only implementation).
 * @module
 */

import {
  decodeGetChunk,
  decodeGetRange,
  decodeText,
  encodeFrame,
  encodeGetChunk,
  encodeHeader,
  encodeText,
  type Frame,
  frameAround,
  FrameReader,
  FrameType,
  type GetChunk,
  type GetRange,
  HEADER_BYTES,
  MalformedFrameError,
  parseHeader,
} from "./peer_wire.ts";
import { recycleBuffer, takeBuffer } from "../cache/buffer_pool.ts";

export interface PeerTransport {
  readonly kind: string;
  getChunk(address: string, request: GetChunk): Promise<Uint8Array>;
  /**
   * The chunk's bytes handed to `sink` piece by piece as they arrive, in order (offset within
   * the chunk); resolves after the last piece. A sink that throws ends the delivery (the rest
   * of the frame is read and dropped) and the promise rejects with its error.
   */
  getChunkInto(address: string, request: GetChunk, sink: ChunkSink): Promise<number>;
  /**
   * Optional (uring_transport.ts): bytes of `range` straight into `into` (exactly
   * range.rangeLength long), on a connection of its own per `stream` (e.g. one per file being
   * read); `ahead` are the ranges the stream will probably read next, requested at once.
   */
  readRange?(
    address: string,
    stream: string,
    range: GetRange,
    into: Uint8Array,
    ahead?: GetRange[],
  ): Promise<void>;
  /**
   * Optional: request `ranges` on the stream now, for reads that come later in that order (the
   * reader is on another peer's chunk meanwhile). Never rejects; a failure drops the stream.
   */
  prefetch?(address: string, stream: string, ranges: GetRange[]): void;
  /** The stream will not read again soon: its connection may close. */
  endStream?(stream: string): void;
  close(): void;
}

export type ChunkSink = (piece: Uint8Array, offset: number) => Promise<void> | void;

/**
 * A reply sent in pieces of PIECE_BYTES read straight from where the chunk lives: the
 * intermediate buffer stays in the CPU cache instead of streaming 4 MiB buffers through
 * memory. `read` fills `into` from `offset` (throw if the chunk changed: the connection is then
 * closed, since the header already announced the length); `done` runs after the last piece.
 */
export interface ChunkBody {
  length: number;
  read(into: Uint8Array, offset: number): Promise<void>;
  done(): void;
  /**
   * Where the chunk lies in a file (its fd, and the chunk's first byte at `start`), for a
   * transport that sends from the file without copying (uring_transport.ts); `unchanged` says
   * afterwards whether the chunk stayed the same meanwhile.
   */
  fd?: number;
  start?: number;
  unchanged?(): boolean;
}

/** Bytes per piece of a streamed chunk (both directions). */
export const PIECE_BYTES = 256 << 10;

/**
 * Answers one request with the chunk's bytes, or a body to stream them from. The transport owns
 * a returned buffer: it sends it (without a copy when there is header room before it) and then
 * recycles it (src/cache/buffer_pool.ts), so return a buffer nothing else will touch.
 */
export type ChunkServer = (request: GetChunk) => Promise<Uint8Array | ChunkBody>;

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
      try {
        listener.close();
      } catch { /* closed before: close is idempotent */ }
      for (const conn of connections) {
        try {
          conn.close();
        } catch { /* already closed */ }
      }
    },
  };
}

async function serveConnection(conn: Deno.TcpConn, serve: ChunkServer, log: (l: string) => void) {
  conn.setNoDelay(true);
  const reader = new FrameReader();
  const remote = `${(conn.remoteAddr as Deno.NetAddr).hostname}:${
    (conn.remoteAddr as Deno.NetAddr).port
  }`;
  const send = async (bytes: Uint8Array) => {
    for (let done = 0; done < bytes.length;) done += await conn.write(bytes.subarray(done));
  };
  // Header room in front: the header goes out in one write with the first piece (a lone
  // 16-byte write then waited on the peer's delayed ACK: 0.7 GB/s).
  const piece = new Uint8Array(HEADER_BYTES + PIECE_BYTES);
  // [start, end): the part of the chunk asked for (all of it for GET_CHUNK).
  const stream = async (requestId: number, body: ChunkBody, start: number, end: number) => {
    try {
      piece.set(encodeHeader(FrameType.CHUNK, requestId, end - start));
      let from = 0; // where this write starts in `piece`: 0 with the header, else HEADER_BYTES
      for (let offset = start; offset < end; offset += PIECE_BYTES) {
        const length = Math.min(PIECE_BYTES, end - offset);
        try {
          await body.read(piece.subarray(HEADER_BYTES, HEADER_BYTES + length), offset);
        } catch (error) {
          log(`skyfs: peer ${remote}: chunk changed while being sent (${error}); closing`);
          conn.close(); // the header promised the bytes: the requester sees the connection end
          throw error;
        }
        await send(piece.subarray(from, HEADER_BYTES + length));
        from = HEADER_BYTES;
      }
      if (end === start) await send(piece.subarray(0, HEADER_BYTES));
    } finally {
      body.done();
    }
  };
  let writes = Promise.resolve();
  const buffer = new Uint8Array(1 << 20);
  try {
    for (;;) {
      const n = await conn.read(buffer);
      if (n === null) break;
      for (const frame of reader.push(buffer.subarray(0, n))) {
        if (frame.type !== FrameType.GET_CHUNK && frame.type !== FrameType.GET_RANGE) {
          throw new MalformedFrameError(`frame type ${frame.type} sent to a server`);
        }
        const range = frame.type === FrameType.GET_RANGE
          ? decodeGetRange(frame.payload)
          : undefined;
        const request = range ?? decodeGetChunk(frame.payload);
        const [start, end] = range
          ? [range.offset, range.offset + range.rangeLength]
          : [0, request.length];
        const id = frame.requestId;
        serve(request).then(
          (reply) => {
            if (!(reply instanceof Uint8Array)) {
              // GET_CHUNK: the body as long as it is (its length is what the reply announces).
              const until = range ? end : reply.length;
              writes = writes.then(() => stream(id, reply, start, until)).catch(() => {});
              return;
            }
            const bytes = range
              ? encodeFrame(FrameType.CHUNK, id, reply.subarray(start, end))
              : frameAround(FrameType.CHUNK, id, reply);
            writes = writes.then(() => send(bytes)).catch(() => {}).then(() =>
              recycleBuffer(reply)
            );
          },
          (error) => {
            const bytes = encodeFrame(FrameType.ERROR, id, encodeText(String(error)));
            writes = writes.then(() => send(bytes)).catch(() => {});
          },
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

interface Waiter {
  resolve: (f: Frame) => void;
  reject: (e: Error) => void;
  /** Streamed delivery (getChunkInto): pieces go here, and the frame's payload is empty. */
  sink?: ChunkSink;
}

interface Connection {
  conn: Deno.TcpConn;
  pending: Map<number, Waiter>;
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
    let piece: Uint8Array | undefined;
    let current: Waiter | undefined;
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
        const waiting = connection.pending.get(header.requestId);
        if (waiting?.sink && header.type === FrameType.CHUNK) {
          connection.pending.delete(header.requestId);
          const buffered = Math.min(end - start, header.length);
          // Out of `pending` while it streams: a failure below must reject it by hand.
          current = waiting;
          const result = await this.#deliver(
            conn,
            piece ??= new Uint8Array(PIECE_BYTES),
            scratch.subarray(start, start + buffered),
            header.length,
            waiting.sink,
          );
          current = undefined;
          start += buffered;
          if (result instanceof Error) waiting.reject(result);
          else {waiting.resolve({
              type: header.type,
              requestId: header.requestId,
              payload: scratch.subarray(0, 0),
            });}
          continue;
        }
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
    current?.reject(failure);
    for (const waiter of connection.pending.values()) waiter.reject(failure);
    connection.pending.clear();
  }

  /**
   * Hand a streamed payload of `length` bytes (the first ones already `buffered`) to `sink` in
   * pieces of up to PIECE_BYTES read into `piece` (one per connection, reused). Reads the whole payload even when
   * the sink fails (the stream must stay aligned on frames); returns the sink's error then.
   */
  async #deliver(
    conn: Deno.TcpConn,
    piece: Uint8Array,
    buffered: Uint8Array,
    length: number,
    sink: ChunkSink,
  ): Promise<Error | undefined> {
    let failure: Error | undefined;
    const give = async (piece: Uint8Array, offset: number) => {
      if (failure) return;
      try {
        await sink(piece, offset);
      } catch (error) {
        failure = error as Error;
      }
    };
    if (buffered.length > 0) await give(buffered, 0);
    for (let offset = buffered.length; offset < length;) {
      const into = piece.subarray(0, Math.min(PIECE_BYTES, length - offset));
      for (let filled = 0; filled < into.length;) {
        const n = await conn.read(into.subarray(filled));
        if (n === null) throw new Error(`peer closed the connection mid-frame`);
        filled += n;
      }
      await give(into, offset);
      offset += into.length;
    }
    return failure;
  }

  async getChunkInto(address: string, request: GetChunk, sink: ChunkSink): Promise<number> {
    let settled = false;
    // After a timeout the caller has moved on (maybe to the backend): later pieces go nowhere.
    const guarded: ChunkSink = (piece, offset) => settled ? undefined : sink(piece, offset);
    try {
      await this.#request(address, request, guarded);
      return request.length;
    } finally {
      settled = true;
    }
  }

  /** The chunk's bytes, owned by the caller (recycleBuffer them when done, or drop them). */
  async getChunk(address: string, request: GetChunk): Promise<Uint8Array> {
    return await this.#request(address, request);
  }

  async #request(address: string, request: GetChunk, sink?: ChunkSink): Promise<Uint8Array> {
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
        sink,
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
