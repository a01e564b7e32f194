/**
 * Headless Chromium driven over the Chrome DevTools Protocol (a WebSocket from Deno): open a
 * page, evaluate expressions in it, take screenshots. Used by the dashboard test. A machine
 * without Chromium makes the caller fail, never skip (scripts/setup.sh installs it).
 * @module
 */

import { join } from "node:path";

const CANDIDATES = ["/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"];

/** The Chromium binary; throws naming the fix when there is none. */
export function chromiumPath(): string {
  for (const path of CANDIDATES) {
    try {
      if (Deno.statSync(path).isFile) return path;
    } catch { /* not this one */ }
  }
  throw new Error(
    "Chromium is not installed (the dashboard test needs a real browser): " +
      "apt-get install chromium, or run scripts/setup.sh",
  );
}

interface Pending {
  resolve: (value: Record<string, unknown>) => void;
  reject: (error: Error) => void;
}

/** One browser process and one page in it. */
export class Chromium {
  readonly #child: Deno.ChildProcess;
  readonly #socket: WebSocket;
  readonly #profile: string;
  readonly #pending = new Map<number, Pending>();
  #nextId = 1;
  #session = "";
  /** Console messages and exceptions of the page, for failure reports. */
  readonly console: string[] = [];

  private constructor(child: Deno.ChildProcess, socket: WebSocket, profile: string) {
    this.#child = child;
    this.#socket = socket;
    this.#profile = profile;
    socket.onmessage = (event) => {
      const message = JSON.parse(event.data as string);
      if (message.id !== undefined) {
        const pending = this.#pending.get(message.id);
        this.#pending.delete(message.id);
        if (message.error) pending?.reject(new Error(`CDP: ${JSON.stringify(message.error)}`));
        else pending?.resolve(message.result ?? {});
      } else if (message.method === "Runtime.consoleAPICalled") {
        const args = message.params.args.map((a: { value?: unknown }) => String(a.value));
        this.console.push(`${message.params.type}: ${args.join(" ")}`);
      } else if (message.method === "Runtime.exceptionThrown") {
        this.console.push(`exception: ${JSON.stringify(message.params.exceptionDetails)}`);
      }
    };
  }

  /** Start headless Chromium (a fresh profile) with one page of `width` x `height`. */
  static async launch(options: { width?: number; height?: number } = {}): Promise<Chromium> {
    const binary = chromiumPath();
    const profile = await Deno.makeTempDir({ prefix: "skyfs-chromium-" });
    const child = new Deno.Command(binary, {
      args: [
        "--headless",
        "--no-sandbox", // root: Chromium refuses its sandbox
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--no-default-browser-check",
        "--remote-debugging-address=127.0.0.1",
        "--remote-debugging-port=0",
        `--user-data-dir=${profile}`,
        "about:blank",
      ],
      stdout: "null",
      stderr: "piped",
    }).spawn();
    let url: string;
    try {
      url = await devtoolsUrl(child, 30_000);
    } catch (error) {
      try {
        child.kill("SIGKILL");
      } catch { /* gone */ }
      await child.status;
      await Deno.remove(profile, { recursive: true }).catch(() => {});
      throw error;
    }
    const socket = new WebSocket(url);
    await new Promise<void>((resolve, reject) => {
      socket.onopen = () => resolve();
      socket.onerror = () => reject(new Error(`cannot open the DevTools socket ${url}`));
    });
    const browser = new Chromium(child, socket, profile);
    const { targetId } = await browser.send("Target.createTarget", { url: "about:blank" });
    const { sessionId } = await browser.send("Target.attachToTarget", { targetId, flatten: true });
    browser.#session = sessionId as string;
    await browser.send("Runtime.enable", {}, true);
    await browser.send("Page.enable", {}, true);
    await browser.send("Emulation.setDeviceMetricsOverride", {
      width: options.width ?? 1400,
      height: options.height ?? 1000,
      deviceScaleFactor: 1,
      mobile: false,
    }, true);
    return browser;
  }

  // deno-lint-ignore no-explicit-any
  send(method: string, params: Record<string, unknown> = {}, onPage = false): Promise<any> {
    const id = this.#nextId++;
    const message: Record<string, unknown> = { id, method, params };
    if (onPage) message.sessionId = this.#session;
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { resolve, reject });
      this.#socket.send(JSON.stringify(message));
    });
  }

  async goto(url: string): Promise<void> {
    await this.send("Page.navigate", { url }, true);
  }

  /** The value of a JavaScript expression in the page (awaited if it is a promise). */
  async evaluate<T>(expression: string): Promise<T> {
    const result = await this.send("Runtime.evaluate", {
      expression,
      returnByValue: true,
      awaitPromise: true,
    }, true);
    if (result.exceptionDetails) {
      throw new Error(`page: ${JSON.stringify(result.exceptionDetails).slice(0, 500)}`);
    }
    return result.result.value as T;
  }

  /** A PNG of the whole page (beyond the viewport when `fullPage`). */
  async screenshot(path: string, options: { fullPage?: boolean } = {}): Promise<void> {
    const { data } = await this.send("Page.captureScreenshot", {
      format: "png",
      captureBeyondViewport: options.fullPage ?? true,
    }, true);
    const bytes = Uint8Array.from(atob(data as string), (c) => c.charCodeAt(0));
    await Deno.writeFile(path, bytes);
  }

  async close(): Promise<void> {
    try {
      await Promise.race([
        this.send("Browser.close"),
        new Promise((resolve) => setTimeout(resolve, 3000)),
      ]);
    } catch { /* already closing */ }
    this.#socket.close();
    const timer = setTimeout(() => {
      try {
        this.#child.kill("SIGKILL");
      } catch { /* gone */ }
    }, 5000);
    await this.#child.status;
    clearTimeout(timer);
    await this.#child.stderr.cancel().catch(() => {});
    await Deno.remove(this.#profile, { recursive: true }).catch(() => {});
  }
}

/** Read Chromium's stderr until it prints its DevTools WebSocket address. */
async function devtoolsUrl(child: Deno.ChildProcess, timeoutMs: number): Promise<string> {
  const reader = child.stderr.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  const deadline = Date.now() + timeoutMs;
  try {
    while (Date.now() < deadline) {
      const timeout = new Promise<"timeout">((resolve) =>
        setTimeout(() => resolve("timeout"), Math.max(1, deadline - Date.now()))
      );
      const next = await Promise.race([reader.read(), timeout]);
      if (next === "timeout") break;
      if (next.done) break;
      text += next.value;
      const match = /DevTools listening on (ws:\/\/\S+)/.exec(text);
      if (match) {
        // Keep draining stderr so Chromium never blocks on a full pipe.
        void (async () => {
          try {
            while (!(await reader.read()).done) { /* discard */ }
          } catch { /* closed */ }
        })();
        return match[1];
      }
    }
  } catch { /* fall through to the error */ }
  throw new Error(`Chromium did not start its DevTools endpoint; it said:\n${text.slice(-2000)}`);
}

/** Where a test keeps what it produced (screenshots): `$SKYFS_TEST_TMP/skyfs-test-output/NAME`. */
export async function testOutputDir(name: string): Promise<string> {
  const dir = join(Deno.env.get("SKYFS_TEST_TMP") ?? "/tmp", "skyfs-test-output", name);
  await Deno.mkdir(dir, { recursive: true });
  return dir;
}
