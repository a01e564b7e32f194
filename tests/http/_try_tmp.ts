import { startHttpMount } from "./_http.ts";
const { mount, url } = await startHttpMount();
try {
  await Deno.writeTextFile(`${mount.mountpoint}/a`, "hello");
  const m = await (await fetch(url + "/metrics")).text();
  await Deno.writeTextFile("/tmp/h4_metrics.txt", m);
} finally {
  await mount.dispose();
}
