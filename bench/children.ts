/**
 * Child processes of workloads in flight (fio, meta_worker, the io benchmark), so that an
 * interrupted run can stop them before it unmounts: a busy mount cannot be unmounted.
 * @module
 */

const running = new Set<Deno.ChildProcess>();

/** Spawns a command and tracks it until it exits. */
export function spawnTracked(command: string, options: Deno.CommandOptions): Deno.ChildProcess {
  const child = new Deno.Command(command, options).spawn();
  running.add(child);
  child.status.finally(() => running.delete(child));
  return child;
}

/**
 * Spawns a tracked child with piped output and waits for it, killing it with SIGKILL if it runs
 * longer than `timeoutMs`; `timedOut` says whether that happened.
 */
export async function outputWithin(
  command: string,
  options: Deno.CommandOptions & { timeoutMs: number },
): Promise<{ output: Deno.CommandOutput; timedOut: boolean }> {
  const { timeoutMs, ...commandOptions } = options;
  const child = spawnTracked(command, commandOptions);
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    try {
      child.kill("SIGKILL");
    } catch {
      // Already exited.
    }
  }, timeoutMs);
  try {
    return { output: await child.output(), timedOut };
  } finally {
    clearTimeout(timer);
  }
}

/** Kills every tracked child and waits for them to exit. */
export async function killAllTracked(): Promise<void> {
  const children = [...running];
  for (const child of children) {
    try {
      child.kill("SIGKILL");
    } catch {
      // Exited between the listing and the kill.
    }
  }
  await Promise.allSettled(children.map((child) => child.status));
}
