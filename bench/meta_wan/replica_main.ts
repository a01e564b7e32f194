/** One CURP replica process for the WAN benchmark: `replica_main.ts '<ServeOptions JSON>'`. */

import { ReplicaServer, type ServeOptions } from "../../src/meta/curp/server.ts";
import { openIoEngine } from "../../src/io/mod.ts";

const options = JSON.parse(Deno.args[0]) as ServeOptions;
const io = await openIoEngine({ log: () => {} });
const server = await ReplicaServer.start({ ...options, io, log: () => {} });
await new Promise<void>((resolve) => Deno.addSignalListener("SIGTERM", resolve));
await server.close();
await io.shutdown();
Deno.exit(0);
