/**
 * The MetaKV conformance suite, unchanged, against a real etcd-server (Debian's etcd 3.4) that
 * this file starts on free loopback ports and stops. Skipped with a reason when etcd is missing.
 * @module
 */

import { runMetaKVConformance } from "../../src/meta/conformance.ts";
import { openEtcdKV } from "../../src/meta/etcd.ts";
import { freePort } from "./_cluster.ts";

function etcdInstalled(): boolean {
  try {
    return Deno.statSync("/usr/bin/etcd").isFile;
  } catch {
    return false;
  }
}

interface EtcdProcess {
  child: Deno.ChildProcess;
  endpoint: string;
  dir: string;
}

let etcd: Promise<EtcdProcess> | undefined;

async function startEtcd(): Promise<EtcdProcess> {
  const dir = await Deno.makeTempDir({ prefix: "curp2-etcd-" });
  const client = `127.0.0.1:${freePort()}`;
  const peer = `127.0.0.1:${freePort()}`;
  const child = new Deno.Command("/usr/bin/etcd", {
    args: [
      "--name",
      "t",
      "--data-dir",
      dir,
      "--listen-client-urls",
      `http://${client}`,
      "--advertise-client-urls",
      `http://${client}`,
      "--listen-peer-urls",
      `http://${peer}`,
      "--initial-advertise-peer-urls",
      `http://${peer}`,
      "--initial-cluster",
      `t=http://${peer}`,
    ],
    stdout: "null",
    stderr: "null",
  }).spawn();
  const deadline = Date.now() + 20_000;
  while (true) {
    try {
      const kv = await openEtcdKV([client], { timeoutMs: 1000 });
      await kv.close();
      break;
    } catch (error) {
      if (Date.now() > deadline) {
        child.kill("SIGKILL");
        throw new Error(`etcd on ${client} did not start: ${(error as Error).message}`);
      }
      await new Promise((r) => setTimeout(r, 200));
    }
  }
  return { child, endpoint: client, dir };
}

const NO_ETCD = "etcd-server is not installed: apt-get install etcd-server";

if (etcdInstalled()) {
  runMetaKVConformance("etcd", async () => {
    etcd ??= startEtcd();
    return await openEtcdKV([(await etcd).endpoint]);
  }, { sanitizeResources: false, sanitizeOps: false });

  Deno.test({
    name: "etcd: stop the server",
    sanitizeResources: false,
    sanitizeOps: false,
    fn: async () => {
      if (etcd === undefined) return;
      const e = await etcd;
      e.child.kill("SIGKILL");
      await e.child.status;
      await Deno.remove(e.dir, { recursive: true }).catch(() => {});
    },
  });
} else {
  Deno.test({ name: `etcd conformance (skipped: ${NO_ETCD})`, ignore: true, fn: () => {} });
}
