/** One CURP replica process for the WAN benchmark: `replica_main.ts '<ServeOptions JSON>'`. */

import { ReplicaServer, type ServeOptions } from "../../src/meta/curp/server.ts";
import { openIoEngine } from "../../src/io/mod.ts";

const options = JSON.parse(Deno.args[0]) as ServeOptions & {
  io?: "auto" | "io_uring" | "portable" | "io_uring-wait";
};
// As `skyfs meta serve` opens it (src/meta/curp/cli.ts): no spin.
const io = options.io === "io_uring-wait"
  ? await openIoEngine({
    engine: "io_uring",
    uring: { spinUs: 3000, maxSpinUs: 10000, pollUs: 0 },
    log: () => {},
  })
  : await openIoEngine({ engine: options.io ?? "auto", uring: { spinUs: 0 }, log: () => {} });
const server = await ReplicaServer.start({ ...options, io, log: () => {} });
await new Promise<void>((resolve) => Deno.addSignalListener("SIGTERM", resolve));
await server.close();
await io.shutdown();
Deno.exit(0);
