/**
 * Metadata storage: the MetaKV interface (etcd v3 semantics) and its backends. The embedded
 * backend keeps everything in one local SQLite file; `runMetaKVConformance` (conformance.ts) is
 * the shared test suite every backend must pass.
 * @module
 */

export * from "./kv.ts";
export { EMBEDDED_FORMAT, EmbeddedKV, type EmbeddedKVOptions, openEmbeddedKV } from "./embedded.ts";
