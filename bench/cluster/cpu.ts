/**
 * CPU time a process has used, summed over its threads (its io-wq workers included), for the
 * cluster benchmarks' CPU-per-GiB columns.
 * @module
 */

/** CPU time of all threads of process `pid`, in ns (from /proc/PID/task/TID/schedstat). */
export function cpuNs(pid: number | "self"): number {
  let total = 0;
  for (const task of Deno.readDirSync(`/proc/${pid}/task`)) {
    try {
      total += Number(
        Deno.readTextFileSync(`/proc/${pid}/task/${task.name}/schedstat`).split(" ")[0],
      );
    } catch { /* the thread exited */ }
  }
  return total;
}
