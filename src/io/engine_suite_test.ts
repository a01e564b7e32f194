/** Runs the shared IoEngine suite against both engines: io_uring and portable. */

import { defineEngineSuite } from "./engine_suite.ts";
import { createPortableEngine } from "./portable.ts";
import { openUringEngine } from "./uring.ts";
import { ensureUringBuilt } from "./uring_test_util.ts";

await ensureUringBuilt();

defineEngineSuite("io_uring", () => Promise.resolve(openUringEngine({ queueDepth: 16 })));
defineEngineSuite("portable", () => Promise.resolve(createPortableEngine()));
