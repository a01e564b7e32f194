/**
 * Loads `csi.proto` (beside this file) into grpc-js service definitions, once. Field names stay as
 * the spec writes them (`volume_id`, `capacity_range`), int64 become numbers (exact to 2^53 bytes,
 * 8 PiB), enums their names, and a set oneof is named by a virtual field (`access_type: "mount"`).
 * @module
 */

import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { fileURLToPath } from "node:url";

export const CSI_PROTO_PATH: string = fileURLToPath(new URL("./csi.proto", import.meta.url));

/** How both the server and the tests' client decode messages. */
export const LOADER_OPTIONS: protoLoader.Options = {
  keepCase: true,
  longs: Number,
  enums: String,
  defaults: true,
  oneofs: true,
};

interface CsiPackage {
  Identity: grpc.ServiceClientConstructor;
  Controller: grpc.ServiceClientConstructor;
  Node: grpc.ServiceClientConstructor;
}

let loaded: CsiPackage | undefined;

/** The csi.v1 package: each service's constructor (a client) with its `.service` definition. */
export function csiPackage(): CsiPackage {
  if (loaded === undefined) {
    const definition = protoLoader.loadSync(CSI_PROTO_PATH, LOADER_OPTIONS);
    const root = grpc.loadPackageDefinition(definition) as unknown as {
      csi: { v1: CsiPackage };
    };
    loaded = root.csi.v1;
  }
  return loaded;
}
