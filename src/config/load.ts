/**
 * Resolve a command's configuration: flags, then SKYFS_* environment variables, then the TOML
 * file (--config FILE or SKYFS_CONFIG), then defaults; every value checked by its key's zod schema,
 * every failure one line naming the key, the value and what is allowed (ConfigError).
 * @module
 */

import { z } from "zod";
import { parse as parseToml, TomlError } from "smol-toml";
import { type CommandName, envName, type KeyName, KEYS, keysOf, type KeySpec } from "./keys.ts";

/** Bad configuration: printed as one line (`skyfs: ...`), exit status 1. */
export class ConfigError extends Error {
  override name = "ConfigError";
}

/** Where a value came from, as `skyfs config` prints it. */
export type Source =
  | { kind: "flag"; flag: string }
  | { kind: "env"; variable: string }
  | { kind: "file"; path: string }
  | { kind: "default" };

type ValueOf<K extends KeyName> = z.infer<(typeof KEYS)[K]["schema"]>;

/** A command's effective configuration. */
export interface Config {
  /** The file read, if any. */
  readonly file: string | undefined;
  /** The value of a key (undefined when nothing sets it and it has no default). */
  get<K extends KeyName>(key: K): ValueOf<K> | undefined;
  /** Where the key's value came from. */
  source(key: KeyName): Source;
}

export interface ResolveOptions {
  /** Flag values as parsed (flag name without dashes -> text), plus `config`. */
  flags?: Record<string, string | boolean | undefined>;
  /** The positional argument that sets a `positional` key (mount DIR). */
  positional?: string;
  /** Default Deno.env.toObject(). */
  env?: Record<string, string | undefined>;
}

/** The zod schema of a whole file: known sections and keys only, each key's own schema. */
function fileSchema(): z.ZodTypeAny {
  const bySection = new Map<string, Record<string, z.ZodTypeAny>>();
  for (const key of keysOf()) {
    const [section, name] = key.split(".");
    const shape = bySection.get(section) ?? {};
    shape[name] = (KEYS[key] as KeySpec).schema.optional();
    bySection.set(section, shape);
  }
  const shape: Record<string, z.ZodTypeAny> = {};
  for (const [section, keys] of bySection) shape[section] = z.object(keys).strict().optional();
  return z.object(shape).strict();
}

function show(value: unknown): string {
  if (typeof value === "string") return JSON.stringify(value);
  if (typeof value === "bigint") return String(value);
  if (typeof value === "object" && value !== null && !Array.isArray(value)) return "a table";
  return JSON.stringify(value) ?? String(value);
}

/** One line for the first problem zod found in a file. */
function describeIssue(path: string, issue: z.ZodIssue, raw: Record<string, unknown>): string {
  const where = issue.path.map(String);
  if (issue.code === "unrecognized_keys") {
    if (where.length === 0) {
      const known = [...new Set(keysOf().map((k) => k.split(".")[0]))].join(", ");
      const name = issue.keys[0];
      return `${path}: unknown section [${name}]` +
        (typeof raw[name] === "object" ? "" : ` (or key ${name} outside a section)`) +
        `; sections: ${known}`;
    }
    const section = where[0];
    const known = keysOf().filter((k) => k.startsWith(`${section}.`)).map((k) => k.split(".")[1]);
    return `${path}: unknown key ${section}.${issue.keys[0]}; keys of [${section}]: ${
      known.join(", ")
    }`;
  }
  if (where.length === 1) {
    return `${path}: ${where[0]} = ${show(raw[where[0]])} must be a table ([${where[0]}])`;
  }
  const key = `${where[0]}.${where[1]}` as KeyName;
  const value = (raw[where[0]] as Record<string, unknown>)[where[1]];
  const spec = KEYS[key] as KeySpec;
  const what = issue.code === "too_small" || issue.code === "too_big"
    ? "is out of range"
    : issue.code === "invalid_type"
    ? `has the wrong type (${typeof value === "bigint" ? "number" : typeof value})`
    : "is not allowed";
  const shown = spec.secret ? "<hidden>" : show(value);
  return `${path}: ${key} = ${shown} ${what}; allowed: ${spec.allowed}`;
}

/** Read and validate a TOML file: known sections and keys, each value its key's type and range. */
export function readConfigFile(path: string): Record<string, Record<string, unknown>> {
  let text: string;
  try {
    text = Deno.readTextFileSync(path);
  } catch (error) {
    throw new ConfigError(`Cannot read config file "${path}": ${(error as Error).message}`);
  }
  let raw: Record<string, unknown>;
  try {
    raw = parseToml(text) as Record<string, unknown>;
  } catch (error) {
    if (error instanceof TomlError) {
      const first = error.message.split("\n")[0].replace(/^Invalid TOML document: /, "");
      throw new ConfigError(
        `${path}:${error.line}:${error.column}: not valid TOML: ${first}`,
      );
    }
    throw error;
  }
  const result = fileSchema().safeParse(raw);
  if (!result.success) throw new ConfigError(describeIssue(path, result.error.issues[0], raw));
  return raw as Record<string, Record<string, unknown>>;
}

/** Text from a flag or the environment -> the key's type (the schema then checks the range). */
function fromText(spec: KeySpec, text: string): unknown {
  if (spec.kind === "string") return text;
  if (spec.kind === "number") return text.trim() === "" ? Number.NaN : Number(text);
  const lower = text.trim().toLowerCase();
  if (["1", "true", "on", "yes"].includes(lower)) return true;
  if (["0", "false", "off", "no"].includes(lower)) return false;
  return text;
}

function checked(key: KeyName, value: unknown, whereText: string): unknown {
  const where = (KEYS[key] as KeySpec).secret ? whereText.replace(/=.*|".*"/, "") : whereText;
  const spec = KEYS[key] as KeySpec;
  const result = spec.schema.safeParse(value);
  if (!result.success) {
    throw new ConfigError(`${where}: ${key} must be ${spec.allowed}`);
  }
  return result.data;
}

/**
 * The effective configuration of `command` (every key when undefined): each key from its flag,
 * else its environment variable (empty = unset), else the file, else its default.
 */
export function resolveConfig(command: CommandName | undefined, options: ResolveOptions = {}) {
  const flags = options.flags ?? {};
  const env = options.env ?? Deno.env.toObject();
  const fileFlag = flags.config;
  const path = typeof fileFlag === "string" ? fileFlag : env.SKYFS_CONFIG || undefined;
  const file = path === undefined ? {} : readConfigFile(path);
  const values = new Map<KeyName, unknown>();
  const sources = new Map<KeyName, Source>();
  for (const key of keysOf(command)) {
    const spec = KEYS[key] as KeySpec;
    const [section, name] = key.split(".");
    const flagValue = spec.positional
      ? options.positional
      : spec.flag === undefined
      ? undefined
      : flags[spec.flag];
    // A boolean flag (--etcd) arrives as true; a value flag as its text.
    const flagText = typeof flagValue === "boolean" ? String(flagValue) : flagValue;
    const variable = envName(key);
    const envText = env[variable];
    const fromFile = file[section]?.[name];
    if (flagText !== undefined) {
      const flag = spec.positional ? "argument" : `--${spec.flag}`;
      values.set(key, checked(key, fromText(spec, flagText), `${flag} ${show(flagText)}`));
      sources.set(key, { kind: "flag", flag });
    } else if (envText !== undefined && envText !== "") {
      values.set(key, checked(key, fromText(spec, envText), `${variable}=${show(envText)}`));
      sources.set(key, { kind: "env", variable });
    } else if (fromFile !== undefined) {
      values.set(key, fromFile);
      sources.set(key, { kind: "file", path: path! });
    } else {
      const fallback = typeof spec.default === "function" ? spec.default() : spec.default;
      values.set(key, fallback);
      sources.set(key, { kind: "default" });
    }
  }
  const config: Config = {
    file: path,
    get: <K extends KeyName>(key: K) => values.get(key) as ValueOf<K> | undefined,
    source: (key) => sources.get(key) ?? { kind: "default" },
  };
  return config;
}

/** node:util parseArgs options for a command's flags: one per key with a flag. */
export function flagsOf(
  command: CommandName,
): Record<string, { type: "string" | "boolean" }> {
  const flags: Record<string, { type: "string" | "boolean" }> = {};
  for (const key of keysOf(command)) {
    const spec = KEYS[key] as KeySpec;
    if (spec.flag !== undefined) {
      flags[spec.flag] = { type: spec.kind === "boolean" ? "boolean" : "string" };
    }
  }
  return flags;
}

function describeSource(source: Source): string {
  switch (source.kind) {
    case "flag":
      return source.flag === "argument" ? "flag (argument)" : `flag ${source.flag}`;
    case "env":
      return `env ${source.variable}`;
    case "file":
      return `file ${source.path}`;
    case "default":
      return "default";
  }
}

function tomlValue(value: unknown): string {
  return typeof value === "string" ? JSON.stringify(value) : String(value);
}

/** `skyfs config`: the effective configuration as TOML, each line with its source. */
export function formatConfig(config: Config, command: CommandName | undefined): string {
  const lines = [
    `# skyfs ${command ?? "(every command)"}: effective configuration; ` +
    `precedence: flag > env > file > default`,
    `# file: ${config.file ?? "none (--config FILE or SKYFS_CONFIG)"}`,
  ];
  let section = "";
  for (const key of keysOf(command)) {
    const [keySection, name] = key.split(".");
    if (keySection !== section) {
      section = keySection;
      lines.push("", `[${section}]`);
    }
    const spec = KEYS[key] as KeySpec;
    const value = config.get(key);
    const from = config.source(key);
    const source = from.kind === "env"
      ? describeSource(from)
      : `${describeSource(from)} (env ${envName(key)})`;
    const left = value === undefined
      ? `# ${name} (unset${spec.unsetMeans ? `: ${spec.unsetMeans}` : ""})`
      : `${name} = ${spec.secret ? '"<hidden>"' : tomlValue(value)}`;
    lines.push(`${left.padEnd(44)} # ${source}`);
  }
  return lines.join("\n");
}
