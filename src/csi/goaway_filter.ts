/**
 * A unix-socket proxy in front of grpc-js that keeps HTTP/2 GOAWAY frames from clients away from
 * it. Why: under Deno 2.9 a node:http2 server aborts (nghttp2 `find_stream_on_goaway_func:
 * Assertion stream->closed_next == NULL`, sometimes `free(): invalid pointer`) when clients close
 * their connections gracefully; 200-400 connections of two calls each, closed with GOAWAY, are
 * enough (kubelet opens one connection per operation). A connection that just ends, without
 * GOAWAY, never did so in 600 tries. So the driver listens itself (Deno.listen), forwards each
 * connection to grpc-js's internal socket, drops the client's GOAWAY frames (the only frames the
 * filter looks at: it walks the frame headers after the 24-byte preface) and ends the internal
 * connection when the client's ends.
 * @module
 */

const PREFACE_BYTES = 24;
const FRAME_HEADER_BYTES = 9;
const GOAWAY = 0x7;
/** A frame larger than this closes the connection, which bounds the bytes held per connection:
 * 64 times the 16 KiB frame size a client may use unless the server raises it (grpc-js does not). */
const MAX_FRAME_BYTES = 1024 * 1024;

/** The bytes to forward of a client's stream, without its GOAWAY frames. */
export class GoawayFilter {
  #pending = new Uint8Array(0);
  #prefaceLeft = PREFACE_BYTES;
  /** GOAWAY frames dropped so far. */
  dropped = 0;

  /** Feeds received bytes; returns those to forward now. Throws RangeError on an oversized frame. */
  push(chunk: Uint8Array): Uint8Array {
    const out: Uint8Array[] = [];
    let data = this.#pending.length === 0 ? chunk : concat([this.#pending, chunk]);
    if (this.#prefaceLeft > 0) {
      const take = Math.min(this.#prefaceLeft, data.length);
      out.push(data.subarray(0, take));
      this.#prefaceLeft -= take;
      data = data.subarray(take);
    }
    let offset = 0;
    while (data.length - offset >= FRAME_HEADER_BYTES) {
      const length = (data[offset] << 16) | (data[offset + 1] << 8) | data[offset + 2];
      if (length > MAX_FRAME_BYTES) throw new RangeError(`HTTP/2 frame of ${length} bytes`);
      const end = offset + FRAME_HEADER_BYTES + length;
      if (end > data.length) break;
      if (data[offset + 3] === GOAWAY) this.dropped++;
      else out.push(data.subarray(offset, end));
      offset = end;
    }
    this.#pending = data.slice(offset);
    return concat(out);
  }
}

function concat(parts: Uint8Array[]): Uint8Array {
  if (parts.length === 1) return parts[0];
  const total = parts.reduce((sum, part) => sum + part.length, 0);
  const joined = new Uint8Array(total);
  let at = 0;
  for (const part of parts) {
    joined.set(part, at);
    at += part.length;
  }
  return joined;
}

async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  for (let at = 0; at < bytes.length;) at += await conn.write(bytes.subarray(at));
}

/** The proxy: listens on `publicPath`, forwards to `internalPath`. */
export interface GoawayProxy {
  /** Connections accepted so far. */
  connections(): number;
  close(): void;
}

export function startGoawayProxy(publicPath: string, internalPath: string): GoawayProxy {
  const listener = Deno.listen({ transport: "unix", path: publicPath });
  let accepted = 0;
  const open = new Set<Deno.Conn>();
  const serve = async (client: Deno.Conn) => {
    let upstream: Deno.Conn;
    try {
      upstream = await Deno.connect({ transport: "unix", path: internalPath });
    } catch {
      client.close();
      return;
    }
    open.add(client);
    open.add(upstream);
    const closeBoth = () => {
      for (const conn of [client, upstream]) {
        if (open.delete(conn)) {
          try {
            conn.close();
          } catch { /* already closed */ }
        }
      }
    };
    const filter = new GoawayFilter();
    const toServer = (async () => {
      const buffer = new Uint8Array(64 * 1024);
      for (;;) {
        const n = await client.read(buffer);
        if (n === null) return;
        const forward = filter.push(buffer.subarray(0, n));
        if (forward.length > 0) await writeAll(upstream, forward);
      }
    })();
    const toClient = (async () => {
      const buffer = new Uint8Array(64 * 1024);
      for (;;) {
        const n = await upstream.read(buffer);
        if (n === null) return;
        await writeAll(client, buffer.subarray(0, n));
      }
    })();
    // Either side ending (or failing) ends both: the internal side sees a plain end of stream.
    await Promise.race([toServer, toClient]).catch(() => {});
    closeBoth();
    await Promise.allSettled([toServer, toClient]);
  };
  (async () => {
    try {
      for await (const client of listener) {
        accepted++;
        serve(client);
      }
    } catch { /* listener closed */ }
  })();
  return {
    connections: () => accepted,
    /** Stops accepting; open connections stay until the process exits (ending them would have
     * grpc-js's side answer with GOAWAY, the very thing this avoids). */
    close() {
      try {
        listener.close();
      } catch { /* already closed */ }
    },
  };
}
