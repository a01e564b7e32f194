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

/** Every metric a mount serves (the contract with the dashboard and `skyfs stats`). */
export const MOUNT_METRICS = [
  "skyfs_fuse_requests_total",
  "skyfs_fuse_errors_total",
  "skyfs_fuse_request_duration_seconds",
  "skyfs_fuse_read_bytes_total",
  "skyfs_fuse_write_bytes_total",
  "skyfs_fuse_passthrough_opens_total",
  "skyfs_fuse_open_handles",
  "skyfs_shim_files_granted_total",
  "skyfs_shim_files_refused_total",
  "skyfs_shim_reads_total",
  "skyfs_shim_writes_total",
  "skyfs_meta_transactions_total",
  "skyfs_meta_transaction_duration_seconds",
  "skyfs_meta_conflicts_total",
  "skyfs_meta_retries_total",
  "skyfs_curp_commits_total",
  "skyfs_curp_commit_duration_seconds",
  "skyfs_cache_hits_total",
  "skyfs_cache_misses_total",
  "skyfs_cache_read_bytes_total",
  "skyfs_cache_evictions_total",
  "skyfs_cache_used_bytes",
  "skyfs_cache_capacity_bytes",
  "skyfs_peer_served_bytes_total",
  "skyfs_peer_fetched_bytes_total",
  "skyfs_read_bytes_total",
  "skyfs_replication_queue_length",
  "skyfs_replication_queue_oldest_seconds",
  "skyfs_replication_copies_total",
  "skyfs_replication_copied_bytes_total",
  "skyfs_replication_failures_total",
  "skyfs_replication_takeovers_total",
  "skyfs_backend_requests_total",
  "skyfs_backend_request_duration_seconds",
  "skyfs_backend_errors_total",
  "skyfs_zone_backend_requests_total",
  "skyfs_uring_submissions_total",
  "skyfs_uring_completions_total",
  "skyfs_uring_enter_calls_total",
  "skyfs_uring_inflight",
  "process_resident_memory_bytes",
  "skyfs_heap_used_bytes",
  "skyfs_event_loop_delay_seconds",
  "process_cpu_seconds_total",
];

/** Every metric a `skyfs meta serve` replica serves beyond the process and io_uring ones. */
export const REPLICA_METRICS = [
  "skyfs_curp_is_leader",
  "skyfs_curp_term",
  "skyfs_curp_commit_index",
  "skyfs_curp_applied_index",
  "skyfs_curp_log_bytes",
  "skyfs_curp_witness_pool_size",
  "skyfs_curp_snapshots_sent_total",
  "process_resident_memory_bytes",
  "skyfs_heap_used_bytes",
  "skyfs_event_loop_delay_seconds",
  "process_cpu_seconds_total",
];

/** Metric names declared (# TYPE lines) in an exposition text. */
export function declaredMetrics(text: string): Set<string> {
  return new Set([...text.matchAll(/^# TYPE (\S+) /gm)].map((m) => m[1]));
}

/** The value of the first sample line of `name` whose labels contain every `labels` pair. */
export function sampleValue(text: string, name: string, labels: Record<string, string> = {}) {
  for (const line of text.split("\n")) {
    const match = /^(\S+?)(\{.*\})? (\S+)$/.exec(line);
    if (!match || match[1] !== name) continue;
    const set = match[2] ?? "";
    if (Object.entries(labels).every(([k, v]) => set.includes(`${k}="${v}"`))) {
      return Number(match[3]);
    }
  }
  return undefined;
}

/** `promtool check metrics` on `text` (Debian package prometheus): throws with its findings. */
export async function promtoolCheck(text: string): Promise<void> {
  let child: Deno.ChildProcess;
  try {
    child = new Deno.Command("promtool", {
      args: ["check", "metrics"],
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
  } catch (error) {
    throw new Error(
      `promtool is missing (${(error as Error).message}): run scripts/setup.sh, which installs ` +
        `the Debian package prometheus`,
    );
  }
  const writer = child.stdin.getWriter();
  await writer.write(new TextEncoder().encode(text));
  await writer.close();
  const out = await child.output();
  const findings = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  if (out.code !== 0 || findings.trim() !== "") {
    throw new Error(`promtool check metrics exited ${out.code}:\n${findings}`);
  }
}
