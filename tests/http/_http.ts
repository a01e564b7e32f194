/**
 * Helpers of the HTTP endpoint tests: a mount with its endpoint on a free loopback port, and the
 * address the daemon printed.
 * @module
 */

import { type Mount, startMount, type StartMountOptions } from "../_harness.ts";

/** The address in the process's "http: listening on http://HOST:PORT" line, waited for. */
export async function listeningUrl(output: () => string, timeoutMs = 30_000): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const match = /http: listening on (http:\/\/\S+)/.exec(output());
    if (match) return match[1];
    if (Date.now() > deadline) {
      throw new Error(`no "http: listening on" line within ${timeoutMs} ms:\n${output()}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

export interface HttpMount {
  mount: Mount;
  url: string;
}

/** startMount with `--http 127.0.0.1:0` (and `extraArgs`), and the endpoint's URL. */
export async function startHttpMount(options: StartMountOptions = {}): Promise<HttpMount> {
  const mount = await startMount({
    ...options,
    extraArgs: ["--http", "127.0.0.1:0", ...(options.extraArgs ?? [])],
  });
  try {
    return { mount, url: await listeningUrl(mount.stderr) };
  } catch (error) {
    await mount.dispose();
    throw error;
  }
}

/** GET/POST `path` and the JSON body. */
export async function fetchJson(
  url: string,
  init: RequestInit = {},
): Promise<{ status: number; body: Record<string, unknown>; headers: Headers }> {
  const response = await fetch(url, init);
  const text = await response.text();
  let body: Record<string, unknown>;
  try {
    body = JSON.parse(text);
  } catch {
    throw new Error(`${init.method ?? "GET"} ${url}: ${response.status}, not JSON: ${text}`);
  }
  return { status: response.status, body, headers: response.headers };
}
