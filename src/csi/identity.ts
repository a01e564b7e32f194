/**
 * The CSI Identity service (spec.md "Identity Service RPC"): the plugin's name and version, its
 * capabilities, and Probe, ready only when what the mode needs answers: the node's skyfs mount
 * (node mode) and the volume API (controller mode).
 * @module
 */

import { type CsiContext, mountProblem, servesController, servesNode } from "./context.ts";
import { DRIVER_NAME } from "./rules.ts";
import type { Handlers } from "./server.ts";

export function identityHandlers(ctx: CsiContext): Handlers {
  return {
    GetPluginInfo: () => ({
      name: DRIVER_NAME,
      vendor_version: ctx.version,
      manifest: { mode: ctx.mode },
    }),
    GetPluginCapabilities: () => ({
      capabilities: [
        ...(servesController(ctx) ? [{ service: { type: "CONTROLLER_SERVICE" } }] : []),
        { service: { type: "VOLUME_ACCESSIBILITY_CONSTRAINTS" } },
        { volume_expansion: { type: "ONLINE" } },
      ],
    }),
    Probe: async () => {
      let ready = true;
      if (servesNode(ctx) && ctx.mountPoint !== undefined) {
        ready = (await mountProblem(ctx.mountPoint)) === undefined;
      }
      if (ready && servesController(ctx)) {
        ready = await ctx.api.capacity().then(() => true, () => false);
      }
      return { ready: { value: ready } };
    },
  };
}
