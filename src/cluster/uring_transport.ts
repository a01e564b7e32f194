/**
 * The zero-copy peer transport: raw TCP sockets driven by the process's io_uring engine. The
 * server sends a chunk from its cache file with splice (file -> pipe -> socket: page-cache pages
 * are referenced, never copied through user space); the client reads a range of a chunk
 * straight into the buffer of the read that wants it (one copy, kernel to that buffer), on one
 * connection per reading stream with the next ranges already requested. Same frames as
 * transport.ts (GET_CHUNK, CHUNK, ERROR, plus GET_RANGE of version 2), so nodes on either
 * transport answer each other; getChunk/getChunkInto (cache fills) use the Deno TCP client.
 * @module
 */

import {
  decodeGetChunk,
  decodeGetRange,
  decodeText,
  encodeFrame,
  encodeGetRange,
  encodeHeader,
  encodeText,
  FrameType,
  type GetChunk,
  type GetRange,
  HEADER_BYTES,
  MalformedFrameError,
  parseHeader,
} from "./peer_wire.ts";
import {
  type ChunkBody,
  type ChunkServer,
  type ChunkSink,
  listenPeers,
  type PeerTransport,
  TcpTransport,
} from "./transport.ts";
import { recycleBuffer } from "../cache/buffer_pool.ts";
import type { IoEngine } from "../io/types.ts";
import type { UringEngine } from "../io/uring.ts";
import {
  closeFd,
  parseIpv4,
  pipe,
  shutdownSocket,
  sockaddrIn,
  tcpListen,
  tcpSocket,
} from "../io/sockets.ts";
import { FsError } from "../fs_error.ts";

const MSG_WAITALL = 0x100;
const MSG_MORE = 0x8000;
/** Bytes per splice (the pipe's capacity): 1 MiB measured best (bench/cluster/splice_spike.ts). */
const SPLICE_BYTES = 1 << 20;
/** Bytes per read+send piece when copying. */
const COPY_PIECE_BYTES = 256 << 10;
/**
 * How the server sends a chunk from its cache file: "copy" (read a piece through the ring,
 * send it) or "splice" (file -> pipe -> socket, no copy on this node; the default). Config
 * peer.send (SKYFS_PEER_SEND).
 */
export type PeerSendMode = "splice" | "copy";

/** The engine, if it can drive sockets (io_uring with the socket ops), else undefined. */
export function socketEngine(io: IoEngine | undefined): UringEngine | undefined {
  const uring = io as UringEngine | undefined;
  return uring?.kind === "io_uring" && uring.socketOps ? uring : undefined;
}

/**
 * The peer server and client for this process: over io_uring when the engine drives sockets
 * and `host` is an IPv4 literal, else the Deno TCP ones of transport.ts (portable engine).
 */
export function openPeers(
  io: IoEngine | undefined,
  host: string,
  port: number,
  serve: ChunkServer,
  log: (line: string) => void = (line) => console.error(line),
  options: { timeoutMs?: number; sendMode?: PeerSendMode } = {},
): { server: { address: string; close: () => void }; transport: PeerTransport } {
  const uring = socketEngine(io);
  if (uring && parseIpv4(`${host}:${port}`)) {
    return {
      server: listenPeersUring(uring, host, port, serve, log, options.sendMode),
      transport: new UringTransport(uring, options),
    };
  }
  return { server: listenPeers(host, port, serve, log), transport: new TcpTransport(options) };
}

/** The peer client for this process's engine (openPeers' choice, without a server). */
export function peerTransport(
  io: IoEngine | undefined,
  options: { timeoutMs?: number } = {},
): PeerTransport {
  const uring = socketEngine(io);
  return uring ? new UringTransport(uring, options) : new TcpTransport(options);
}

/** Listen on host:port (IPv4; port 0: any) and answer GET_CHUNK and GET_RANGE with `serve`. */
export function listenPeersUring(
  io: UringEngine,
  host: string,
  port: number,
  serve: ChunkServer,
  log: (line: string) => void = (line) => console.error(line),
  sendMode: PeerSendMode = "splice",
): { address: string; close: () => void } {
  const [listenFd, bound] = tcpListen(host, port);
  const sockets = new Set<number>();
  let closed = false;
  const accepting = (async () => {
    while (!closed) {
      let fd: number;
      try {
        fd = await io.accept(listenFd);
      } catch (error) {
        if (closed) break;
        log(`skyfs: peer server ${host}:${bound}: accept failed (${error}); retrying`);
        await new Promise((resolve) => setTimeout(resolve, 100));
        continue;
      }
      if (closed) {
        closeFd(fd);
        break;
      }
      sockets.add(fd);
      // Out of the set before its close: a number closed and reused must never be shut down.
      serveSocket(io, fd, serve, log, () => sockets.delete(fd), sendMode);
    }
  })();
  return {
    address: `${host}:${bound}`,
    close: () => {
      if (closed) return;
      closed = true;
      // shutdown wakes the accept waiting in the ring (it fails); close alone would not.
      shutdownSocket(listenFd);
      accepting.finally(() => closeFd(listenFd));
      for (const fd of sockets) shutdownSocket(fd);
    },
  };
}

async function sendAll(io: UringEngine, fd: number, bytes: Uint8Array, flags = 0): Promise<void> {
  for (let done = 0; done < bytes.length;) {
    const n = await io.send(fd, bytes.subarray(done), flags);
    if (n <= 0) throw new FsError("EPIPE", `send on socket ${fd} sent nothing`);
    done += n;
  }
}

/** A request read from a connection, its serve started. */
interface Received {
  requestId: number;
  range?: GetRange;
  request: GetChunk;
  reply: Promise<Uint8Array | ChunkBody>;
}

/** Lets go of a reply that will not be sent (its buffer back to the pool, its fd released). */
async function release(received: Received): Promise<void> {
  try {
    const reply = await received.reply;
    if (reply instanceof Uint8Array) recycleBuffer(reply);
    else reply.done();
  } catch {
    // nothing held
  }
}

/**
 * Answers one connection's requests in order until it closes or sends a malformed frame. The
 * next request is read and its serve started while the current reply is sent (one ahead): a
 * sequential reader keeps several ranges requested, and an owner filling a cold chunk from the
 * backend does so while the chunk before it goes out, instead of after.
 */
async function serveSocket(
  io: UringEngine,
  fd: number,
  serve: ChunkServer,
  log: (line: string) => void,
  closing: () => void,
  sendMode: PeerSendMode,
): Promise<void> {
  const header = new Uint8Array(HEADER_BYTES);
  let spliceVia: { fds: [number, number]; capacity: number } | undefined;
  let pieces: [Uint8Array, Uint8Array] | undefined;
  const receive = async (): Promise<Received | undefined> => {
    if (await io.recv(fd, header, MSG_WAITALL) < HEADER_BYTES) return undefined; // closed
    const frame = parseHeader(header);
    if (frame.type !== FrameType.GET_CHUNK && frame.type !== FrameType.GET_RANGE) {
      throw new MalformedFrameError(`frame type ${frame.type} sent to a server`);
    }
    const payload = new Uint8Array(frame.length);
    if (frame.length > 0 && await io.recv(fd, payload, MSG_WAITALL) < frame.length) return;
    const range = frame.type === FrameType.GET_RANGE ? decodeGetRange(payload) : undefined;
    const request: GetChunk = range ?? decodeGetChunk(payload);
    const reply = serve(request);
    reply.catch(() => {}); // awaited when its turn comes; not an unhandled rejection meanwhile
    return { requestId: frame.requestId, range, request, reply };
  };
  let receiving: Promise<Received | undefined> | undefined;
  try {
    receiving = receive();
    for (;;) {
      receiving.catch(() => {}); // awaited below; it may fail while a reply is being sent
      const received = await receiving;
      receiving = undefined;
      if (!received) break;
      // The next request is read (and its serve started) while this one is answered.
      receiving = receive();
      receiving.catch(() => {});
      const { requestId, range, request } = received;
      const start = range?.offset ?? 0;
      let end = 0;
      let reply;
      try {
        reply = await received.reply;
        // GET_CHUNK: all of what the cache holds; GET_RANGE: inside it, or an error.
        end = range ? start + range.rangeLength : reply.length;
        if (end > reply.length) {
          if (!(reply instanceof Uint8Array)) reply.done();
          throw new Error(`range ends at ${end}, the chunk here has ${reply.length} bytes`);
        }
      } catch (error) {
        const text = encodeText(String(error));
        await sendAll(io, fd, encodeFrame(FrameType.ERROR, requestId, text));
        // A range reader receives the header and the range's bytes in one go (recvPair): the
        // connection's end is what tells it that a shorter ERROR came instead.
        if (range) break;
        continue;
      }
      if (reply instanceof Uint8Array) {
        try {
          // Header, then the bytes from the buffer (no copy into a frame first).
          await sendAll(io, fd, encodeHeader(FrameType.CHUNK, requestId, end - start), MSG_MORE);
          await sendAll(io, fd, reply.subarray(start, end));
        } finally {
          recycleBuffer(reply);
        }
        continue;
      }
      try {
        await sendAll(
          io,
          fd,
          encodeHeader(FrameType.CHUNK, requestId, end - start),
          MSG_MORE,
        );
        if (reply.fd !== undefined && sendMode === "splice") {
          spliceVia ??= pipe(SPLICE_BYTES);
          await io.spliceToSocket(
            reply.fd,
            reply.start! + start,
            end - start,
            spliceVia.fds,
            spliceVia.capacity,
            fd,
          );
          if (reply.unchanged?.() === false) {
            throw new Error(`chunk ${request.ino}/${request.index} changed while being sent`);
          }
        } else {
          // Read the next piece while this one is sent; pieces small enough to stay in the CPU
          // cache, so the kernel copies them to the socket (and the reader from it) hot.
          pieces ??= [new Uint8Array(COPY_PIECE_BYTES), new Uint8Array(COPY_PIECE_BYTES)];
          const part = (k: number, at: number) =>
            pieces![k % 2].subarray(0, Math.min(COPY_PIECE_BYTES, end - at));
          let reading = reply.read(part(0, start), start);
          try {
            for (let at = start, k = 0; at < end; at += COPY_PIECE_BYTES, k++) {
              await reading;
              const next = at + COPY_PIECE_BYTES;
              if (next < end) reading = reply.read(part(k + 1, next), next);
              await sendAll(io, fd, part(k, at));
            }
          } finally {
            await reading.catch(() => {});
          }
        }
      } catch (error) {
        // The header promised the bytes: the requester must see the connection end.
        log(
          `skyfs: peer connection ${fd}: sending ${request.ino}/${request.index} failed (${error}); closing`,
        );
        break;
      } finally {
        reply.done();
      }
    }
  } catch (error) {
    if (error instanceof MalformedFrameError) {
      log(
        `skyfs: peer connection ${fd}: malformed frame (${error.message}); closing the connection`,
      );
    }
  } finally {
    closing();
    shutdownSocket(fd);
    // A request read ahead: its recv ends with the shutdown; what its serve holds is let go.
    const ahead = await receiving?.catch(() => undefined);
    if (ahead) await release(ahead);
    await io.close(fd).catch(() => {});
    if (spliceVia) {
      closeFd(spliceVia.fds[0]);
      closeFd(spliceVia.fds[1]);
    }
  }
}

/** A range requested on a stream's connection and not wholly read yet. */
interface Sent {
  range: GetRange;
  id: number;
  /** Bytes of its payload read so far (its header is read with the first ones). */
  consumed: number;
}

/** One connection per reading stream: its replies come in the order of `sent`. */
interface Stream {
  key: string;
  fd: number;
  sent: Sent[];
  /**
   * Where this stream's reply headers are received. Per stream, not per transport: reads of
   * different streams run at once, and a shared buffer let one stream check another's header
   * (issue 13: "malformed frame (reply 1, expected 2)", then the peer skipped for downMs).
   */
  header: Uint8Array;
  nextId: number;
  /** Reads of this stream run one at a time. */
  tail: Promise<unknown>;
  lastUse: number;
  /** While a read waits on the peer: when it times out (performance.now()), else 0. */
  deadline: number;
  timedOut: boolean;
}

const sameChunk = (a: GetRange, b: GetRange) =>
  a.ino === b.ino && a.index === b.index && a.version === b.version;

/** Whether `outer` holds all of `inner`. */
const covers = (outer: GetRange, inner: GetRange) =>
  sameChunk(outer, inner) && outer.offset <= inner.offset &&
  inner.offset + inner.rangeLength <= outer.offset + outer.rangeLength;

/**
 * The client: `readRange` over io_uring sockets, one connection per (peer, stream); cache fills
 * (getChunk, getChunkInto) over the Deno TCP client. A peer that failed (timeout, refused,
 * broken frame) is skipped for `downMs` by both, so a dead or partitioned peer costs one
 * timeout, not one per chunk.
 */
export class UringTransport implements PeerTransport {
  readonly kind = "tcp+io_uring";
  readonly #io: UringEngine;
  readonly #tcp: TcpTransport;
  readonly #timeoutMs: number;
  readonly #downMs: number;
  readonly #streams = new Map<string, Stream>();
  readonly #down = new Map<string, number>();
  #watchdog: ReturnType<typeof setInterval> | undefined;
  /** Scratch for replies nobody wants any more: written by every stream, never read. */
  readonly #discard = new Uint8Array(1 << 20);
  /** Most streams kept open; the least recently used goes beyond it. */
  static readonly MAX_STREAMS = 64;
  /** Bytes requested ahead of the reader per stream. */
  static readonly WINDOW_BYTES = 8 << 20;

  constructor(io: UringEngine, options: { timeoutMs?: number; downMs?: number } = {}) {
    this.#io = io;
    this.#timeoutMs = options.timeoutMs ?? 10_000;
    this.#downMs = options.downMs ?? 10_000;
    this.#tcp = new TcpTransport({ timeoutMs: this.#timeoutMs });
  }

  #checkUp(address: string): void {
    const until = this.#down.get(address);
    if (until === undefined) return;
    if (Date.now() < until) {
      throw new Error(`peer ${address} failed less than ${this.#downMs} ms ago; not asked`);
    }
    this.#down.delete(address);
  }

  async getChunk(address: string, request: GetChunk): Promise<Uint8Array> {
    this.#checkUp(address);
    try {
      return await this.#tcp.getChunk(address, request);
    } catch (error) {
      this.#markDown(address, error);
      throw error;
    }
  }

  async getChunkInto(address: string, request: GetChunk, sink: ChunkSink): Promise<number> {
    this.#checkUp(address);
    try {
      return await this.#tcp.getChunkInto(address, request, sink);
    } catch (error) {
      this.#markDown(address, error);
      throw error;
    }
  }

  /** Peer-side errors (an ERROR frame) do not mark the peer down; transport failures do. */
  #markDown(address: string, error: unknown): void {
    if (String((error as Error).message).startsWith(`peer ${address}: `)) return; // ERROR frame
    this.#down.set(address, Date.now() + this.#downMs);
  }

  /**
   * Bytes `want` of a chunk from `address` straight into `into` (exactly want.rangeLength
   * long). `plan` is what this stream should have requested, in order: its first range holds
   * `want` (e.g. from `want` to the chunk's end for a sequential reader, or just `want`), the
   * next ones what it will read after (following chunks). Ranges are requested up to
   * WINDOW_BYTES ahead and each read takes its bytes from the reply in progress, so a reader's
   * 128 KiB or 1 MiB reads cost one recv each and the owner splices whole ranges. A read that
   * does not continue the reply in progress drops what was requested before it (read into a
   * scratch buffer and forgotten). Rejects on any failure (the stream's connection is then closed).
   */
  readRange(
    address: string,
    stream: string,
    want: GetRange,
    into: Uint8Array,
    plan: GetRange[] = [want],
  ): Promise<void> {
    if (into.length !== want.rangeLength || plan.length === 0 || !covers(plan[0], want)) {
      return Promise.reject(
        new RangeError(`readRange: buffer of ${into.length} for ${want.rangeLength}, plan bad`),
      );
    }
    try {
      this.#checkUp(address);
    } catch (error) {
      return Promise.reject(error);
    }
    const s = this.#stream(address, stream);
    const run = s.tail.catch(() => {}).then(() => this.#read(address, s, want, into, plan));
    s.tail = run;
    return run;
  }

  #stream(address: string, stream: string): Stream {
    const key = `${address}|${stream}`;
    let s = this.#streams.get(key);
    if (!s) {
      s = {
        key,
        fd: -1,
        sent: [],
        header: new Uint8Array(HEADER_BYTES),
        nextId: 1,
        tail: Promise.resolve(),
        lastUse: 0,
        deadline: 0,
        timedOut: false,
      };
      this.#streams.set(key, s);
      this.#trim();
    }
    return s;
  }

  /**
   * Request `ranges` on the stream (after the reads queued on it) so the owner starts sending
   * while the reader is still on other peers' chunks: a sequential reader's chunks alternate
   * between owners, and each owner's first request otherwise waited for the reader to arrive
   * (issue 13). Up to WINDOW_BYTES outstanding, as for reads. A failure drops the connection;
   * the next read opens a new one (and reports the failure if it persists).
   */
  prefetch(address: string, stream: string, ranges: GetRange[]): void {
    if (ranges.length === 0) return;
    const until = this.#down.get(address);
    if (until !== undefined && Date.now() < until) return;
    const s = this.#stream(address, stream);
    s.tail = s.tail.catch(() => {}).then(async () => {
      try {
        await this.#open(address, s);
        s.lastUse = performance.now();
        await this.#request(s, ranges);
      } catch {
        this.#drop(s);
      }
    });
  }

  /** Connects the stream if it has no connection (new, or dropped after a failure). */
  async #open(address: string, s: Stream): Promise<void> {
    if (s.fd >= 0) return;
    const [host, port] = parseIpv4(address) ?? [];
    if (host === undefined) throw new RangeError(`peer address "${address}" is not IPv4`);
    const fd = tcpSocket();
    const timer = setTimeout(() => shutdownSocket(fd), this.#timeoutMs);
    try {
      await this.#io.connect(fd, sockaddrIn(host, port!));
    } catch (error) {
      await this.#io.close(fd).catch(() => {});
      throw new Error(`connecting to peer ${address} failed (${(error as Error).message})`);
    } finally {
      clearTimeout(timer);
    }
    s.fd = fd;
    s.sent = [];
  }

  async #read(address: string, s: Stream, want: GetRange, into: Uint8Array, plan: GetRange[]) {
    try {
      await this.#open(address, s);
    } catch (error) {
      this.#markDown(address, error); // refused, unreachable: the fill path skips it too
      throw error;
    }
    s.lastUse = performance.now();
    // A stuck peer (partitioned, hung) must not hold the reader: the watchdog's shutdown wakes
    // the recv (one timer for all streams: a timer per read cost microseconds per read).
    s.deadline = s.lastUse + this.#timeoutMs;
    s.timedOut = false;
    this.#watch();
    try {
      const head = s.sent[0];
      const continues = head !== undefined && covers(head.range, want) &&
        head.range.offset + head.consumed === want.offset;
      if (!continues) {
        // The reader jumped: what was requested before is read and dropped.
        for (const sent of s.sent.splice(0)) await this.#skip(s, sent);
      }
      await this.#request(s, plan);
      const sent = s.sent[0];
      let n: number;
      if (sent.consumed === 0) {
        const [h, m] = await this.#io.recvPair(s.fd, s.header, into);
        if (h < HEADER_BYTES) throw new Error(`peer ${address} closed the connection`);
        this.#checkHeader(address, sent, s.header, into);
        n = m;
      } else {
        n = await this.#io.recv(s.fd, into, MSG_WAITALL);
      }
      if (n !== into.length) throw new Error(`peer ${address} closed the connection mid-frame`);
      sent.consumed += n;
      if (sent.consumed === sent.range.rangeLength) s.sent.shift();
    } catch (error) {
      this.#drop(s);
      if (error instanceof MalformedFrameError) {
        console.error(`skyfs: peer ${address}: malformed frame (${error.message}); closing`);
      }
      const failure = s.timedOut
        ? new Error(`peer ${address} did not answer in ${this.#timeoutMs} ms`)
        : error;
      this.#markDown(address, failure);
      throw failure;
    } finally {
      s.deadline = 0;
    }
  }

  /** Runs while streams exist: shuts down the connection of a read past its deadline. */
  #watch(): void {
    if (this.#watchdog !== undefined) return;
    const every = Math.max(20, Math.min(1000, this.#timeoutMs / 4));
    const watchdog = setInterval(() => {
      const now = performance.now();
      for (const s of this.#streams.values()) {
        if (s.deadline > 0 && now > s.deadline && s.fd >= 0) {
          s.timedOut = true;
          s.deadline = 0;
          shutdownSocket(s.fd);
        }
      }
      if (this.#streams.size === 0) {
        clearInterval(watchdog);
        this.#watchdog = undefined;
      }
    }, every);
    Deno.unrefTimer(watchdog);
    this.#watchdog = watchdog;
  }

  /** The header just read must announce `sent`'s bytes; an ERROR's text went into `into`. */
  #checkHeader(address: string, sent: Sent, bytes: Uint8Array, into: Uint8Array): void {
    const header = parseHeader(bytes);
    if (header.requestId !== sent.id) {
      throw new MalformedFrameError(`reply ${header.requestId}, expected ${sent.id}`);
    }
    if (header.type === FrameType.ERROR) {
      // The stream is no longer aligned on frames: the caller drops it.
      const text = decodeText(into.subarray(0, Math.min(header.length, into.length)));
      throw new Error(`peer ${address}: ${text}`);
    }
    if (header.type !== FrameType.CHUNK || header.length !== sent.range.rangeLength) {
      throw new MalformedFrameError(`reply of type ${header.type}, ${header.length} bytes`);
    }
  }

  /** Sends the ranges of `plan` not requested yet, while under WINDOW_BYTES outstanding. */
  async #request(s: Stream, plan: GetRange[]): Promise<void> {
    let outstanding = s.sent.reduce((sum, sent) => sum + sent.range.rangeLength - sent.consumed, 0);
    const frames: Uint8Array[] = [];
    for (const range of plan) {
      if (s.sent.some((sent) => covers(sent.range, range))) continue;
      if (s.sent.length > 0 && outstanding >= UringTransport.WINDOW_BYTES) break;
      const id = s.nextId++;
      s.sent.push({ range, id, consumed: 0 });
      outstanding += range.rangeLength;
      frames.push(encodeFrame(FrameType.GET_RANGE, id, encodeGetRange(range)));
    }
    if (frames.length === 0) return;
    const bytes = new Uint8Array(frames.reduce((sum, f) => sum + f.length, 0));
    let at = 0;
    for (const frame of frames) {
      bytes.set(frame, at);
      at += frame.length;
    }
    await sendAll(this.#io, s.fd, bytes);
  }

  /** Reads and drops the rest of a reply nobody wants any more. */
  async #skip(s: Stream, sent: Sent): Promise<void> {
    let left = sent.range.rangeLength - sent.consumed;
    if (sent.consumed === 0) {
      if (await this.#io.recv(s.fd, s.header, MSG_WAITALL) < HEADER_BYTES) {
        throw new Error(`peer closed the connection`);
      }
      const header = parseHeader(s.header);
      if (header.requestId !== sent.id) {
        throw new MalformedFrameError(`reply ${header.requestId}, expected ${sent.id}`);
      }
      left = header.length;
    }
    while (left > 0) {
      const n = await this.#io.recv(
        s.fd,
        this.#discard.subarray(0, Math.min(left, this.#discard.length)),
        // Not MSG_TRUNC: on TCP it discarded more than asked (1.3 MiB for 1 MiB, measured),
        // which would cut into the next frame.
        MSG_WAITALL,
      );
      if (n <= 0) throw new Error(`peer closed the connection mid-frame`);
      left -= n;
    }
  }

  #drop(s: Stream): void {
    if (s.fd < 0) return;
    const fd = s.fd;
    s.fd = -1;
    s.sent = [];
    shutdownSocket(fd);
    this.#io.close(fd).catch(() => {});
  }

  /** The stream's connection closes (e.g. its file was closed); a later read reopens it. */
  endStream(stream: string): void {
    for (const [key, s] of this.#streams) {
      if (!key.endsWith(`|${stream}`)) continue;
      this.#streams.delete(key);
      s.tail = s.tail.catch(() => {}).then(() => this.#drop(s));
    }
  }

  #trim(): void {
    if (this.#streams.size <= UringTransport.MAX_STREAMS) return;
    const oldest = [...this.#streams.values()].sort((a, b) => a.lastUse - b.lastUse);
    // The newest (just added, lastUse 0) sorts first: skip it.
    const victims = oldest.filter((s) => s.lastUse > 0);
    for (const s of victims.slice(0, this.#streams.size - UringTransport.MAX_STREAMS)) {
      this.#streams.delete(s.key);
      s.tail = s.tail.catch(() => {}).then(() => this.#drop(s));
    }
  }

  close(): void {
    if (this.#watchdog !== undefined) clearInterval(this.#watchdog);
    this.#watchdog = undefined;
    for (const s of this.#streams.values()) {
      s.tail = s.tail.catch(() => {}).then(() => this.#drop(s));
      if (s.fd >= 0) shutdownSocket(s.fd); // wakes a read in progress
    }
    this.#streams.clear();
    this.#tcp.close();
  }
}
