/**
 * The "io" family: runs the I/O engine benchmark that bench/io/main.ts provides (issue 4) and
 * folds its figures into the run. The contract it must follow is written in bench/README.md.
 * @module
 */
import { fileURLToPath } from "node:url";
import type { Measurement, Mode } from "./model.ts";
import { outputWithin } from "./children.ts";

export const IO_ENTRY = fileURLToPath(new URL("./io/main.ts", import.meta.url));

export interface IoFamilyResult {
  baseline: string;
  measurements: Measurement[];
}

/** Checks the JSON that bench/io/main.ts wrote; throws naming the first bad field. */
export function validateIoJson(value: unknown): IoFamilyResult {
  if (typeof value !== "object" || value === null) throw new Error("top level is not an object");
  const { baseline, measurements } = value as { baseline?: unknown; measurements?: unknown };
  if (typeof baseline !== "string") throw new Error(`"baseline" is not a string`);
  if (!Array.isArray(measurements)) throw new Error(`"measurements" is not an array`);
  measurements.forEach((m, i) => {
    const where = `measurements[${i}]`;
    if (typeof m !== "object" || m === null) throw new Error(`${where} is not an object`);
    for (const key of ["family", "job", "target", "unit"]) {
      if (typeof (m as Record<string, unknown>)[key] !== "string") {
        throw new Error(`${where}.${key} is not a string`);
      }
    }
    const { value: v, higherIsBetter, family } = m as Measurement;
    if (v !== null && typeof v !== "number") throw new Error(`${where}.value is not a number`);
    if (typeof higherIsBetter !== "boolean") throw new Error(`${where}.higherIsBetter is missing`);
    if (!family.startsWith("io")) {
      throw new Error(`${where}.family "${family}" must start with "io"`);
    }
  });
  return { baseline, measurements: measurements as Measurement[] };
}

/** Runs the io benchmark in `dir`; throws with a one-line reason when it is missing or fails. */
export async function runIoFamily(
  dir: string,
  mode: Mode,
  options: { jsonPath: string; timeoutMs: number },
): Promise<IoFamilyResult> {
  try {
    await Deno.stat(IO_ENTRY);
  } catch {
    throw new Error("not available yet: bench/io/main.ts does not exist (issue 4)");
  }
  await Deno.mkdir(dir, { recursive: true });
  const args = ["run", "-A", IO_ENTRY, "--dir", dir, "--json", options.jsonPath];
  if (mode !== "full") args.push(`--${mode}`);
  const { output } = await outputWithin(Deno.execPath(), {
    args,
    stdin: "null",
    stdout: "inherit",
    stderr: "piped",
    timeoutMs: options.timeoutMs,
  });
  if (output.code !== 0) {
    const stderr = new TextDecoder().decode(output.stderr).trim().split("\n").pop() ?? "";
    throw new Error(`bench/io/main.ts exited with ${output.code}: ${stderr}`);
  }
  const text = await Deno.readTextFile(options.jsonPath);
  try {
    return validateIoJson(JSON.parse(text));
  } catch (error) {
    throw new Error(
      `bench/io/main.ts wrote invalid JSON to ${options.jsonPath}: ${
        error instanceof Error ? error.message : error
      }`,
    );
  }
}
