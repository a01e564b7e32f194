/** One CURP replica process for the WAN benchmark: `replica_main.ts '<ServeOptions JSON>'`. */

import { ReplicaServer, type ServeOptions } from "../../src/meta/curp/server.ts";

const options = JSON.parse(Deno.args[0]) as ServeOptions;
const server = ReplicaServer.start({ ...options, log: () => {} });
await new Promise<void>((resolve) => Deno.addSignalListener("SIGTERM", resolve));
server.close();
Deno.exit(0);
