/**
 * `skyfs csi`: a Container Storage Interface v1.9 driver that serves skyfs volumes to container
 * orchestrators (Kubernetes) over gRPC on a unix socket, through a skyfs mount's volume admin API
 * and its mount point. See README.md in this directory.
 * @module
 */

export { type CsiContext, type CsiMode } from "./context.ts";
export { type CsiServer, socketPathOf, startCsiServer } from "./server.ts";
export { csiPackage, LOADER_OPTIONS } from "./proto.ts";
export { DRIVER_NAME, ZONE_TOPOLOGY_KEY } from "./rules.ts";
export { type Volume, VolumeApi, VolumeApiError } from "./volume_api.ts";
export { CSI_USAGE, runCsi } from "./cli.ts";
