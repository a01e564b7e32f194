/**
 * RDMA probe: whether this machine has an RDMA device the peer transport could use. Only a
 * probe: with no device (as on every machine this project runs on) the cluster uses TCP, and no
 * RDMA data path ships until a machine can run it.
 * @module
 */

export interface RdmaProbe {
  available: boolean;
  reason: string;
}

export function probeRdma(): RdmaProbe {
  let devices: string[] = [];
  try {
    devices = [...Deno.readDirSync("/sys/class/infiniband")].map((e) => e.name);
  } catch {
    return { available: false, reason: "no device (/sys/class/infiniband absent); using TCP" };
  }
  if (devices.length === 0) {
    return { available: false, reason: "no device (/sys/class/infiniband empty); using TCP" };
  }
  // Devices exist, but this build has no verbs data path: say so instead of pretending.
  return {
    available: false,
    reason: `devices ${devices.join(", ")} found, but this build has no RDMA transport; using TCP`,
  };
}
