/**
 * skyfs configuration: one TOML file (`--config FILE`) for every command, SKYFS_* environment
 * variables and flags over it, every key validated with zod (keys.ts is the table of keys).
 * @module
 */
export { COMMANDS, envName, KEYS, keysOf, sections } from "./keys.ts";
export type { CommandName, KeyName, KeySpec } from "./keys.ts";
export { ConfigError, flagsOf, formatConfig, readConfigFile, resolveConfig } from "./load.ts";
export type { Config, ResolveOptions, Source } from "./load.ts";
