import assert from "node:assert/strict";
import { rates, snapshotOf } from "./figures.ts";
import {
  compact,
  metricsUrl,
  renderHeader,
  renderLine,
  runStats,
  StatsError,
  statsOptions,
} from "./stats.ts";
import { sampleMetrics } from "./_sample_metrics.ts";

Deno.test("compact: at most 5 characters from 0 to petabytes", () => {
  const cases: [number, string][] = [
    [0, "0"],
    [0.004, "0"],
    [0.05, "0.05"],
    [1.5, "1.5"],
    [12.34, "12.3"],
    [123.4, "123"],
    [1234, "1234"],
    [9999, "9999"],
    [12_345, "12k"],
    [123_456, "123k"],
    [1_234_567, "1.2M"],
  ];
  for (const [value, text] of cases) {
    assert.deepEqual(compact(value), text, `${value}`);
  }
  assert.deepEqual(compact(null), "-");
  assert.deepEqual(compact(4 * 1048576, 1024), "4M");
  assert.deepEqual(compact(1536, 1024), "1536");
  assert.deepEqual(compact(15 * 1024, 1024), "15K");
  for (let exponent = -3; exponent < 18; exponent += 0.37) {
    const text = compact(10 ** exponent);
    assert(text.length <= 5, `${10 ** exponent} -> "${text}" is longer than 5`);
  }
});

Deno.test("renderHeader and renderLine: aligned columns within 100 characters", () => {
  const f = rates(snapshotOf(sampleMetrics(1), 0), snapshotOf(sampleMetrics(2), 1000));
  const [groups, titles] = renderHeader().split("\n");
  const line = renderLine(f);
  for (const text of [groups, titles, line]) {
    assert(text.length <= 100, `${text.length} characters: ${text}`);
  }
  assert.deepEqual(titles.length, line.length);
  assert.deepEqual(groups.length, line.length);
  // Separators line up: every "|" of the titles is a "|" on the line.
  for (let i = 0; i < titles.length; i++) {
    if (titles[i] === "|") assert.deepEqual(line[i], "|", `column ${i}`);
  }
  assert.match(groups, /fuse.*metadata.*cache.*backend.*process/);
  const cells = line.split(/[ |]+/).filter(Boolean);
  // fuse ops, ms, err, read, write | txn, ms, fast% | hit%, local, peer, bknd, used | req, ms |
  // cpu%, rss
  assert.deepEqual(cells, [
    "1500",
    "0.33",
    "10",
    "1M",
    "4M",
    "200",
    "2",
    "90.0",
    "75.0",
    "3M",
    "1M",
    "0",
    "1G",
    "10",
    "10",
    "35",
    "150M",
  ]);
});

Deno.test("statsOptions: bad values name the flag and the range", () => {
  assert.throws(() => statsOptions({ count: "0" }), {
    name: "StatsError",
    message: /--count "0" is not a whole number/,
  });
  assert.throws(() => statsOptions({ interval: "x" }), {
    name: "StatsError",
    message: /--interval/,
  });
  assert.deepEqual(statsOptions({ count: "3", interval: "0.5" }).count, 3);
});

Deno.test("metricsUrl: addresses, URLs, and paths that are not skyfs mounts", () => {
  assert.deepEqual(metricsUrl("127.0.0.1:9570"), "http://127.0.0.1:9570/metrics");
  assert.deepEqual(metricsUrl("http://h:1"), "http://h:1/metrics");
  assert.deepEqual(metricsUrl("http://h:1/metrics"), "http://h:1/metrics");
  assert.throws(() => metricsUrl("/proc"), { name: "StatsError", message: /not skyfs/ });
  assert.throws(() => metricsUrl("/no/such/dir"), {
    name: "StatsError",
    message: /not a mount point/,
  });
});

Deno.test("runStats: lines from a live endpoint; an unreachable one names the fix", async () => {
  let scrapes = 0;
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, () => {
    scrapes++;
    return new Response(sampleMetrics(scrapes));
  });
  const lines: string[] = [];
  try {
    await runStats(`127.0.0.1:${server.addr.port}`, {
      count: 3,
      intervalSeconds: 0.1,
      headerEvery: 2,
      write: (line) => lines.push(...line.split("\n")),
    });
  } finally {
    await server.shutdown();
  }
  assert.match(lines[0], /^skyfs stats: http:\/\/127\.0\.0\.1:\d+\/metrics \(node a, \/mnt\/a\)/);
  // title, header (2 lines), line, line, header (2 lines), line
  assert.deepEqual(lines.length, 8);
  assert.match(lines[5], /^-+fuse/);
  const port = server.addr.port;
  await assert.rejects(
    () => runStats(`127.0.0.1:${port}`, { count: 1 }),
    (error: Error) =>
      error instanceof StatsError &&
      error.message.startsWith(
        `cannot read http://127.0.0.1:${port}/metrics: connection refused; is the daemon running`,
      ),
  );
});
