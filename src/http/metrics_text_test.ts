import assert from "node:assert/strict";
import { MetricSet, parseMetricsText } from "./metrics_text.ts";
import { sampleMetrics } from "./_sample_metrics.ts";

Deno.test("parseMetricsText reads names, labels, values; skips comments and blank lines", () => {
  const samples = parseMetricsText(`# HELP a_total help text with "quotes"
# TYPE a_total counter

a_total 3
b{x="1",y="two words"} 4.5 1700000000000
c{le="+Inf"} +Inf
d NaN
e{path="a\\\\b\\"c\\nd",} -2e-3
f Nan
`);
  assert.deepEqual(samples.length, 6);
  assert(Number.isNaN(samples[5].value), "prom-client's spelling");
  assert.deepEqual(samples[0], { name: "a_total", labels: {}, value: 3 });
  assert.deepEqual(samples[1], { name: "b", labels: { x: "1", y: "two words" }, value: 4.5 });
  assert.deepEqual(samples[2].value, Infinity);
  assert(Number.isNaN(samples[3].value));
  assert.deepEqual(samples[4].labels.path, 'a\\b"c\nd');
  assert.deepEqual(samples[4].value, -0.002);
});

Deno.test("parseMetricsText names the line that is not a sample", () => {
  assert.throws(() => parseMetricsText("ok 1\nbad{x=1} 2\n"), {
    name: "SyntaxError",
    message: /metrics line 2/,
  });
  assert.throws(() => parseMetricsText('x{y="open} 1'), {
    name: "SyntaxError",
    message: /not closed/,
  });
  assert.throws(() => parseMetricsText("x abc"), { name: "SyntaxError", message: /not a number/ });
  assert.throws(() => parseMetricsText("<html>"), {
    name: "SyntaxError",
    message: /no metric name/,
  });
});

Deno.test("MetricSet sums, groups by label and finds the constant labels", () => {
  const set = MetricSet.parse(sampleMetrics(1));
  assert.deepEqual(set.sum("skyfs_fuse_requests_total"), 1500);
  assert.deepEqual(set.sum("skyfs_fuse_requests_total", { op: "write" }), 400);
  assert.deepEqual(set.byLabel("skyfs_cache_hits_total", "tier").get("peer"), 20);
  assert.deepEqual(set.label("node"), "a");
  assert.deepEqual(set.label("mountpoint"), "/mnt/a");
  assert.deepEqual(set.value("skyfs_curp_is_leader"), undefined);
  assert.deepEqual(set.sum("missing_total"), 0);
});
