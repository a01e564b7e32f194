/**
 * The dashboard in a real browser: headless Chromium (over the DevTools protocol) loads `/` from
 * a mount doing I/O and waits until the charts' figures, read from the DOM, are non-zero
 * (operations, latency, bytes); then two mounts of a local CURP cluster, where one node's page
 * lists both nodes with live figures gathered from the other's endpoint. Screenshots go to
 * `$SKYFS_TEST_TMP/skyfs-test-output/dashboard/`. Without Chromium the test fails (it is a Debian
 * package scripts/setup.sh installs). Needs root and /dev/fuse.
 * @module
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { Chromium, testOutputDir } from "../_chromium.ts";
import { startHttpMount } from "./_http.ts";
import { startLoad, stopLoad } from "./_load.ts";
import { LocalCluster } from "../../src/cluster/local_cluster.ts";

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Poll `read` in the page until `done` accepts its value; throws with the last value. */
async function waitInPage<T>(
  browser: Chromium,
  expression: string,
  done: (value: T) => boolean,
  what: string,
  timeoutMs = 60_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let value: T | undefined;
  for (;;) {
    value = await browser.evaluate<T>(expression);
    if (done(value)) return value;
    if (Date.now() > deadline) {
      throw new Error(
        `${what}: not seen in the page after ${timeoutMs} ms; last: ${JSON.stringify(value)}\n` +
          `page console:\n${browser.console.join("\n")}`,
      );
    }
    await sleep(500);
  }
}

/** Every data-figure element of the page: key -> [shown text, raw value]. */
const FIGURES = `Object.fromEntries([...document.querySelectorAll("[data-figure]")]
  .map((e) => [e.dataset.figure, [e.textContent, e.dataset.value ?? ""]]))`;

type Figures = Record<string, [string, string]>;
const positive = (figures: Figures, key: string) => Number(figures[key]?.[1]) > 0;

Deno.test("dashboard: Chromium shows live non-zero figures of a mount doing I/O", async () => {
  const output = await testOutputDir("dashboard");
  // Without passthrough every read and write goes through the daemon: bytes show as well.
  const { mount, url } = await startHttpMount({ extraArgs: ["--passthrough", "off"] });
  const load = startLoad(mount.mountpoint);
  let browser: Chromium | undefined;
  try {
    browser = await Chromium.launch({ width: 1400, height: 1000 });
    await browser.goto(`${url}/`);
    const figures = await waitInPage<Figures>(
      browser,
      FIGURES,
      (f) =>
        positive(f, "fuse.opsPerSecond") && positive(f, "fuse.latencyMs") &&
        positive(f, "fuse.writeBytesPerSecond") && positive(f, "process.rssBytes"),
      "FUSE operations, latency and bytes above zero",
    );
    // The figures are the charts' own latest points: the plots hold non-zero data too.
    const plotted = await browser.evaluate<Record<string, number>>(`Object.fromEntries(
      [...globalThis.skyfs.charts].map(([id, { chart }]) =>
        [id, chart.data.slice(1).flat().filter((v) => v > 0).length]))`);
    for (const id of ["chart-ops", "chart-latency", "chart-bytes"]) {
      assert.ok(plotted[id] > 0, `${id} plots no non-zero value: ${JSON.stringify(plotted)}`);
    }
    const canvases = await browser.evaluate<number>(
      `[...document.querySelectorAll("main canvas")].filter((c) => c.width > 100).length`,
    );
    assert.ok(canvases >= 6, `${canvases} charts drawn`);
    assert.match(figures["fuse.opsPerSecond"][0], /^\d/);
    // A few more seconds of history for the picture.
    await sleep(4000);
    const path = join(output, "dashboard.png");
    await browser.screenshot(path);
    assert.ok((await Deno.stat(path)).size > 20_000, "the screenshot is (nearly) empty");
  } finally {
    await browser?.close();
    await stopLoad(load);
    await mount.dispose();
  }
});

Deno.test("dashboard: the cluster table shows both nodes of a local cluster, live", async () => {
  const output = await testOutputDir("dashboard");
  const cluster = await LocalCluster.start("skyfs-dashboard-", { nodes: 2 });
  const loads: Deno.ChildProcess[] = [];
  let browser: Chromium | undefined;
  try {
    for (const node of cluster.nodes) loads.push(startLoad(node.mountpoint));
    const [a] = cluster.nodes;
    const url = await cluster.httpUrl(a);
    browser = await Chromium.launch({ width: 1400, height: 1100 });
    await browser.goto(`${url}/`);
    const rows = await waitInPage<Record<string, string>[]>(
      browser,
      `[...document.querySelectorAll("#cluster tbody tr")].map((row) => ({
        id: row.dataset.node,
        ops: row.dataset.opsPerSecond ?? "",
        hidden: String(document.getElementById("cluster").hidden),
        text: row.textContent,
      }))`,
      (rows) =>
        rows.length === 2 && rows.every((row) => Number(row.ops) > 0 && row.hidden === "false"),
      "two nodes with FUSE operations in the cluster table",
      90_000,
    );
    assert.deepEqual(rows.map((row) => row.id), ["a", "b"]);
    assert.match(rows[0].text, /this node/);
    await browser.evaluate(`document.getElementById("cluster").scrollIntoView()`);
    await browser.screenshot(join(output, "dashboard-cluster.png"));
  } finally {
    await browser?.close();
    await Promise.all(loads.map(stopLoad));
    await cluster.stop();
  }
});
