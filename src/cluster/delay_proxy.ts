/**
 * A userspace TCP delay proxy: forwards a listening port to a target address, delaying each
 * chunk by `oneWayMs` in each direction (so a round trip through it costs at least 2 x
 * oneWayMs). Order is kept: a chunk is written no earlier than the one before it. Used where
 * netem is not available (local emulated clouds: `deno task cluster --zones N --rtt-ms R`,
 * bench/meta_wan).
 */

export interface DelayProxyOptions {
  /** Where to forward to. */
  target: { hostname?: string; port: number };
  /** Delay applied to each chunk, in each direction. */
  oneWayMs: number;
  /** Port to listen on (0 = any free port). */
  port?: number;
  hostname?: string;
}

export interface DelayProxyStats {
  /** Connections accepted so far. */
  connections: number;
  /** Bytes forwarded client -> target. */
  bytesUp: number;
  /** Bytes forwarded target -> client. */
  bytesDown: number;
  /** Chunks forwarded (both directions), each delayed by oneWayMs. */
  chunks: number;
}

export class DelayProxy {
  readonly #options: DelayProxyOptions;
  #listener: Deno.TcpListener | null = null;
  readonly #conns = new Set<Deno.Conn>();
  readonly #stats: DelayProxyStats = { connections: 0, bytesUp: 0, bytesDown: 0, chunks: 0 };
  #loop: Promise<void> = Promise.resolve();

  constructor(options: DelayProxyOptions) {
    this.#options = options;
  }

  /** Starts listening; returns the port. */
  start(): number {
    if (this.#listener) return this.port;
    this.#listener = Deno.listen({
      hostname: this.#options.hostname ?? "127.0.0.1",
      port: this.#options.port ?? 0,
    });
    this.#loop = this.#accept(this.#listener);
    return this.port;
  }

  get port(): number {
    if (!this.#listener) throw new Error("delay proxy not started");
    return (this.#listener.addr as Deno.NetAddr).port;
  }

  /** "127.0.0.1:PORT" of the listening side. */
  get address(): string {
    return `${this.#options.hostname ?? "127.0.0.1"}:${this.port}`;
  }

  get oneWayMs(): number {
    return this.#options.oneWayMs;
  }

  stats(): DelayProxyStats {
    return { ...this.#stats };
  }

  async stop(): Promise<void> {
    const listener = this.#listener;
    this.#listener = null;
    try {
      listener?.close();
    } catch { /* closed */ }
    for (const c of this.#conns) {
      try {
        c.close();
      } catch { /* closed */ }
    }
    this.#conns.clear();
    await this.#loop;
  }

  async #accept(listener: Deno.TcpListener): Promise<void> {
    try {
      for await (const c of listener) {
        let t: Deno.TcpConn;
        try {
          t = await Deno.connect({
            hostname: this.#options.target.hostname ?? "127.0.0.1",
            port: this.#options.target.port,
          });
        } catch {
          try {
            c.close();
          } catch { /* closed */ }
          continue;
        }
        c.setNoDelay(true);
        t.setNoDelay(true);
        this.#stats.connections++;
        this.#conns.add(c);
        this.#conns.add(t);
        void this.#pipe(c, t, true);
        void this.#pipe(t, c, false);
      }
    } catch { /* closed */ }
  }

  async #pipe(from: Deno.Conn, to: Deno.Conn, up: boolean): Promise<void> {
    const buf = new Uint8Array(256 * 1024);
    let last = Promise.resolve();
    try {
      while (true) {
        const n = await from.read(buf);
        if (n === null) break;
        const chunk = buf.slice(0, n);
        const due = performance.now() + this.#options.oneWayMs;
        const previous = last;
        last = (async () => {
          await previous;
          const wait = due - performance.now();
          if (wait > 0) await new Promise((r) => setTimeout(r, wait));
          let at = 0;
          while (at < chunk.length) at += await to.write(chunk.subarray(at));
          this.#stats.chunks++;
          if (up) this.#stats.bytesUp += chunk.length;
          else this.#stats.bytesDown += chunk.length;
        })().catch(() => {});
      }
    } catch { /* closed */ }
    await last;
    for (const c of [to, from]) {
      try {
        c.close();
      } catch { /* closed */ }
      this.#conns.delete(c);
    }
  }
}
