// A real Prometheus server (Debian package prometheus) on loopback scrapes a mount under load every
// second; its HTTP API's rate of FUSE requests must be above zero and within an order of magnitude
// of the rate of file system calls the load made.
import assert from "node:assert/strict";
import { join } from "node:path";
import { freePort } from "../../src/cluster/local_cluster.ts";
import { makeTempDir } from "../_harness.ts";
import { startHttpMount } from "./_http.ts";

/** File system calls one load iteration makes (each reaches the daemon with passthrough off):
 * open(O_CREAT), write, close; open, read, close; unlink. */
const CALLS_PER_ITERATION = 7;

async function waitUntil<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 60_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      const value = await probe();
      if (value !== undefined) return value;
    } catch { /* not yet */ }
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}

Deno.test("Prometheus scrapes a mount under load; its FUSE request rate matches the load", async () => {
  const { mount, url } = await startHttpMount({ extraArgs: ["--passthrough", "off"] });
  const dir = await makeTempDir("prometheus");
  const target = new URL(url).host;
  await Deno.writeTextFile(
    join(dir, "prometheus.yml"),
    [
      "global:",
      "  scrape_interval: 1s",
      "  evaluation_interval: 1s",
      "scrape_configs:",
      "  - job_name: skyfs",
      "    static_configs:",
      `      - targets: ["${target}"]`,
      "",
    ].join("\n"),
  );
  const web = `127.0.0.1:${freePort()}`;
  let prometheus: Deno.ChildProcess;
  try {
    prometheus = new Deno.Command("prometheus", {
      args: [
        `--config.file=${join(dir, "prometheus.yml")}`,
        `--storage.tsdb.path=${join(dir, "data")}`,
        `--web.listen-address=${web}`,
      ],
      stdout: "null",
      stderr: "piped",
    }).spawn();
  } catch (error) {
    await mount.dispose();
    throw new Error(
      `prometheus is missing (${(error as Error).message}): run scripts/setup.sh, which installs ` +
        `the Debian package prometheus`,
    );
  }
  const log = { text: "" };
  const logging = (async () => {
    for await (const chunk of prometheus.stderr) log.text += new TextDecoder().decode(chunk);
  })();
  const stop = { done: false };
  let iterations = 0;
  let loadStarted = 0;
  const load = (async () => {
    const data = new Uint8Array(4096).fill(7);
    loadStarted = performance.now();
    while (!stop.done) {
      const path = join(mount.mountpoint, `f${iterations % 16}`);
      await Deno.writeFile(path, data);
      assert.equal((await Deno.readFile(path)).length, data.length);
      await Deno.remove(path);
      iterations++;
    }
  })();
  try {
    await waitUntil("prometheus ready", async () => {
      const response = await fetch(`http://${web}/-/ready`);
      await response.body?.cancel();
      return response.ok ? true : undefined;
    });
    // Enough scrapes for a 5 s window, then one query while the load still runs.
    const query = "sum(rate(skyfs_fuse_requests_total[5s]))";
    const rate = await waitUntil("a FUSE request rate from Prometheus", async () => {
      const response = await fetch(
        `http://${web}/api/v1/query?query=${encodeURIComponent(query)}`,
      );
      const body = await response.json();
      assert.equal(body.status, "success", JSON.stringify(body));
      const result = body.data.result as { value: [number, string] }[];
      if (result.length === 0) return undefined;
      const value = Number(result[0].value[1]);
      // rate() needs two samples in the window; keep asking until the window is full.
      return (performance.now() - loadStarted) > 8000 && value > 0 ? value : undefined;
    });
    const callsPerSecond = iterations * CALLS_PER_ITERATION /
      ((performance.now() - loadStarted) / 1000);
    const ratio = rate / callsPerSecond;
    console.log(
      `Prometheus: ${rate.toFixed(1)} FUSE requests/s; load: ${
        callsPerSecond.toFixed(1)
      } calls/s; ratio ${ratio.toFixed(2)}`,
    );
    assert.ok(rate > 0, `rate ${rate}`);
    assert.ok(
      ratio > 0.1 && ratio < 10,
      `Prometheus says ${rate.toFixed(1)} FUSE requests/s, the load made ${
        callsPerSecond.toFixed(1)
      } calls/s (ratio ${ratio.toFixed(2)})`,
    );
    const up = await (await fetch(`http://${web}/api/v1/query?query=up`)).json();
    assert.equal(up.data.result[0].value[1], "1", JSON.stringify(up));
  } catch (error) {
    throw new Error(`${(error as Error).message}\nprometheus log:\n${log.text}`);
  } finally {
    stop.done = true;
    await load.catch(() => {});
    prometheus.kill("SIGTERM");
    await prometheus.status;
    await logging;
    await mount.dispose();
    await Deno.remove(dir, { recursive: true });
  }
});
