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
  /** Link bandwidth in megabits per second, each direction (unset: unlimited). A chunk leaves
   * no earlier than its bytes fit through the link after the ones before it. */
  bandwidthMbit?: number;
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
  /** Bytes read while the link was cut, never forwarded. */
  dropped: number;
  /** Request bursts: chunks client -> target that follow an answer (or open the connection),
   * counted per connection. Sequential request/answer exchanges each count one, so the count
   * over an operation is the round trips it made through this link (pipelined requests that
   * overlap count once). */
  exchanges: number;
}

export class DelayProxy {
  readonly #options: DelayProxyOptions;
  #listener: Deno.TcpListener | null = null;
  readonly #conns = new Set<Deno.Conn>();
  readonly #stats: DelayProxyStats = {
    connections: 0,
    bytesUp: 0,
    bytesDown: 0,
    chunks: 0,
    dropped: 0,
    exchanges: 0,
  };
  #loop: Promise<void> = Promise.resolve();
  #cut = false;
  /** Connections that lost bytes to a cut (or were accepted during one): closed at the heal. */
  readonly #broken = new Set<Deno.Conn>();

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

  get isCut(): boolean {
    return this.#cut;
  }

  /**
   * Cut the link (true), as a partition or iptables DROP would: new connections are accepted but
   * reach nothing, bytes on every connection are read and dropped, nothing is answered or closed,
   * so a peer that does not time out waits forever. Heal (false): the connections that lost
   * bytes are closed (their streams are broken, as a TCP connection that timed out), new ones are
   * forwarded again.
   */
  cut(on = true): void {
    this.#cut = on;
    if (on) return;
    for (const c of this.#broken) {
      try {
        c.close();
      } catch { /* closed */ }
      this.#conns.delete(c);
    }
    this.#broken.clear();
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
        if (this.#cut) {
          // A SYN through a dropped link gets no answer; here the client's connect succeeds
          // against this end, and then nothing comes back until it gives up (or the heal closes it).
          this.#conns.add(c);
          this.#broken.add(c);
          void this.#drain(c);
          continue;
        }
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
        const state = { answered: true };
        void this.#pipe(c, t, true, state);
        void this.#pipe(t, c, false, state);
      }
    } catch { /* closed */ }
  }

  /** Read and drop everything a connection accepted during a cut sends. */
  async #drain(c: Deno.Conn): Promise<void> {
    const buf = new Uint8Array(64 * 1024);
    try {
      while (true) {
        const n = await c.read(buf);
        if (n === null) break;
        this.#stats.dropped += n;
      }
    } catch { /* closed */ }
    this.#broken.delete(c);
    this.#conns.delete(c);
    try {
      c.close();
    } catch { /* closed */ }
  }

  async #pipe(
    from: Deno.Conn,
    to: Deno.Conn,
    up: boolean,
    state: { answered: boolean },
  ): Promise<void> {
    const buf = new Uint8Array(256 * 1024);
    let last = Promise.resolve();
    // When the link is free again (bandwidth limit): a chunk waits for the ones before it.
    let free = 0;
    const msPerByte = this.#options.bandwidthMbit ? 8 / (this.#options.bandwidthMbit * 1000) : 0;
    try {
      while (true) {
        const n = await from.read(buf);
        if (n === null) break;
        if (this.#cut) {
          this.#stats.dropped += n;
          this.#broken.add(from);
          this.#broken.add(to);
          continue;
        }
        if (up && state.answered) this.#stats.exchanges++;
        state.answered = !up;
        const chunk = buf.slice(0, n);
        const now = performance.now();
        free = Math.max(free, now) + n * msPerByte;
        const due = (msPerByte ? free : now) + this.#options.oneWayMs;
        const previous = last;
        last = (async () => {
          await previous;
          const wait = due - performance.now();
          if (wait > 0) await new Promise((r) => setTimeout(r, wait));
          if (this.#cut) {
            // Still on the wire when the link went down: lost.
            this.#stats.dropped += chunk.length;
            this.#broken.add(from);
            this.#broken.add(to);
            return;
          }
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
