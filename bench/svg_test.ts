import assert from "node:assert/strict";
import { axisTicks, barChart, chooseScale, escapeXml } from "./svg.ts";

Deno.test("chooseScale goes logarithmic only for wide ranges", () => {
  assert.equal(chooseScale([1, 20], "auto"), "linear");
  assert.equal(chooseScale([1, 100], "auto"), "log");
  assert.equal(chooseScale([1, 100], "linear"), "linear");
  assert.equal(chooseScale([5], "auto"), "linear");
});

Deno.test("axisTicks covers the largest value", () => {
  const linear = axisTicks(830, 10, "linear");
  assert.equal(linear[0], 0);
  assert.ok(linear[linear.length - 1] >= 830);
  assert.deepEqual(axisTicks(5000, 30, "log"), [10, 100, 1000, 10000]);
});

Deno.test("escapeXml escapes markup characters", () => {
  assert.equal(escapeXml(`a<b>&"c"`), "a&lt;b&gt;&amp;&quot;c&quot;");
});

Deno.test("barChart draws one bar per measured target and labels the missing ones", () => {
  const svg = barChart([
    {
      label: "j1-warm",
      bars: [
        { target: "ext4", value: 1000, ratio: null },
        { target: "skyfs", value: null, ratio: null, missingLabel: "failed to mount" },
        { target: "bindfs", value: 250, ratio: 0.25 },
      ],
    },
  ], { title: "seq-read <test>", unit: "MiB/s", targets: ["ext4", "skyfs", "bindfs"] });
  assert.ok(svg.startsWith('<svg xmlns="http://www.w3.org/2000/svg"'));
  assert.ok(svg.trimEnd().endsWith("</svg>"));
  assert.equal(svg.match(/<rect x="[\d.]+" y="[\d.]+" width="22"/g)?.length, 2);
  assert.match(svg, /skyfs: failed to mount/);
  assert.match(svg, /250 \(0\.25x\)/);
  assert.match(svg, /seq-read &lt;test&gt;/);
  // Every opened element is closed or self-closed: a cheap well-formedness check.
  const opened = (svg.match(/<(rect|text|svg|line|title)[\s>]/g) ?? []).length;
  const closed = (svg.match(/<\/(rect|text|svg|line|title)>|\/>/g) ?? []).length;
  assert.equal(opened, closed);
});
