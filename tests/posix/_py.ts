/**
 * Runs a Python snippet (with tests/posix/_prelude.py's helpers) in a case directory and returns
 * the JSON value it passed to out(): the suites assert on that value in TypeScript.
 * @module
 */

import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { PYTHON } from "../_harness.ts";

const PRELUDE = Deno.readTextFileSync(join(dirname(fileURLToPath(import.meta.url)), "_prelude.py"));
const RESULT_MARK = "\n@@RESULT@@";

/** Removes the indentation common to every non-blank line, so snippets can sit indented in TS. */
export function dedent(code: string): string {
  const lines = code.replace(/^\n/, "").split("\n");
  const indents = lines.filter((l) => l.trim()).map((l) => l.match(/^ */)![0].length);
  const cut = Math.min(...indents);
  return lines.map((l) => l.slice(cut)).join("\n");
}

/** Runs `code` as root in `cwd`; throws with the traceback if Python fails or prints no result. */
// deno-lint-ignore no-explicit-any
export async function py(cwd: string, code: string): Promise<any> {
  const child = new Deno.Command(PYTHON, {
    args: ["-"],
    cwd,
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const writer = child.stdin.getWriter();
  await writer.write(new TextEncoder().encode(PRELUDE + "\n" + dedent(code)));
  await writer.close();
  const output = await child.output();
  const stdout = new TextDecoder().decode(output.stdout);
  const stderr = new TextDecoder().decode(output.stderr);
  const at = stdout.lastIndexOf(RESULT_MARK);
  if (output.code !== 0 || at < 0) {
    throw new Error(
      `python snippet in ${cwd} exited ${output.code} without a result:\n${stderr}\n${stdout}`,
    );
  }
  return JSON.parse(stdout.slice(at + RESULT_MARK.length).split("\n")[0]);
}
