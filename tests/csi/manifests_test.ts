/**
 * The Kubernetes manifests of deploy/kubernetes, checked offline (no cluster, no API server):
 * every document parses as YAML; its apiVersion and kind are a Kubernetes type and it validates
 * against that type's JSON schema (the npm package kubernetes-models, generated from the
 * Kubernetes OpenAPI spec: types, required fields, enums, int32/quantity formats); `deno check` of
 * the documents typed as that type's TypeScript interface catches unknown fields at any depth (a
 * typo such as `mountPropogation`, which the JSON schemas let pass); and skyfs's own links hold:
 * the driver name, StorageClass parameters, the skyfs.toml and each skyfs container's flags as
 * `skyfs config` reads them, RBAC bindings, service accounts, volumes and the replicas' names.
 * @module
 */

import { join } from "node:path";
import { parseAllDocuments } from "yaml";
import { DRIVER_NAME } from "../../src/csi/rules.ts";
import { parseParameters } from "../../src/csi/rules.ts";
import { REPO_ROOT, run, runSkyfs } from "../_harness.ts";
import { assert } from "./_csi.ts";

const DIR = join(REPO_ROOT, "deploy", "kubernetes");

// deno-lint-ignore no-explicit-any
type Doc = Record<string, any>;

async function loadManifests(): Promise<{ file: string; doc: Doc }[]> {
  const found: { file: string; doc: Doc }[] = [];
  const files = [...Deno.readDirSync(DIR)].map((e) => e.name).filter((n) => n.endsWith(".yaml"))
    .sort();
  assert.ok(files.length >= 8, `only ${files.length} manifests in ${DIR}`);
  for (const file of files) {
    const text = await Deno.readTextFile(join(DIR, file));
    for (const document of parseAllDocuments(text)) {
      assert.deepEqual(document.errors.map((e) => e.message), [], `${file}: YAML errors`);
      const doc = document.toJS() as Doc | null;
      if (doc !== null) found.push({ file, doc });
    }
  }
  return found;
}

/** kubernetes-models' module for an apiVersion and kind (`v1` is the core group). */
function modelPath(doc: Doc): string {
  return `kubernetes-models/${doc.apiVersion}/${doc.kind}`;
}

function podSpec(doc: Doc): Doc | undefined {
  return doc.kind === "Pod" ? doc.spec : doc.spec?.template?.spec;
}

Deno.test("manifests: YAML, Kubernetes schemas, no unknown fields", async () => {
  const manifests = await loadManifests();
  for (const { file, doc } of manifests) {
    assert.ok(typeof doc.apiVersion === "string" && typeof doc.kind === "string", file);
    assert.ok(doc.metadata?.name, `${file}: ${doc.kind} without metadata.name`);
    let model;
    try {
      model = await import(modelPath(doc));
    } catch {
      assert.fail(`${file}: ${doc.apiVersion} ${doc.kind} is not a Kubernetes type`);
    }
    try {
      new model[doc.kind](doc).validate();
    } catch (error) {
      assert.fail(`${file}: ${doc.kind} ${doc.metadata.name}: ${(error as Error).message}`);
    }
  }
  // Unknown fields: each document as an object literal of its interface type.
  const lines: string[] = [];
  manifests.forEach(({ file, doc }, index) => {
    lines.push(`import type { I${doc.kind} as T${index} } from "${modelPath(doc)}";`);
    lines.push(`// ${file}: ${doc.kind} ${doc.metadata.name}`);
    lines.push(`export const doc${index}: T${index} = ${JSON.stringify(doc, null, 2)};`);
  });
  const typed = join(REPO_ROOT, "tests", "csi", `_manifests_typed_${Deno.pid}.ts`);
  await Deno.writeTextFile(typed, lines.join("\n") + "\n");
  try {
    const result = await run(Deno.execPath(), ["check", "--quiet", typed], {
      cwd: REPO_ROOT,
      check: false,
    });
    assert.equal(result.code, 0, `unknown or mistyped fields:\n${result.stderr}${result.stdout}`);
  } finally {
    await Deno.remove(typed);
  }
});

Deno.test("manifests: the check catches a typo and a wrong type", async () => {
  // The same two checks on a broken DaemonSet, so a check that passes everything fails here.
  const broken = join(REPO_ROOT, "tests", "csi", `_manifests_broken_${Deno.pid}.ts`);
  await Deno.writeTextFile(
    broken,
    `import type { IDaemonSet } from "kubernetes-models/apps/v1/DaemonSet";\n` +
      `export const d: IDaemonSet = { apiVersion: "apps/v1", kind: "DaemonSet", metadata: ` +
      `{ name: "x" }, spec: { selector: {}, template: { spec: { containers: [{ name: "c", ` +
      `volumeMounts: [{ name: "v", mountPath: "/v", mountPropogation: "Bidirectional" }] }] } } } };\n`,
  );
  try {
    const result = await run(Deno.execPath(), ["check", "--quiet", broken], {
      cwd: REPO_ROOT,
      check: false,
    });
    assert.notEqual(result.code, 0);
    assert.match(result.stderr, /mountPropogation/);
  } finally {
    await Deno.remove(broken);
  }
  const { DaemonSet } = await import("kubernetes-models/apps/v1/DaemonSet");
  assert.throws(
    () =>
      new DaemonSet({
        metadata: { name: "x" },
        spec: {
          selector: {},
          template: {
            spec: {
              containers: [{ name: "c", ports: [{ containerPort: "80" as unknown as number }] }],
            },
          },
        },
      }).validate(),
    /containerPort must be integer/,
  );
});

Deno.test("manifests: skyfs's own links hold", async () => {
  const manifests = (await loadManifests()).map((m) => m.doc);
  const byKind = (kind: string) => manifests.filter((d) => d.kind === kind);
  const one = (kind: string, name?: string) => {
    const found = byKind(kind).filter((d) => name === undefined || d.metadata.name === name);
    assert.equal(found.length, 1, `${kind} ${name ?? ""}: ${found.length} found`);
    return found[0];
  };
  for (
    const kind of [
      "Namespace",
      "CSIDriver",
      "StorageClass",
      "ClusterRole",
      "ClusterRoleBinding",
      "Role",
      "RoleBinding",
      "ServiceAccount",
      "ConfigMap",
      "Service",
      "StatefulSet",
      "DaemonSet",
      "Deployment",
    ]
  ) assert.ok(byKind(kind).length > 0, `no ${kind}`);

  assert.equal(one("CSIDriver").metadata.name, DRIVER_NAME);
  const storageClass = one("StorageClass");
  assert.equal(storageClass.provisioner, DRIVER_NAME);
  parseParameters(storageClass.parameters);
  assert.equal(storageClass.allowVolumeExpansion, true);

  // The skyfs.toml validates, and every skyfs container's flags are ones skyfs reads.
  const toml = await Deno.makeTempFile({ suffix: ".toml" });
  await Deno.writeTextFile(toml, one("ConfigMap", "skyfs-config").data["skyfs.toml"]);
  try {
    const all = await runSkyfs(["config", "--config", toml]);
    assert.equal(all.code, 0, all.stderr);
    let skyfsContainers = 0;
    for (const doc of manifests) {
      for (const container of podSpec(doc)?.containers ?? []) {
        if (!String(container.image).startsWith("skyfs:")) continue;
        skyfsContainers++;
        assert.deepEqual(container.command, ["skyfs"], container.name);
        const args = (container.args as string[]).map((arg) =>
          arg === "/etc/skyfs/skyfs.toml" ? toml : arg.replace(/\$\([A-Z_]+\)/g, "x1")
        );
        const command = args[0] === "meta" ? args.slice(0, 2) : args.slice(0, 1);
        const rest = args.slice(command.length);
        const result = await runSkyfs(["config", ...command, ...rest]);
        assert.equal(
          result.code,
          0,
          `${doc.kind} ${container.name}: ${args.join(" ")}\n${result.stderr}`,
        );
      }
    }
    assert.equal(skyfsContainers, 5);
  } finally {
    await Deno.remove(toml);
  }

  // Node: the driver, the registrar with the kubelet path of this driver, propagation, privilege.
  const node = podSpec(one("DaemonSet"))!;
  const container = (spec: Doc, name: string) => {
    const found = spec.containers.find((c: Doc) => c.name === name);
    assert.ok(found, `no container ${name}`);
    return found;
  };
  const csiNode = container(node, "csi");
  assert.deepEqual(csiNode.args.slice(0, 1), ["csi"]);
  assert.ok(csiNode.args.join(" ").includes("--mode node --endpoint unix:///csi/csi.sock"));
  assert.equal(csiNode.securityContext.privileged, true);
  const kubelet = csiNode.volumeMounts.find((m: Doc) => m.mountPath === "/var/lib/kubelet");
  assert.equal(kubelet?.mountPropagation, "Bidirectional");
  const registrar = container(node, "node-driver-registrar");
  assert.ok(
    registrar.args.includes(
      `--kubelet-registration-path=/var/lib/kubelet/plugins/${DRIVER_NAME}/csi.sock`,
    ),
  );
  const pluginDir = node.volumes.find((v: Doc) => v.name === "plugin-dir");
  assert.equal(pluginDir.hostPath.path, `/var/lib/kubelet/plugins/${DRIVER_NAME}`);
  assert.equal(container(node, "mount").securityContext.privileged, true);

  // Controller: provisioner and resizer beside `skyfs csi --mode controller` on one socket.
  const controller = podSpec(one("Deployment", "skyfs-csi-controller"))!;
  assert.ok(container(controller, "csi").args.join(" ").includes("--mode controller"));
  for (const sidecar of ["csi-provisioner", "csi-resizer"]) {
    assert.ok(container(controller, sidecar).args.includes("--csi-address=/csi/csi.sock"));
  }

  // Metadata replicas: the peers of skyfs.toml are the StatefulSet's pods under its Service.
  const meta = one("StatefulSet", "skyfs-meta");
  const service = one("Service", meta.spec.serviceName);
  assert.equal(service.spec.clusterIP, "None");
  const toml2 = one("ConfigMap", "skyfs-config").data["skyfs.toml"] as string;
  const peers = /peers = "([^"]+)"/.exec(toml2)![1].split(",");
  assert.equal(peers.length, meta.spec.replicas);
  peers.forEach((peer, index) => {
    const name = `${meta.metadata.name}-${index}`;
    assert.equal(
      peer,
      `${name}=${name}.${service.metadata.name}.${meta.metadata.namespace}.svc.cluster.local:7001`,
    );
  });

  // RBAC: bindings name roles and service accounts defined here; pods use defined accounts.
  const accounts = new Set(byKind("ServiceAccount").map((d) => d.metadata.name));
  for (const binding of [...byKind("ClusterRoleBinding"), ...byKind("RoleBinding")]) {
    one(binding.roleRef.kind, binding.roleRef.name);
    for (const subject of binding.subjects) assert.ok(accounts.has(subject.name), subject.name);
  }
  for (const doc of manifests) {
    const spec = podSpec(doc);
    if (spec === undefined || doc.kind === "Pod") continue;
    assert.ok(accounts.has(spec.serviceAccountName), `${doc.kind} ${doc.metadata.name}`);
    const volumes = new Set((spec.volumes ?? []).map((v: Doc) => v.name));
    for (const template of doc.spec.volumeClaimTemplates ?? []) volumes.add(template.metadata.name);
    for (const c of spec.containers) {
      for (const mount of c.volumeMounts ?? []) {
        assert.ok(volumes.has(mount.name), `${doc.metadata.name}/${c.name}: volume ${mount.name}`);
      }
    }
  }
});
